/* report.h - the table on stdout and results.json: every measurement, the ratios against
 * the targets of issue 8, and the services' resident memory. */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "result.h"

typedef struct ratio {
    char what[96];     /* "framework no-op / R1" */
    char shape[16];    /* "16x16" */
    double measured;   /* a fraction (0.93) or milliseconds, see unit */
    double target;
    bool at_most;      /* the target is a ceiling (latency, memory growth) */
    const char *unit;  /* "%" for fractions, "ms", "MB" */
    bool available;    /* false: a side of it was not measured (reason in note) */
    char note[96];
} ratio;

typedef struct rss_sample {
    const char *service;
    long idle_kb;       /* after start, before any load */
    long small_kb;      /* after small_calls calls of the soak */
    long large_kb;      /* after large_calls */
    uint64_t small_calls;
    uint64_t large_calls;
    double large_seconds;
    const char *workload;
    bool measured;
} rss_sample;

void report_table(FILE *out, const bench_result *results, int count);
void report_ratios(FILE *out, const ratio *ratios, int count);
void report_rss(FILE *out, const rss_sample *samples, int count);
bool report_json(const char *path, const char *machine, bool smoke, const bench_result *results,
                 int result_count, const ratio *ratios, int ratio_count, const rss_sample *samples,
                 int sample_count);

#endif
