/* timestamp.c - CLOCK_REALTIME in the two shapes the services store, and CLOCK_MONOTONIC. */
#include "timestamp.h"

#include <time.h>

int64_t timestamp_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

Google__Protobuf__Timestamp *timestamp_from_ms(arena *a, int64_t ms) {
    Google__Protobuf__Timestamp *t = (void *)arena_new_message(a, &google__protobuf__timestamp__descriptor);
    if (t) {
        t->seconds = ms / 1000;
        t->nanos = (int32_t)(ms % 1000) * 1000000;
    }
    return t;
}

Google__Protobuf__Timestamp *timestamp_now(arena *a) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    Google__Protobuf__Timestamp *t = (void *)arena_new_message(a, &google__protobuf__timestamp__descriptor);
    if (t) {
        t->seconds = now.tv_sec;
        t->nanos = (int32_t)now.tv_nsec;
    }
    return t;
}

int64_t timestamp_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

int64_t timestamp_monotonic_ms(void) {
    return timestamp_monotonic_ns() / 1000000;
}

void timestamp_sleep_ms(int64_t ms) {
    struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&pause, NULL);
}

/* google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31. */
static const int64_t TIMESTAMP_SECONDS_MIN = -62135596800LL, TIMESTAMP_SECONDS_MAX = 253402300799LL;

int64_t timestamp_to_ms(const Google__Protobuf__Timestamp *t, int64_t otherwise) {
    if (t == NULL || t->seconds < TIMESTAMP_SECONDS_MIN || t->seconds > TIMESTAMP_SECONDS_MAX)
        return otherwise;
    return t->seconds * 1000 + t->nanos / 1000000;
}

struct timespec timestamp_deadline(int64_t ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    return until;
}
