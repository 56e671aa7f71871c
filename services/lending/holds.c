/* holds.c - holds as a reader sees them, and lending following the catalog's queue. */
#include "holds.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "field.h"
#include "handlers.h"
#include "lending.h"
#include "log.h"
#include "metrics.h"
#include "user_record.h"

typedef Library__Lending__V1__HoldStatus hold_status;
#define HOLD_WAITING LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING
#define HOLD_READY LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY
#define HOLD_FULFILLED LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_FULFILLED
#define HOLD_CANCELED LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_CANCELED
#define HOLD_EXPIRED LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_EXPIRED

static status_code out_of_memory(status *st) {
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

static bool is_open(hold_status state) {
    return state == HOLD_WAITING || state == HOLD_READY;
}

/* --- metrics ----------------------------------------------------------------------------------- */

static const char *const hold_outcomes[] = {"placed", "ready", "fulfilled", "canceled", "expired"};
enum { HOLD_OUTCOMES = sizeof hold_outcomes / sizeof hold_outcomes[0] };
static metric_series *holds_by_outcome[HOLD_OUTCOMES];
static metric_series *hold_wait_seconds;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_register(void) {
    metric_family *holds = metrics_counter("library_holds_total", "Holds reaching each status.",
                                           (const char *[]){"outcome", NULL});
    for (int i = 0; i < HOLD_OUTCOMES; i++)
        holds_by_outcome[i] = metrics_series(holds, (const char *[]){hold_outcomes[i], NULL});
    hold_wait_seconds = metrics_series(
        metrics_histogram("library_hold_wait_seconds", "Time from PlaceHold to the hold's copy set aside (READY).",
                          (const char *[]){NULL}, metrics_duration_buckets, metrics_duration_bucket_count),
        (const char *[]){NULL});
}

static void count_hold(const char *outcome) {
    pthread_once(&metrics_once, metrics_register);
    for (int i = 0; i < HOLD_OUTCOMES; i++)
        if (strcmp(hold_outcomes[i], outcome) == 0)
            metric_add(holds_by_outcome[i], 1);
}

void holds_metrics_register(void) {
    pthread_once(&metrics_once, metrics_register);
}

/* --- publishing ---------------------------------------------------------------------------- */

static status_code publish(nats_connection *connection, const hold_record *record, uint32_t attempt, event *e,
                           status *st) {
    const char *hold_id = record->hold->hold_id;
    return events_publish_step(connection, e, hold_id, attempt, hold_id, record->traceparent, st);
}

static status_code publish_placed(nats_connection *connection, const hold_record *record, uint32_t attempt,
                                  status *st) {
    const hold_message *hold = record->hold;
    Library__Events__V1__HoldPlaced body = LIBRARY__EVENTS__V1__HOLD_PLACED__INIT;
    body.hold_id = hold->hold_id;
    body.user_id = hold->user_id;
    body.book_id = hold->book_id;
    body.book_title = hold->book_title;
    body.place_time = hold->place_time;
    body.pickup_seconds = record->pickup_seconds;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED;
    e.hold_placed = &body;
    return publish(connection, record, attempt, &e, st);
}

static status_code publish_canceled(nats_connection *connection, const hold_record *record, uint32_t attempt,
                                    status *st) {
    Library__Events__V1__HoldCanceled body = LIBRARY__EVENTS__V1__HOLD_CANCELED__INIT;
    body.hold_id = record->hold->hold_id;
    body.user_id = record->hold->user_id;
    body.book_id = record->hold->book_id;
    body.place_time = record->hold->place_time;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED;
    e.hold_canceled = &body;
    return publish(connection, record, attempt, &e, st);
}

static status_code publish_fulfilled(nats_connection *connection, const hold_record *record, const char *loan_id,
                                     status *st) {
    Library__Events__V1__HoldFulfilled body = LIBRARY__EVENTS__V1__HOLD_FULFILLED__INIT;
    body.hold_id = record->hold->hold_id;
    body.user_id = record->hold->user_id;
    body.book_id = record->hold->book_id;
    body.loan_id = (char *)loan_id;
    body.place_time = record->hold->place_time;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_FULFILLED;
    e.hold_fulfilled = &body;
    return publish(connection, record, 0, &e, st);
}

/* --- presenting ----------------------------------------------------------------------------- */

/* Fills the hold's position from the newest queue of its book lending has seen. */
static status_code present(loan_store *store, arena *a, hold_message *hold, status *st) {
    hold->position = 0;
    if (hold->status != HOLD_WAITING)
        return STATUS_OK;
    book_queue *queue = NULL;
    if (loan_store_get_queue(store, hold->book_id, a, &queue, st) != STATUS_OK)
        return st->code;
    for (size_t i = 0; i < queue->n_hold_ids; i++)
        if (strcmp(queue->hold_ids[i], hold->hold_id) == 0)
            hold->position = (int32_t)i + 1;
    return STATUS_OK;
}

/* A user sees their own holds, an administrator anyone's; another user's is NOT_FOUND, so
 * hold ids cannot be probed. */
static status_code check_owner(rpc_context *ctx, const hold_message *hold, status *st) {
    const auth_identity *caller = rpc_context_caller(ctx);
    if (caller->admin || strcmp(caller->subject, hold->user_id) == 0)
        return STATUS_OK;
    return status_set(st, STATUS_NOT_FOUND, "HOLD_NOT_FOUND", "no hold with id %s", hold->hold_id);
}

/* --- PlaceHold --------------------------------------------------------------------------------- */

typedef struct place_job {
    user_hold hold;
    bool replay;
    bool need_archive; /* read the user's older hold history and run again */
} place_job;

static status_code reserve_hold_slot(void *arg, arena *a, user_record *user, bool *changed, status *st) {
    place_job *job = arg;
    return user_record_add_hold(a, user, &job->hold, &job->replay, &job->need_archive, changed, st);
}

/* The catalog answers a HoldPlaced in milliseconds and lending's consumer records the answer:
 * PlaceHold looks a few times, so its caller sees READY or a position, not a hold still on
 * its way. Past `wait_ms` it answers WAITING without a position; GetHold shows it later. */
static hold_record *await_queued(loan_store *store, arena *a, const char *hold_id, int64_t wait_ms,
                                 hold_record *record) {
    int64_t until = timestamp_monotonic_ms() + wait_ms;
    long pause_ms = 5;
    while (!record->queued && record->hold->status == HOLD_WAITING && timestamp_monotonic_ms() < until) {
        struct timespec pause = {.tv_nsec = pause_ms * 1000000};
        nanosleep(&pause, NULL);
        pause_ms = pause_ms < 80 ? pause_ms * 2 : 80;
        hold_record *latest = NULL;
        status ignored;
        if (loan_store_get_hold(store, hold_id, a, &latest, &ignored) == STATUS_OK)
            record = latest;
    }
    return record;
}

status_code holds_place_hold(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                             ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__PlaceHoldRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    const auth_identity *caller = rpc_context_caller(ctx);
    const char *user = caller->subject;
    if (field_check_id(req->book_id, "book_id", st) || field_check_request_id(req->request_id, st))
        return st->code;
    const loan_policy *policy = policy_for(h->policies, caller->group);
    char *hold_id = arena_alloc(a, LENDING_LOAN_ID_LENGTH + 1);
    size_t scoped_size = strlen(req->request_id) + 6;
    char *scoped = arena_alloc(a, scoped_size);
    if (hold_id == NULL || scoped == NULL)
        return out_of_memory(st);
    if (req->request_id[0])
        snprintf(scoped, scoped_size, "hold:%s", req->request_id);
    else
        scoped[0] = '\0';
    lending_new_loan_id(user, scoped, hold_id); /* a hold's request id never names a loan */

    Library__Catalog__V1__Book *book = NULL;
    status_code code = catalog_link_get_book(&h->catalog, ctx, req->book_id, &book, st);
    if (code != STATUS_OK)
        return code;
    int64_t now = timestamp_now_ms();
    place_job job = {.hold = {.hold_id = hold_id, .book_id = req->book_id, .now_seconds = now / 1000,
                              .max_holds = policy->max_holds, .fine_block_at = policy->fine_block_at}};
    user_record *slots = NULL;
    code = lending_update_user_reading(h, a, user, reserve_hold_slot, &job, &job.need_archive, &job.hold.archive,
                                       &job.hold.archive_revision, &slots, st);
    if (code != STATUS_OK)
        return code;
    if (user_record_history_full(slots, USER_HOLDS))
        lending_move_history(h, a, user, slots, USER_HOLDS);

    hold_record *record = (void *)arena_new_message(a, &library__lending__internal__hold_record__descriptor);
    hold_message *hold = (void *)arena_new_message(a, &library__lending__v1__hold__descriptor);
    if (record == NULL || hold == NULL)
        return out_of_memory(st);
    hold->hold_id = hold_id;
    hold->user_id = (char *)user;
    hold->book_id = req->book_id;
    hold->book_title = book->title;
    hold->status = HOLD_WAITING;
    hold->place_time = timestamp_from_ms(a, now);
    record->hold = hold;
    record->traceparent = (char *)rpc_context_traceparent(ctx);
    record->update_time_ms = now;
    record->pickup_seconds = policy->hold_pickup_ms / 1000;
    code = loan_store_create_hold(h->store, record, a, st);
    if (code == STATUS_OK)
        count_hold("placed");
    if (code == STATUS_ALREADY_EXISTS) /* the same request again */
        code = loan_store_get_hold(h->store, hold_id, a, &record, st);
    if (code != STATUS_OK)
        return code;
    if (record->hold->status == HOLD_WAITING && !record->queued) {
        status failed;
        if (publish_placed(h->connection, record, 0, &failed) != STATUS_OK)
            LOG_WARN("HoldPlaced for %s not published yet (the reconciler will): %s", hold_id, failed.message);
        else
            record = await_queued(h->store, a, hold_id, h->borrow_wait_ms, record);
    }
    if (present(h->store, a, record->hold, st) != STATUS_OK)
        return st->code;
    *response = &record->hold->base;
    return STATUS_OK;
}

/* --- CancelHold ------------------------------------------------------------------------------- */

typedef struct cancel_job {
    rpc_context *ctx;
    bool canceled_now;
} cancel_job;

static status_code apply_cancel(void *arg, arena *a, hold_record *record, bool *changed, status *st) {
    cancel_job *job = arg;
    (void)a;
    if (check_owner(job->ctx, record->hold, st) != STATUS_OK)
        return st->code;
    if (!is_open(record->hold->status))
        return status_set(st, STATUS_FAILED_PRECONDITION, "HOLD_NOT_OPEN",
                          "hold %s is no longer waiting or ready", record->hold->hold_id);
    record->hold->status = HOLD_CANCELED;
    record->update_time_ms = timestamp_now_ms();
    job->canceled_now = *changed = true;
    return STATUS_OK;
}

static status_code close_user_hold(void *arg, arena *a, user_record *user, bool *changed, status *st) {
    (void)a;
    (void)st;
    *changed = user_record_close_hold(user, arg);
    return STATUS_OK;
}

status_code holds_cancel_hold(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                              ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__CancelHoldRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    if (field_check_id(req->hold_id, "hold_id", st))
        return st->code;
    cancel_job job = {.ctx = ctx};
    hold_record *record = NULL;
    status_code code = loan_store_update_hold(h->store, req->hold_id, a, apply_cancel, &job, &record, st);
    if (code != STATUS_OK)
        return code;
    count_hold("canceled");
    /* Free the slot and tell the catalog; the reconciler redoes the announcement until the
     * catalog confirms it (HoldReleased), so the cancel has happened either way. */
    status failed;
    if (loan_store_update_user(h->store, record->hold->user_id, a, close_user_hold, record->hold->hold_id, NULL,
                               &failed) != STATUS_OK ||
        publish_canceled(h->connection, record, 0, &failed) != STATUS_OK)
        LOG_WARN("cancel of hold %s not fully propagated yet: %s", req->hold_id, failed.message);
    if (present(h->store, a, record->hold, st) != STATUS_OK)
        return st->code;
    *response = &record->hold->base;
    return STATUS_OK;
}

/* --- GetHold and ListHolds -------------------------------------------------------------------- */

status_code holds_get_hold(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                           ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__GetHoldRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    if (field_check_id(req->hold_id, "hold_id", st))
        return st->code;
    hold_record *record = NULL;
    if (loan_store_get_hold(h->store, req->hold_id, a, &record, st) != STATUS_OK ||
        check_owner(ctx, record->hold, st) != STATUS_OK || present(h->store, a, record->hold, st) != STATUS_OK)
        return st->code;
    *response = &record->hold->base;
    return STATUS_OK;
}

typedef struct hold_page {
    Library__Lending__V1__Hold **holds;
    size_t count, size;
    const char *next; /* the hold the next page starts at */
} hold_page;

/* Adds the hold when it passes the filters; false once the page is full (next is then set). */
static bool page_add(loan_store *store, arena *a, hold_page *page, const char *hold_id,
                     const Library__Lending__V1__ListHoldsRequest *req, status_code *code, status *st) {
    if (page->count == page->size) {
        page->next = hold_id;
        return false;
    }
    hold_record *record = NULL;
    *code = loan_store_get_hold(store, hold_id, a, &record, st);
    if (*code == STATUS_NOT_FOUND) { /* listed before it was stored, or never stored */
        *code = STATUS_OK;
        return true;
    }
    if (*code != STATUS_OK)
        return false;
    if ((req->status != LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_UNSPECIFIED &&
         record->hold->status != req->status) ||
        (req->book_id[0] && strcmp(record->hold->book_id, req->book_id) != 0))
        return true;
    if ((*code = present(store, a, record->hold, st)) != STATUS_OK)
        return false;
    page->holds[page->count++] = record->hold;
    return true;
}

/* The id `position` places into the listing: ids in order, or newest (last) first. */
static const char *listed_at(char *const *ids, size_t count, bool newest_first, size_t position) {
    return ids[newest_first ? count - 1 - position : position];
}

/* Where id is in the listing; count when absent. */
static size_t listing_position(char *const *ids, size_t count, bool newest_first, const char *id) {
    size_t position = 0;
    while (position < count && strcmp(listed_at(ids, count, newest_first, position), id) != 0)
        position++;
    return position;
}

status_code holds_list_holds(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                             ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__ListHoldsRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    const auth_identity *caller = rpc_context_caller(ctx);
    if (req->status < 0 || req->status > LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_EXPIRED)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE", "status is not a HoldStatus");
    if (req->book_id[0] && field_check_id(req->book_id, "book_id", st))
        return st->code;
    bool book_queue_listing = req->user_id[0] == '\0' && req->book_id[0] != '\0';
    if (book_queue_listing && !caller->admin)
        return status_set(st, STATUS_PERMISSION_DENIED, "NOT_YOUR_HOLDS",
                          "only administrators may list a book's queue; name yourself in user_id to "
                          "list your own holds of the book");
    lending_list_query query;
    if (lending_check_list(caller->subject, caller->admin, req->user_id, req->page_size, 0, req->page_token,
                           &query, st))
        return st->code;
    Library__Lending__V1__ListHoldsResponse *out =
        (void *)arena_new_message(a, &library__lending__v1__list_holds_response__descriptor);
    hold_page page = {.holds = arena_alloc(a, query.page_size * sizeof *page.holds), .size = query.page_size};
    if (out == NULL || page.holds == NULL)
        return out_of_memory(st);

    /* The ids to go through: the book's queue in its order, or the user's holds newest first.
     * The record's window is the newest part of the user's holds; the older part is read
     * from the bucket only when the page reaches past the window (user_record.h), and
     * positions stay the same in the whole history, as in ListLoans. */
    char **ids = NULL;
    size_t count = 0;
    bool newest_first = !book_queue_listing;
    bool whole = true; /* the list holds every id to go through */
    if (book_queue_listing) {
        book_queue *queue = NULL;
        if (loan_store_get_queue(h->store, req->book_id, a, &queue, st) != STATUS_OK)
            return st->code;
        ids = queue->hold_ids;
        count = queue->n_hold_ids;
    } else {
        user_record *user = NULL;
        if (loan_store_get_user(h->store, query.user_id, a, &user, st) != STATUS_OK)
            return st->code;
        ids = user->hold_history;
        count = user->n_hold_history;
        whole = user->hold_revision == 0; /* nothing ever moved to the UserHistory */
    }
    size_t position = 0;
    if (query.start_at[0] != '\0') { /* where the previous page stopped, however many came since */
        position = listing_position(ids, count, newest_first, query.start_at);
        if (position == count && !whole) {
            if (lending_whole_history(h, a, query.user_id, USER_HOLDS, &ids, &count, st) != STATUS_OK)
                return st->code;
            whole = true;
            position = listing_position(ids, count, newest_first, query.start_at);
        }
        if (position == count)
            return status_set(st, STATUS_INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
                              "page_token points at a hold this list no longer holds; list again from the start");
    }
    status_code code = STATUS_OK;
    for (;; position++) {
        if (position >= count) {
            if (whole)
                break;
            /* past the window: the older holds follow (and, for a full page, say whether
             * there is a next one) */
            if (lending_whole_history(h, a, query.user_id, USER_HOLDS, &ids, &count, st) != STATUS_OK)
                return st->code;
            whole = true;
            if (position >= count)
                break;
        }
        if (!page_add(h->store, a, &page, listed_at(ids, count, newest_first, position), req, &code, st))
            break;
    }
    if (code != STATUS_OK)
        return code;
    out->holds = page.holds;
    out->n_holds = page.count;
    if (page.next) {
        char token[LENDING_PAGE_TOKEN_MAX];
        lending_page_token_encode(page.next, token);
        out->next_page_token = arena_strdup(a, token);
    }
    *response = &out->base;
    return STATUS_OK;
}

/* --- following the catalog -------------------------------------------------------------------- */

typedef struct follow_job {
    const event *e;
    bool became_ready; /* WAITING -> READY now */
    bool closed;      /* the hold left the open states now */
    bool needs_cancel; /* READY for a hold canceled meanwhile: say the cancel again */
} follow_job;

static status_code apply_catalog(void *arg, arena *a, hold_record *record, bool *changed, status *st) {
    follow_job *job = arg;
    hold_message *hold = record->hold;
    (void)st;
    *changed = false;
    switch (job->e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED:
        *changed = !record->queued;
        record->queued = true;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY:
        *changed = !record->queued;
        record->queued = true;
        if (hold->status == HOLD_WAITING) {
            const Library__Events__V1__HoldReady *ready = job->e->hold_ready;
            hold->status = HOLD_READY;
            hold->ready_time = ready->ready_time;
            hold->expire_time = ready->expire_time;
            job->became_ready = *changed = true;
        } else if (hold->status == HOLD_CANCELED) {
            job->needs_cancel = !record->release_confirmed;
        }
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED:
        if (is_open(hold->status)) {
            hold->status = HOLD_EXPIRED;
            job->closed = *changed = true;
        }
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED:
        *changed = !record->release_confirmed;
        record->release_confirmed = true;
        break;
    default:
        break;
    }
    if (*changed)
        record->update_time_ms = timestamp_now_ms();
    (void)a;
    return STATUS_OK;
}

status_code holds_follow_catalog(loan_store *store, nats_connection *connection, arena *a, const event *e,
                                 status *st) {
    const char *hold_id = NULL;
    const Library__Events__V1__HoldQueue *queue = NULL;
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED:
        hold_id = e->hold_queued->hold_id, queue = e->hold_queued->queue;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY:
        hold_id = e->hold_ready->hold_id, queue = e->hold_ready->queue;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED:
        hold_id = e->hold_expired->hold_id, queue = e->hold_expired->queue;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED:
        hold_id = e->hold_released->hold_id, queue = e->hold_released->queue;
        break;
    default:
        return STATUS_OK;
    }
    if (field_check_id(hold_id, "hold_id", st) != STATUS_OK)
        return st->code;
    if (queue != NULL && queue->book_id != NULL && field_check_id(queue->book_id, "book_id", st) == STATUS_OK &&
        loan_store_follow_queue(store, queue, a, st) != STATUS_OK)
        return st->code;
    follow_job job = {.e = e};
    hold_record *record = NULL;
    status_code code = loan_store_update_hold(store, hold_id, a, apply_catalog, &job, &record, st);
    if (code == STATUS_NOT_FOUND)
        return STATUS_OK; /* not a hold of ours */
    if (code != STATUS_OK)
        return code;
    if (job.became_ready) {
        count_hold("ready");
        const Google__Protobuf__Timestamp *placed = record->hold->place_time;
        if (placed) {
            double seconds = (double)timestamp_now_ms() / 1000 - ((double)placed->seconds + placed->nanos / 1e9);
            metric_observe(hold_wait_seconds, seconds > 0 ? seconds : 0);
        }
    }
    if (job.closed)
        count_hold("expired");
    if (job.closed &&
        loan_store_update_user(store, record->hold->user_id, a, close_user_hold, record->hold->hold_id, NULL, st) !=
            STATUS_OK)
        return st->code;
    if (job.needs_cancel)
        return publish_canceled(connection, record, 0, st);
    return STATUS_OK;
}

