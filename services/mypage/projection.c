/* projection.c - loan events into Redis pages, live and by replay. */
#include "projection.h"

#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "log.h"
#include "metrics.h"
#include "timestamp.h"


struct projection {
    nats_connection *connection;
    page_store *store;
    event_consumer *consumer;
    metric_series *lag;
};

static void announce(nats_connection *connection, const char *user_id) {
    /* Best effort: a replica that was away from NATS sends its watchers their pages again
     * when it is back (handlers.c), and a lost announcement only delays a WatchMypage update,
     * never the projection itself. */
    natsStatus s = natsConnection_Publish(nats_connection_core(connection), MYPAGE_CHANGED_SUBJECT,
                                          user_id, (int)strlen(user_id));
    if (s != NATS_OK)
        LOG_DEBUG("could not announce a mypage change: %s", natsStatus_GetText(s));
}

static status_code on_loan_event(void *arg, const event *e, uint64_t sequence, status *st) {
    projection *p = arg;
    loan_change change;
    if (!page_change_from_event(e, &change))
        return STATUS_OK; /* not about a user's loan: nothing to project */
    bool changed = false;
    status_code code = page_store_apply(p->store, &change, sequence, &changed, st);
    if (code == STATUS_OK && changed)
        announce(p->connection, change.user_id);
    if (code == STATUS_OK && change.event_time_ms > 0) {
        int64_t lag_ms = timestamp_now_ms() - change.event_time_ms;
        metric_observe(p->lag, lag_ms > 0 ? (double)lag_ms / 1000 : 0);
    }
    return code;
}

status_code projection_start(nats_connection *connection, page_store *store, int64_t ack_wait_ms,
                             int workers,
                             projection **out, status *st) {
    projection *p = calloc(1, sizeof *p);
    if (p == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    p->connection = connection;
    p->store = store;
    p->lag = metrics_series(
        metrics_histogram("library_projection_lag_seconds",
                          "Time from a loan event happening to its change being in Redis.", NULL,
                          metrics_duration_buckets, metrics_duration_bucket_count),
        NULL);
    event_consumer_options options = {.durable = "mypage", .filter_subject = EVENTS_LOAN_SUBJECTS,
                                      .handler = on_loan_event, .arg = p,
                                      .ack_wait_ms = ack_wait_ms, .workers = workers};
    status_code code = event_consumer_start(connection, &options, &p->consumer, st);
    if (code != STATUS_OK) {
        free(p);
        return code;
    }
    *out = p;
    return STATUS_OK;
}

void projection_stop(projection *p) {
    if (p == NULL)
        return;
    event_consumer_stop(p->consumer);
    free(p);
}

typedef struct replay {
    page_store *store;
    uint64_t generation;
} replay;

static status_code on_replayed_event(void *arg, const event *e, uint64_t sequence, status *st) {
    replay *r = arg;
    loan_change change;
    if (!page_change_from_event(e, &change))
        return STATUS_OK;
    return page_store_apply_to(r->store, r->generation, &change, sequence, st);
}

status_code projection_rebuild(nats_connection *connection, page_store *store, uint64_t *events,
                               status *st) {
    /* From begin on, the live projection writes every event to the new generation too, so
     * what the replay reads (the stream up to its end, after begin) and what the live one
     * writes together cover every event; the order does not matter (page.h). */
    replay r = {.store = store};
    status_code code = page_store_rebuild_begin(store, &r.generation, st);
    if (code != STATUS_OK)
        return code;
    LOG_INFO("rebuilding mypage into generation %llu", (unsigned long long)r.generation);
    uint64_t count = 0;
    code = events_replay(connection, EVENTS_LOAN_SUBJECTS, on_replayed_event, &r, &count, st);
    if (code == STATUS_OK)
        code = page_store_rebuild_switch(store, r.generation, st);
    if (code != STATUS_OK) {
        page_store_rebuild_abort(store, r.generation);
        return code;
    }
    announce(connection, "");
    natsConnection_Flush(nats_connection_core(connection));
    LOG_INFO("mypage rebuilt from %llu events; generation %llu is in use",
             (unsigned long long)count, (unsigned long long)r.generation);
    if (events)
        *events = count;
    return STATUS_OK;
}
