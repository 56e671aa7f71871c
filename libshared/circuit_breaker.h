/* circuit_breaker.h - stops calling a dependency that keeps failing, so callers get a fast
 * UNAVAILABLE instead of piling up behind timeouts. Closed: calls go through; after
 * `failure_threshold` failures in a row it opens for `open_ms`; then one probe call is let
 * through (half-open): success closes it, failure opens it again. Thread-safe.
 * Metrics: library_circuit_breaker_state{breaker} (0 closed, 1 open, 2 half-open) and
 * library_circuit_breaker_rejected_total{breaker}. */
#ifndef LIBSHARED_CIRCUIT_BREAKER_H
#define LIBSHARED_CIRCUIT_BREAKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "metrics.h"
#include "status.h"

typedef enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN } breaker_state;

typedef struct circuit_breaker {
    pthread_mutex_t lock;
    breaker_state state;
    int consecutive_failures;
    int failure_threshold;
    int64_t open_ms;
    int64_t opened_at_ms;
    bool probe_in_flight;
    metric_series *state_gauge, *rejected;
} circuit_breaker;

/* name labels the breaker's metrics ("catalog"). */
void circuit_breaker_init(circuit_breaker *breaker, const char *name, int failure_threshold,
                          int64_t open_ms);
void circuit_breaker_destroy(circuit_breaker *breaker);
/* May a call go out now? false: answer UNAVAILABLE without calling. */
bool circuit_breaker_allow(circuit_breaker *breaker, int64_t now_ms);
/* Reports a call's outcome; only UNAVAILABLE and DEADLINE_EXCEEDED count as failures (a
 * NOT_FOUND is a healthy answer). */
void circuit_breaker_record(circuit_breaker *breaker, status_code code, int64_t now_ms);
breaker_state circuit_breaker_state(circuit_breaker *breaker);

#endif
