/* timestamp.h - wall-clock time for records and messages: Unix milliseconds, and
 * google.protobuf.Timestamp values allocated in an arena. */
#ifndef LIBSHARED_TIMESTAMP_H
#define LIBSHARED_TIMESTAMP_H

#include <stdint.h>

#include "arena.h"
#include "google/protobuf/timestamp.pb-c.h"

int64_t timestamp_now_ms(void);
/* NULL when out of memory. */
Google__Protobuf__Timestamp *timestamp_from_ms(arena *a, int64_t ms);
Google__Protobuf__Timestamp *timestamp_now(arena *a);

#endif
