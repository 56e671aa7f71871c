/* histogram.h - latencies in microseconds, log-linear buckets (under 1% error), so a
 * million calls cost a fixed 22 KiB and per-thread histograms merge by adding. */
#ifndef BENCH_HISTOGRAM_H
#define BENCH_HISTOGRAM_H

#include <stdint.h>

enum { HISTOGRAM_BUCKETS = 128 + 40 * 64 };

typedef struct histogram {
    uint64_t counts[HISTOGRAM_BUCKETS];
    uint64_t total;
    uint64_t max_us;
} histogram;

void histogram_clear(histogram *h);
void histogram_record(histogram *h, uint64_t microseconds);
void histogram_merge(histogram *into, const histogram *from);
/* The value below which `quantile` (0..1) of the samples lie; 0 when empty. */
uint64_t histogram_quantile(const histogram *h, double quantile);

#endif
