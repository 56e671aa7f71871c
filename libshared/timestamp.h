/* timestamp.h - wall-clock time for records and messages: Unix milliseconds, and
 * google.protobuf.Timestamp values allocated in an arena; and the monotonic clock for
 * intervals, deadlines and pauses, which never jumps with the wall clock. */
#ifndef LIBSHARED_TIMESTAMP_H
#define LIBSHARED_TIMESTAMP_H

#include <stdint.h>
#include <time.h>

#include "arena.h"
#include "google/protobuf/timestamp.pb-c.h"

int64_t timestamp_now_ms(void);
/* NULL when out of memory. */
Google__Protobuf__Timestamp *timestamp_from_ms(arena *a, int64_t ms);
Google__Protobuf__Timestamp *timestamp_now(arena *a);
/* t in Unix milliseconds, or `otherwise` when t is NULL or its seconds lie outside
 * google.protobuf.Timestamp's range (0001-01-01 to 9999-12-31): a timestamp read off the wire
 * can hold any int64, and seconds * 1000 would overflow (found by tests/fuzz/fuzz_event). */
int64_t timestamp_to_ms(const Google__Protobuf__Timestamp *t, int64_t otherwise);

/* CLOCK_MONOTONIC in milliseconds and nanoseconds: only differences mean anything. */
int64_t timestamp_monotonic_ms(void);
int64_t timestamp_monotonic_ns(void);
/* The CLOCK_REALTIME time ms milliseconds from now, as pthread_cond_timedwait wants it. */
struct timespec timestamp_deadline(int64_t ms);
/* Sleeps ms milliseconds (a signal may end it early). */
void timestamp_sleep_ms(int64_t ms);

#endif