typedef struct fulfil_job {
    bool fulfilled_now;
} fulfil_job;

static status_code apply_fulfil(void *arg, arena *a, hold_record *record, bool *changed, status *st) {
    fulfil_job *job = arg;
    (void)a;
    (void)st;
    *changed = is_open(record->hold->status);
    if (*changed) {
        record->hold->status = HOLD_FULFILLED;
        record->update_time_ms = timestamp_now_ms();
    }
    job->fulfilled_now = *changed;
    return STATUS_OK;
}

status_code holds_fulfil(loan_store *store, nats_connection *connection, arena *a, const char *hold_id,
                         const char *loan_id, status *st) {
    if (field_check_id(hold_id, "hold_id", st) != STATUS_OK)
        return st->code;
    fulfil_job job = {0};
    hold_record *record = NULL;
    status_code code = loan_store_update_hold(store, hold_id, a, apply_fulfil, &job, &record, st);
    if (code == STATUS_NOT_FOUND)
        return STATUS_OK;
    if (code != STATUS_OK)
        return code;
    if (record->hold->status != HOLD_FULFILLED)
        return STATUS_OK; /* canceled meanwhile: the loan has the copy all the same */
    if (job.fulfilled_now)
        count_hold("fulfilled");
    code = loan_store_update_user(store, record->hold->user_id, a, close_user_hold, record->hold->hold_id, NULL, st);
    if (code == STATUS_OK)
        code = publish_fulfilled(connection, record, loan_id, st);
    return code;
}

