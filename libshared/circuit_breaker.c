/* circuit_breaker.c - closed -> open -> half-open -> closed. */
#include "circuit_breaker.h"

/* Called with the lock held whenever the state may have changed. */
static void publish_state(circuit_breaker *b) {
    metric_set(b->state_gauge, (double)b->state);
}

void circuit_breaker_init(circuit_breaker *b, const char *name, int failure_threshold, int64_t open_ms) {
    const char *const labels[] = {"breaker", NULL};
    const char *const values[] = {name, NULL};
    b->state_gauge = metrics_series(
        metrics_gauge("library_circuit_breaker_state",
                      "State of a circuit breaker: 0 closed, 1 open, 2 half-open.", labels),
        values);
    b->rejected = metrics_series(
        metrics_counter("library_circuit_breaker_rejected_total",
                        "Calls refused at once because the circuit was open.", labels),
        values);
    pthread_mutex_init(&b->lock, NULL);
    b->state = BREAKER_CLOSED;
    b->consecutive_failures = 0;
    b->failure_threshold = failure_threshold > 0 ? failure_threshold : 5;
    b->open_ms = open_ms > 0 ? open_ms : 2000;
    b->opened_at_ms = 0;
    b->probe_in_flight = false;
    publish_state(b);
}

void circuit_breaker_destroy(circuit_breaker *b) {
    pthread_mutex_destroy(&b->lock);
}

bool circuit_breaker_allow(circuit_breaker *b, int64_t now_ms) {
    pthread_mutex_lock(&b->lock);
    bool allowed = true;
    if (b->state == BREAKER_OPEN && now_ms - b->opened_at_ms >= b->open_ms) {
        b->state = BREAKER_HALF_OPEN;
        b->probe_in_flight = false;
    }
    if (b->state == BREAKER_OPEN) {
        allowed = false;
    } else if (b->state == BREAKER_HALF_OPEN) {
        allowed = !b->probe_in_flight; /* one probe at a time */
        b->probe_in_flight = true;
    }
    publish_state(b);
    pthread_mutex_unlock(&b->lock);
    if (!allowed)
        metric_add(b->rejected, 1);
    return allowed;
}

void circuit_breaker_record(circuit_breaker *b, status_code code, int64_t now_ms) {
    bool failure = code == STATUS_UNAVAILABLE || code == STATUS_DEADLINE_EXCEEDED;
    pthread_mutex_lock(&b->lock);
    if (!failure) {
        b->state = BREAKER_CLOSED;
        b->consecutive_failures = 0;
    } else if (b->state == BREAKER_HALF_OPEN ||
               ++b->consecutive_failures >= b->failure_threshold) {
        b->state = BREAKER_OPEN;
        b->opened_at_ms = now_ms;
    }
    b->probe_in_flight = false;
    publish_state(b);
    pthread_mutex_unlock(&b->lock);
}

breaker_state circuit_breaker_state(circuit_breaker *b) {
    pthread_mutex_lock(&b->lock);
    breaker_state state = b->state;
    pthread_mutex_unlock(&b->lock);
    return state;
}
