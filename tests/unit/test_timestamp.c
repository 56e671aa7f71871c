/* test_timestamp.c - libshared's clocks: deadlines for condition waits, and Timestamps read off
 * the wire. */
#include <criterion/criterion.h>
#include <time.h>

#include "timestamp.h"

static int64_t realtime_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static int64_t ns_of(struct timespec t) {
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

Test(timestamp, a_deadline_lies_the_milliseconds_ahead_with_the_nanoseconds_in_range) {
    int64_t cases[] = {0, 1, 999, 1000, 1001, 2500, 60000};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t before = realtime_ns();
        struct timespec until = timestamp_deadline(cases[i]);
        int64_t after = realtime_ns();
        cr_assert(until.tv_nsec >= 0 && until.tv_nsec < 1000000000, "%lld ms: tv_nsec %ld", (long long)cases[i],
                  until.tv_nsec);
        cr_assert_geq(ns_of(until), before + cases[i] * 1000000, "%lld ms: too soon", (long long)cases[i]);
        cr_assert_leq(ns_of(until), after + cases[i] * 1000000, "%lld ms: too late", (long long)cases[i]);
    }
}

Test(timestamp, a_timestamp_outside_the_protobuf_range_is_the_fallback) {
    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    t.seconds = 1796289647;
    t.nanos = 317000000;
    cr_assert_eq(timestamp_to_ms(&t, -1), 1796289647317LL);
    t.seconds = 253402300800LL; /* 10000-01-01 */
    cr_assert_eq(timestamp_to_ms(&t, -1), -1);
    t.seconds = INT64_MIN;
    cr_assert_eq(timestamp_to_ms(&t, -1), -1);
    cr_assert_eq(timestamp_to_ms(NULL, 7), 7);
}
