/* histogram.c - log-linear buckets: exact below 128 us, then 64 buckets per power of two. */
#include "histogram.h"

#include <string.h>

static unsigned bucket_of(uint64_t v) {
    if (v < 128)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 6u;
    unsigned index = 128u + (shift - 1u) * 64u + (unsigned)((v >> shift) - 64u);
    return index < HISTOGRAM_BUCKETS ? index : HISTOGRAM_BUCKETS - 1;
}

/* The middle of a bucket's range. */
static uint64_t bucket_value(unsigned index) {
    if (index < 128)
        return index;
    unsigned shift = (index - 128u) / 64u + 1u;
    uint64_t low = ((uint64_t)((index - 128u) % 64u) + 64u) << shift;
    return low + ((1ull << shift) >> 1);
}

void histogram_clear(histogram *h) {
    memset(h, 0, sizeof *h);
}

void histogram_record(histogram *h, uint64_t microseconds) {
    h->counts[bucket_of(microseconds)]++;
    h->total++;
    if (microseconds > h->max_us)
        h->max_us = microseconds;
}

void histogram_merge(histogram *into, const histogram *from) {
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    if (from->max_us > into->max_us)
        into->max_us = from->max_us;
}

uint64_t histogram_quantile(const histogram *h, double quantile) {
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(quantile * (double)h->total);
    if (rank >= h->total)
        rank = h->total - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen > rank) {
            uint64_t v = bucket_value(i);
            return v > h->max_us ? h->max_us : v;
        }
    }
    return h->max_us;
}