static status_code apply_lost(void *arg, arena *a, hold_record *record, bool *changed, status *st) {
    (void)arg;
    (void)a;
    (void)st;
    *changed = is_open(record->hold->status);
    if (*changed) {
        record->hold->status = HOLD_CANCELED;
        record->release_confirmed = true; /* the catalog let go of it when the loan took the copy */
        record->update_time_ms = timestamp_now_ms();
    }
    return STATUS_OK;
}

status_code holds_lost(loan_store *store, arena *a, const char *hold_id, status *st) {
    if (field_check_id(hold_id, "hold_id", st) != STATUS_OK)
        return st->code;
    hold_record *record = NULL;
    status_code code = loan_store_update_hold(store, hold_id, a, apply_lost, NULL, &record, st);
    if (code == STATUS_NOT_FOUND)
        return STATUS_OK;
    if (code != STATUS_OK)
        return code;
    LOG_WARN("hold %s lost its copy to a canceled loan; recorded as CANCELED", hold_id);
    return loan_store_update_user(store, record->hold->user_id, a, close_user_hold, record->hold->hold_id, NULL, st);
}

/* --- the reconciler's part -------------------------------------------------------------------- */

static bool needs_step(const hold_record *record) {
    return (record->hold->status == HOLD_WAITING && !record->queued) ||
           (record->hold->status == HOLD_CANCELED && !record->release_confirmed);
}

