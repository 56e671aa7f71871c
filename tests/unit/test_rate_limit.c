/* test_rate_limit.c - the per-user token buckets: the burst, the refill, users apart, and a
 * table that stays bounded however many users come by. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "rate_limit.h"

Test(rate_limit, a_burst_passes_and_the_next_call_waits_for_a_token) {
    rate_limiter *limiter = rate_limiter_create(10, 5); /* a token every 100 ms */
    int64_t retry = -1;
    for (int i = 0; i < 5; i++)
        cr_assert(rate_limiter_take(limiter, "ann", 1000, &retry), "call %d of the burst of 5", i + 1);
    cr_assert_not(rate_limiter_take(limiter, "ann", 1000, &retry), "the sixth call at once is limited");
    cr_assert(retry > 0 && retry <= 101, "the next token comes in 100 ms, not %lld", (long long)retry);
    cr_assert_not(rate_limiter_take(limiter, "ann", 1050, &retry));
    cr_assert(retry > 0 && retry <= 51, "half way there: %lld", (long long)retry);
    cr_assert(rate_limiter_take(limiter, "ann", 1100, &retry), "a token is back after 100 ms");
    cr_assert_not(rate_limiter_take(limiter, "ann", 1100, &retry), "and only one");
    rate_limiter_destroy(limiter);
}

Test(rate_limit, one_user_limited_leaves_the_others_alone) {
    rate_limiter *limiter = rate_limiter_create(1, 2);
    int64_t retry;
    for (int i = 0; i < 10; i++)
        rate_limiter_take(limiter, "mallory", 0, &retry);
    cr_assert_not(rate_limiter_take(limiter, "mallory", 0, &retry));
    cr_assert(rate_limiter_take(limiter, "bob", 0, &retry), "another user has a bucket of its own");
    cr_assert(rate_limiter_take(limiter, "bob", 0, &retry));
    rate_limiter_destroy(limiter);
}

Test(rate_limit, the_refill_never_exceeds_the_burst) {
    rate_limiter *limiter = rate_limiter_create(100, 3);
    int64_t retry;
    rate_limiter_take(limiter, "idle", 0, &retry);
    int allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += rate_limiter_take(limiter, "idle", 3600 * 1000, &retry);
    cr_assert_eq(allowed, 3, "an hour idle gives back the burst (3), not 360,000 tokens");
    rate_limiter_destroy(limiter);
}

Test(rate_limit, no_limit_allows_everything) {
    cr_assert_null(rate_limiter_create(0, 10));
    int64_t retry;
    cr_assert(rate_limiter_take(NULL, "anyone", 0, &retry));
}

Test(rate_limit, a_crowd_of_users_stays_in_a_bounded_table) {
    rate_limiter *limiter = rate_limiter_create(1, 2);
    char user[32];
    int64_t retry;
    /* 200,000 users, each taking one token, a second apart in groups: all are allowed (each
     * is in its burst), and the table makes room by dropping buckets that filled up again. */
    for (int i = 0; i < 200000; i++) {
        snprintf(user, sizeof user, "user-%d", i);
        cr_assert(rate_limiter_take(limiter, user, (int64_t)(i / 1000) * 5000, &retry), "user %d", i);
    }
    cr_assert_eq(rate_limiter_overflows(limiter), 0, "buckets that filled up again made room");
    /* one user still limited within a crowd */
    for (int i = 0; i < 3; i++)
        rate_limiter_take(limiter, "mallory", 10000000, &retry);
    cr_assert_not(rate_limiter_take(limiter, "mallory", 10000000, &retry));
    rate_limiter_destroy(limiter);
}

Test(rate_limit, a_table_full_of_busy_buckets_allows_rather_than_locks_out) {
    rate_limiter *limiter = rate_limiter_create(0.001, 1); /* nothing refills within the test */
    char user[32];
    int64_t retry;
    int allowed = 0;
    for (int i = 0; i < 70000; i++) {
        snprintf(user, sizeof user, "crowd-%d", i);
        allowed += rate_limiter_take(limiter, user, 0, &retry);
    }
    cr_assert_eq(allowed, 70000, "every newcomer gets its first call");
    cr_assert_gt(rate_limiter_overflows(limiter), 0, "more users than buckets are counted");
    rate_limiter_destroy(limiter);
}
