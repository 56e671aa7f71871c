/* rate_limit.h - a token bucket per key (a user id): `per_second` tokens come back each
 * second up to `burst`, and each call takes one. Buckets live in a fixed table: a bucket that
 * has filled up again is the same as none and is dropped to make room, so memory follows the
 * keys active in the last burst / per_second seconds, never every key ever seen. */
#ifndef LIBSHARED_RATE_LIMIT_H
#define LIBSHARED_RATE_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct rate_limiter rate_limiter;

/* NULL when per_second <= 0 (no limit) or out of memory; burst < 1 counts as 1. */
rate_limiter *rate_limiter_create(double per_second, int burst);
void rate_limiter_destroy(rate_limiter *limiter); /* NULL is a no-op */

/* Takes a token from key's bucket at now_ms. False when the bucket is empty: then
 * *retry_after_ms says when the next token comes. A NULL limiter always allows. When the
 * table is full of buckets still in use it allows too (and counts it in
 * rate_limiter_overflows): a limiter that refused strangers for want of room would let one
 * crowd lock everyone out. */
bool rate_limiter_take(rate_limiter *limiter, const char *key, int64_t now_ms, int64_t *retry_after_ms);

/* Calls allowed only because the table had no room. */
uint64_t rate_limiter_overflows(const rate_limiter *limiter);

#endif