bool holds_index_facts(const hold_record *record, open_loan_facts *facts) {
    *facts = (open_loan_facts){.update_time_ms = record->update_time_ms, .release_confirmed = true};
    if (record->hold->status == HOLD_WAITING && !record->queued)
        facts->state = LOAN_PENDING;
    else if (is_open(record->hold->status))
        facts->state = LOAN_ACTIVE;
    else if (record->hold->status == HOLD_CANCELED && !record->release_confirmed)
        facts->state = LOAN_RETURNED, facts->release_confirmed = false;
    else
        return false;
    return true;
}

void holds_reconcile_user(loan_store *store, nats_connection *connection, arena *a, const char *user_id,
                          const char *const *hold_ids, size_t count) {
    user_record *user = NULL;
    status st;
    if (loan_store_get_user(store, user_id, a, &user, &st) != STATUS_OK)
        return;
    for (size_t i = 0; i < count; i++) {
        hold_record *record = NULL;
        status_code code = loan_store_get_hold(store, hold_ids[i], a, &record, &st);
        if (code == STATUS_NOT_FOUND) {
            const char *book_id = NULL;
            for (size_t j = 0; j < user->n_open_holds; j++)
                if (strcmp(user->open_holds[j]->hold_id, hold_ids[i]) == 0)
                    book_id = user->open_holds[j]->book_id;
            record = (void *)arena_new_message(a, &library__lending__internal__hold_record__descriptor);
            hold_message *hold = (void *)arena_new_message(a, &library__lending__v1__hold__descriptor);
            if (record == NULL || hold == NULL || book_id == NULL)
                continue;
            hold->hold_id = (char *)hold_ids[i];
            hold->user_id = (char *)user_id;
            hold->book_id = (char *)book_id;
            hold->status = HOLD_CANCELED;
            record->hold = hold;
            record->update_time_ms = timestamp_now_ms();
            code = loan_store_create_hold(store, record, a, &st);
            if (code == STATUS_ALREADY_EXISTS) /* PlaceHold stored it after all */
                code = loan_store_get_hold(store, hold_ids[i], a, &record, &st);
            else if (code == STATUS_OK) {
                LOG_WARN("hold %s of a user record was never stored; recorded as CANCELED", hold_ids[i]);
                /* the catalog never saw it; its HoldReleased keeps a late HoldPlaced out too */
                if (publish_canceled(connection, record, 0, &st) != STATUS_OK)
                    LOG_WARN("HoldCanceled for claimed hold %s not published yet: %s", hold_ids[i], st.message);
            }
        }
        if (code == STATUS_OK && !is_open(record->hold->status))
            code = loan_store_update_user(store, user_id, a, close_user_hold, (void *)hold_ids[i], NULL, &st);
        if (code != STATUS_OK)
            LOG_WARN("reconciling the user record of hold %s: %s", hold_ids[i], st.message);
    }
}

