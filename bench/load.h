/* load.h - the load client: C connections x M concurrent calls each on the gRPC C core's
 * async API (one completion queue per client thread), closed loop or paced to a rate, for
 * a fixed time or operation count. Every call's grpc-status is checked and counted.
 *
 * A workload is a plan: `begin` gives a slot's next request; `reply` reads an OK answer and
 * either ends the operation or gives the next call of the same operation (a borrow then its
 * return). Both run on client threads: a slot is only ever used by one thread at a time,
 * anything shared between slots must be thread-safe. */
#ifndef BENCH_LOAD_H
#define BENCH_LOAD_H

#include <grpc/slice.h>
#include <stddef.h>
#include <stdint.h>

#include "result.h"

typedef struct load_request {
    int method;                      /* index into load_plan.methods */
    grpc_slice message;              /* the serialized request; the load takes this reference */
    const grpc_slice *authorization; /* "Bearer ..." for the call, or NULL; must outlive the run */
} load_request;

typedef enum load_step {
    LOAD_DONE,     /* the operation succeeded */
    LOAD_CONTINUE, /* send *next as part of the same operation */
    LOAD_FAILED,   /* an OK reply the workload did not expect (counted as a bad reply) */
} load_step;

typedef struct load_plan {
    const char *const *methods; /* "/pkg.Service/Method" */
    const int *method_targets;  /* index into load_options.targets per method; NULL: all 0 */
    size_t method_count;
    void *state;
    void (*begin)(void *state, int slot, load_request *request);
    load_step (*reply)(void *state, int slot, int method, const uint8_t *bytes, size_t size,
                       load_request *next);
} load_plan;

typedef struct load_options {
    const char *const *targets; /* "127.0.0.1:port", one per service the plan calls */
    size_t target_count;
    int connections;         /* separate HTTP/2 connections (to each target) */
    int streams;             /* concurrent calls per connection */
    int threads;             /* client threads (completion queues); 0: min(connections, 2) */
    double warmup_seconds;   /* run but not measured */
    double seconds;          /* measured window; 0: until max_operations */
    uint64_t max_operations; /* stop starting operations after this many (0: no limit) */
    double rate;             /* operations per second over all slots; 0: closed loop */
    int64_t timeout_ms;      /* deadline of each call; 0: 10 s */
} load_options;

/* Runs the plan and fills *result (name and shape included). Returns 0, or -1 when the
 * client could not be set up (result->first_error says why). */
int load_run(const char *name, const load_options *options, const load_plan *plan,
             bench_result *result);

/* Monotonic clock in nanoseconds (the one the load uses). */
int64_t load_now_ns(void);

#endif
