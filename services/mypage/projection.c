/* projection.c - loan, hold and account events into Redis pages, live and by replay. */
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

void projection_announce(nats_connection *connection, const char *user_id) {
    /* Best effort: a replica that was away from NATS sends its watchers their pages again
     * when it is back (handlers.c), and a lost announcement only delays a WatchMypage update,
     * never the projection itself. */
    status st;
    if (nats_publish(connection, MYPAGE_CHANGED_SUBJECT, user_id, strlen(user_id), &st) != STATUS_OK)
        LOG_DEBUG("could not announce a mypage change: %s", st.message);
}

/* A hold the event moved in its book's queue belongs to another user: their page changed
 * too (its position), though no event names them. */
static void announce_moved(void *arg, const char *user_id) {
    projection_announce(arg, user_id);
}

/* Applies e to the pages in use (generation 0) or to a rebuild's generation. *user is the
 * user whose page it is about, NULL for an event no page shows (the catalog's copy events).
 * connection (NULL in a rebuild) hears of the other users whose positions moved. */
static status_code apply_event(page_store *store, nats_connection *connection, uint64_t generation,
                               const event *e, uint64_t sequence, bool *changed, const char **user,
                               int64_t *event_time_ms, status *st) {
    *user = NULL;
    loan_change loan;
    if (page_change_from_event(e, &loan)) {
        *user = loan.user_id;
        *event_time_ms = loan.event_time_ms;
        return generation ? page_store_apply_to(store, generation, &loan, sequence, st)
                          : page_store_apply(store, &loan, sequence, changed, st);
    }
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    hold_change hold;
    account_change account;
    status_code code = STATUS_OK;
    if (page_hold_change_from_event(a, e, &hold)) {
        *user = hold.user_id; /* points into e, not a */
        *event_time_ms = hold.event_time_ms;
        code = generation ? page_store_apply_hold_to(store, generation, &hold, sequence, st)
                          : page_store_apply_hold(store, &hold, sequence, changed,
                                                  connection ? announce_moved : NULL, connection, st);
    } else if (page_account_change_from_event(a, e, &account)) {
        *user = account.user_id; /* points into e, not a */
        *event_time_ms = account.event_time_ms;
        code = generation ? page_store_apply_account_to(store, generation, &account, st)
                          : page_store_apply_account(store, &account, changed, st);
    }
    arena_destroy(a);
    return code;
}

/* Lending's EventsRestated: the final events of loans, each applied as it was first
 * published (a repeat changes no page). One that does not decode is skipped, as a message that
 * does not decode is; one whose apply fails fails the whole message, which is delivered again. */
static status_code each_restated(const event *e, uint64_t sequence,
                                 status_code (*apply)(void *, const event *, uint64_t, status *), void *arg,
                                 status *st) {
    const Library__Events__V1__EventsRestated *restated = e->events_restated;
    status_code code = STATUS_OK;
    for (size_t i = 0; restated != NULL && i < restated->n_events && code == STATUS_OK; i++) {
        event *inner = library__events__v1__event__unpack(NULL, restated->events[i].len, restated->events[i].data);
        if (inner == NULL) {
            LOG_WARN("a restated event (%zu of %zu in %s) does not decode; skipped", i + 1, restated->n_events,
                     e->event_id);
            continue;
        }
        if (inner->body_case != LIBRARY__EVENTS__V1__EVENT__BODY_EVENTS_RESTATED) /* never nested */
            code = apply(arg, inner, sequence, st);
        library__events__v1__event__free_unpacked(inner, NULL);
    }
    return code;
}

static status_code on_event(void *arg, const event *e, uint64_t sequence, status *st) {
    if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_EVENTS_RESTATED)
        return each_restated(e, sequence, on_event, arg, st);
    projection *p = arg;
    bool changed = false;
    const char *user = NULL;
    int64_t event_time_ms = 0;
    status_code code = apply_event(p->store, p->connection, 0, e, sequence, &changed, &user, &event_time_ms, st);
    if (user == NULL)
        return code; /* not about a user's loan or hold: nothing to project */
    if (code == STATUS_OK && changed)
        projection_announce(p->connection, user);
    if (code == STATUS_OK && event_time_ms > 0) {
        int64_t lag_ms = timestamp_now_ms() - event_time_ms;
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
    /* Every event: lending's loan and hold events and the catalog's hold answers (copy.hold_*)
     * both make pages, and one consumer keeps them in one order per user. A durable left by
     * an older mypage with the loan subjects only is made anew from the start of the stream
     * (event_consumer_options.restart_on_new_filter): nothing the catalog said is skipped,
     * and the idempotent merge makes the replay of the loan events a no-op. */
    event_consumer_options options = {.durable = "mypage", .filter_subject = EVENTS_ALL_SUBJECTS,
                                      .handler = on_event, .arg = p,
                                      .ack_wait_ms = ack_wait_ms, .workers = workers,
                                      .restart_on_new_filter = true};
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
    if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_EVENTS_RESTATED)
        return each_restated(e, sequence, on_replayed_event, arg, st);
    replay *r = arg;
    const char *user = NULL;
    int64_t event_time_ms = 0;
    return apply_event(r->store, NULL, r->generation, e, sequence, NULL, &user, &event_time_ms, st);
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
    code = events_replay(connection, EVENTS_ALL_SUBJECTS, on_replayed_event, &r, &count, st);
    if (code == STATUS_OK)
        code = page_store_rebuild_switch(store, r.generation, st);
    if (code != STATUS_OK) {
        page_store_rebuild_abort(store, r.generation);
        return code;
    }
    projection_announce(connection, "");
    nats_flush(connection, 5000);
    LOG_INFO("mypage rebuilt from %llu events; generation %llu is in use",
             (unsigned long long)count, (unsigned long long)r.generation);
    if (events)
        *events = count;
    return STATUS_OK;
}
