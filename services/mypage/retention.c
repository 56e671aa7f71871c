/* retention.c - settled loans and closed holds leave the pages after RETENTION. */
#include "retention.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "log.h"
#include "projection.h"
#include "timestamp.h"

/* Loans and holds (and marks, and pages looked over) one sweep step takes: one Lua call stays
 * short for Redis. */
enum { SWEEP_BATCH = 200, PAUSE_MS = 50 };

struct retention_sweeper {
    nats_connection *connection;
    page_store *store;
    int64_t interval_ms;
    pthread_t thread;
    atomic_bool stopping;
};

int64_t retention_sweep_interval_ms(int64_t retention_ms) {
    int64_t interval = retention_ms / 10;
    if (interval > 60000)
        interval = 60000;
    return interval < 1000 ? 1000 : interval;
}

/* As the projection does after a change. */
static void announce_removed(void *arg, const char *user_id) {
    retention_sweeper *sweeper = arg;
    projection_announce(sweeper->connection, user_id);
}

/* Steps until nothing more is due (or Redis fails: the next sweep tries again). */
static void sweep(retention_sweeper *sweeper) {
    bool more = true;
    while (more && !atomic_load(&sweeper->stopping)) {
        status st;
        status_clear(&st);
        if (page_store_sweep(sweeper->store, timestamp_now_ms(), SWEEP_BATCH, &more, announce_removed, sweeper,
                             &st) != STATUS_OK) {
            LOG_WARN("retention sweep failed: %s", st.message);
            return;
        }
    }
}

static void *sweeper_main(void *arg) {
    retention_sweeper *sweeper = arg;
    while (!atomic_load(&sweeper->stopping)) {
        sweep(sweeper);
        for (int64_t slept = 0; slept < sweeper->interval_ms && !atomic_load(&sweeper->stopping);
             slept += PAUSE_MS)
            timestamp_sleep_ms(PAUSE_MS);
    }
    return NULL;
}

status_code retention_start(nats_connection *connection, page_store *store, int64_t retention_ms,
                            retention_sweeper **out, status *st) {
    *out = NULL;
    page_store_set_retention(store, retention_ms);
    if (retention_ms <= 0)
        return STATUS_OK;
    retention_sweeper *sweeper = calloc(1, sizeof *sweeper);
    if (sweeper == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    sweeper->connection = connection;
    sweeper->store = store;
    sweeper->interval_ms = retention_sweep_interval_ms(retention_ms);
    atomic_init(&sweeper->stopping, false);
    if (pthread_create(&sweeper->thread, NULL, sweeper_main, sweeper) != 0) {
        free(sweeper);
        return status_set(st, STATUS_INTERNAL, "THREAD", "cannot start the retention sweeper");
    }
    *out = sweeper;
    return STATUS_OK;
}

void retention_stop(retention_sweeper *sweeper) {
    if (sweeper == NULL)
        return;
    atomic_store(&sweeper->stopping, true);
    pthread_join(sweeper->thread, NULL);
    free(sweeper);
}
