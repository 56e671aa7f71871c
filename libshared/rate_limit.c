/* rate_limit.c - token buckets in sharded open-addressing tables keyed by a 64-bit hash of
 * the key (two keys sharing a hash share a bucket: with 64 bits, not in practice). */
#include "rate_limit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

enum {
    SHARDS = 16,              /* one lock each: calls of different users rarely wait */
    SHARD_SLOTS = 4096,       /* a power of two; 65,536 buckets in all */
    SHARD_MAX_USED = SHARD_SLOTS * 3 / 4,
};

typedef struct bucket {
    uint64_t key; /* 0: a free slot (a key hashing to 0 is stored as 1) */
    double tokens;
    int64_t refilled_ms;
} bucket;

typedef struct shard {
    pthread_mutex_t lock;
    size_t used;
    bucket slots[SHARD_SLOTS];
} shard;

struct rate_limiter {
    double per_ms;
    double burst;
    atomic_uint_fast64_t overflows;
    shard shards[SHARDS];
};

static uint64_t key_hash(const char *key) {
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h ? h : 1;
}

rate_limiter *rate_limiter_create(double per_second, int burst) {
    if (!(per_second > 0))
        return NULL;
    rate_limiter *limiter = calloc(1, sizeof *limiter);
    if (limiter == NULL)
        return NULL;
    limiter->per_ms = per_second / 1000.0;
    limiter->burst = burst < 1 ? 1 : burst;
    for (int i = 0; i < SHARDS; i++)
        pthread_mutex_init(&limiter->shards[i].lock, NULL);
    return limiter;
}

void rate_limiter_destroy(rate_limiter *limiter) {
    if (limiter == NULL)
        return;
    for (int i = 0; i < SHARDS; i++)
        pthread_mutex_destroy(&limiter->shards[i].lock);
    free(limiter);
}

static void refill(const rate_limiter *limiter, bucket *b, int64_t now_ms) {
    if (now_ms > b->refilled_ms) {
        b->tokens += (double)(now_ms - b->refilled_ms) * limiter->per_ms;
        if (b->tokens > limiter->burst)
            b->tokens = limiter->burst;
        b->refilled_ms = now_ms;
    }
}

static bucket *slot_of(shard *s, uint64_t key) {
    size_t i = (size_t)(key >> 4) & (SHARD_SLOTS - 1);
    while (s->slots[i].key != 0 && s->slots[i].key != key)
        i = (i + 1) & (SHARD_SLOTS - 1);
    return &s->slots[i];
}

/* Drops the buckets that have filled up again and puts the others back in their places
 * (rare: only when a shard is three quarters full). Without memory for that it drops nothing. */
static void sweep(const rate_limiter *limiter, shard *s, int64_t now_ms) {
    bucket *kept = malloc(s->used * sizeof *kept);
    if (kept == NULL)
        return;
    size_t count = 0;
    for (size_t i = 0; i < SHARD_SLOTS; i++) {
        bucket *b = &s->slots[i];
        if (b->key == 0)
            continue;
        refill(limiter, b, now_ms);
        if (b->tokens < limiter->burst)
            kept[count++] = *b;
        b->key = 0;
    }
    for (size_t i = 0; i < count; i++)
        *slot_of(s, kept[i].key) = kept[i];
    s->used = count;
    free(kept);
}

bool rate_limiter_take(rate_limiter *limiter, const char *key, int64_t now_ms, int64_t *retry_after_ms) {
    if (limiter == NULL)
        return true;
    uint64_t hash = key_hash(key);
    shard *s = &limiter->shards[hash & (SHARDS - 1)];
    pthread_mutex_lock(&s->lock);
    bucket *b = slot_of(s, hash);
    if (b->key == 0) {
        if (s->used >= SHARD_MAX_USED) {
            sweep(limiter, s, now_ms);
            b = slot_of(s, hash);
        }
        if (s->used >= SHARD_MAX_USED) {
            pthread_mutex_unlock(&s->lock);
            atomic_fetch_add_explicit(&limiter->overflows, 1, memory_order_relaxed);
            return true;
        }
        *b = (bucket){.key = hash, .tokens = limiter->burst, .refilled_ms = now_ms};
        s->used++;
    }
    refill(limiter, b, now_ms);
    bool allowed = b->tokens >= 1.0;
    if (allowed)
        b->tokens -= 1.0;
    else if (retry_after_ms != NULL)
        *retry_after_ms = (int64_t)((1.0 - b->tokens) / limiter->per_ms) + 1;
    pthread_mutex_unlock(&s->lock);
    return allowed;
}

uint64_t rate_limiter_overflows(const rate_limiter *limiter) {
    return limiter ? atomic_load_explicit(&limiter->overflows, memory_order_relaxed) : 0;
}