/* The hold was announced again at *now_ms: its last change is then. */
static status_code mark_announced(void *arg, arena *a, hold_record *record, bool *changed, status *st) {
    (void)a;
    (void)st;
    const int64_t *now_ms = arg;
    *changed = record->update_time_ms < *now_ms;
    if (*changed)
        record->update_time_ms = *now_ms;
    return STATUS_OK;
}

/* An open hold's HoldPlaced once more, under an attempt no step ever reaches (the second of
 * the announcement), so that the catalog answers it anew. */
static status_code announce_again(loan_store *store, nats_connection *connection, arena *a,
                                  const hold_record *record, int64_t now_ms, status *st) {
    status_code code = publish_placed(connection, record, (uint32_t)(now_ms / 1000), st);
    if (code == STATUS_OK)
        code = loan_store_update_hold(store, record->hold->hold_id, a, mark_announced, &now_ms, NULL, st);
    return code;
}

void holds_reconcile(loan_store *store, nats_connection *connection, arena *a, const char *hold_id,
                     int64_t now_ms, int64_t after_ms, int64_t announce_after_ms) {
    hold_record *record = NULL;
    status st;
    if (loan_store_get_hold(store, hold_id, a, &record, &st) != STATUS_OK)
        return;
    if (!needs_step(record)) {
        if (announce_after_ms > 0 && is_open(record->hold->status) &&
            now_ms - record->update_time_ms >= announce_after_ms &&
            announce_again(store, connection, a, record, now_ms, &st) != STATUS_OK)
            LOG_WARN("announcing hold %s again: %s", hold_id, st.message);
        return;
    }
    int64_t age = now_ms - record->update_time_ms;
    if (age < after_ms)
        return;
    uint32_t attempt = events_attempt_for_age(age, after_ms);
    status_code code;
    if (record->hold->status == HOLD_WAITING) {
        LOG_INFO("hold %s is not queued yet; announcing HoldPlaced again (attempt %u)", hold_id, attempt);
        code = publish_placed(connection, record, attempt, &st);
    } else {
        LOG_INFO("cancel of hold %s is not confirmed yet; announcing HoldCanceled again (attempt %u)", hold_id,
                 attempt);
        code = publish_canceled(connection, record, attempt, &st);
    }
    if (code != STATUS_OK)
        LOG_WARN("reconciling hold %s: %s", hold_id, st.message);
}

status_code holds_waiting(loan_store *store, const char *book_id, arena *a, bool *waiting, status *st) {
    book_queue *queue = NULL;
    if (loan_store_get_queue(store, book_id, a, &queue, st) != STATUS_OK)
        return st->code;
    *waiting = queue->n_hold_ids > 0;
    return STATUS_OK;
}
