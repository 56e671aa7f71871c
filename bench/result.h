/* result.h - what one measurement yields, whatever was measured: a gRPC workload, or a
 * reference (JetStream publish, Redis GET). One "operation" is what a workload counts: a
 * call, or a borrow+return cycle of two calls. */
#ifndef BENCH_RESULT_H
#define BENCH_RESULT_H

#include <stdint.h>

#include "histogram.h"

enum { RESULT_CODES = 17 }; /* gRPC status codes 0..16 */

typedef struct bench_result {
    char name[48];
    int connections;
    int streams;
    double target_rate;       /* operations per second asked for; 0: as fast as it goes */
    double seconds;           /* length of the measured window */
    uint64_t operations;      /* completed in the window */
    uint64_t calls;           /* RPCs (or publishes, GETs) completed in the window */
    uint64_t errors;          /* failed operations over the whole run, warm-up included */
    uint64_t errors_by_code[RESULT_CODES]; /* of failed calls, by grpc-status */
    uint64_t bad_replies;     /* OK, but not what the workload expected (e.g. a canceled loan) */
    char first_error[200];    /* the first failure, for the log */
    histogram latency;        /* of operations in the window, microseconds */
    int skipped;              /* not run; first_error says why */
} bench_result;

static inline double result_rate(const bench_result *r) {
    return r->seconds > 0 ? (double)r->operations / r->seconds : 0.0;
}

#endif
