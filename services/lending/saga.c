/* saga.c - events in and out of lending, and the reconciler. */
#include "saga.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "account.h"
#include "fines.h"
#include "holds.h"
#include "lending.h"
#include "log.h"
#include "metrics.h"
#include "open_loans.h"
#include "restated.h"
#include "retention.h"
#include "text.h"
#include "timestamp.h"
#include "user_record.h"

/* A handler waiting for one loan's outcome. Each has its own condition, so an outcome wakes
 * the one handler that waits for it and not every waiting worker. */
struct saga_waiter {
    struct saga_waiter *next;
    char loan_id[32];
    bool done;
    pthread_cond_t decided;
};

struct lending_saga {
    nats_connection *connection;
    loan_store *store;
    saga_options options;
    event_consumer *consumer;
    nats_subscription *activated; /* the outcomes a waiting BorrowBook answers with */
    nats_subscription *canceled;
    pthread_mutex_t lock; /* guards waiters */
    saga_waiter *waiters;
    pthread_t reconciler;
    bool reconciler_running;
    open_loans *open;  /* the reconciler thread's alone */
    open_loans *open_holds; /* holds that may need a step, as "loans" PENDING or RETURNED */
    retention_queue *settled; /* settled loans and holds, by when they may be forgotten */
    restated_queue *restated; /* final events to announce again (the reconciler thread's alone) */
    atomic_bool stopping;
};

/* --- publishing -------------------------------------------------------------------------- */

/* Publishes e, whose body the caller has set, in the loan's envelope (events_publish_step),
 * with the loan as correlation id and its traceparent. */
static status_code publish_step(nats_connection *connection, const loan_record *record, const char *subject_id,
                                uint32_t attempt, event *e, status *st) {
    return events_publish_step(connection, e, subject_id, attempt, record->loan->loan_id, record->traceparent, st);
}

static status_code publish_attempt(nats_connection *connection, const loan_record *record, uint32_t attempt,
                                   event *e, status *st) {
    return publish_step(connection, record, record->loan->loan_id, attempt, e, st);
}

/* A step that happens once per renewal (LoanRenewed, and LoanOverdue, which a renewal makes
 * possible again) is named by "<loan id>-n<renewal count>", so each renewal's event has an
 * id of its own that JetStream does not take for a duplicate of the previous one's. */
static status_code publish_renewal_step(nats_connection *connection, const loan_record *record,
                                        uint32_t attempt, event *e, status *st) {
    int32_t renewals = record->loan->renewal_count;
    if (renewals <= 0)
        return publish_attempt(connection, record, attempt, e, st);
    char subject_id[EVENT_ID_MAX];
    snprintf(subject_id, sizeof subject_id, "%.64s-n%d", record->loan->loan_id, (int)renewals);
    return publish_step(connection, record, subject_id, attempt, e, st);
}

/* The first (and only) announcement of a step nobody answers. */
static status_code publish_loan_event(nats_connection *connection, const loan_record *record, event *e,
                                      status *st) {
    return publish_attempt(connection, record, 0, e, st);
}

status_code saga_publish_requested(nats_connection *connection, const loan_record *record, uint32_t attempt,
                                   status *st) {
    const loan_message *loan = record->loan;
    Library__Events__V1__LoanRequested body = LIBRARY__EVENTS__V1__LOAN_REQUESTED__INIT;
    body.loan_id = loan->loan_id;
    body.user_id = loan->user_id;
    body.book_id = loan->book_id;
    body.book_title = loan->book_title;
    body.borrow_time = loan->borrow_time;
    body.due_time = loan->due_time;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED;
    e.loan_requested = &body;
    return publish_attempt(connection, record, attempt, &e, st);
}

/* LoanReturned of the loan, in e and its body (the caller's). */
static void returned_event(const loan_message *loan, event *e, Library__Events__V1__LoanReturned *body) {
    library__events__v1__loan_returned__init(body);
    body->loan_id = loan->loan_id;
    body->user_id = loan->user_id;
    body->book_id = loan->book_id;
    body->return_time = loan->return_time;
    body->book_title = loan->book_title;
    body->due_time = loan->due_time;
    body->renewal_count = loan->renewal_count;
    body->borrow_time = loan->borrow_time;
    library__events__v1__event__init(e);
    e->body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED;
    e->loan_returned = body;
}

/* LoanCanceled of the loan, in e and its body (the caller's). */
static void canceled_event(const loan_message *loan, event *e, Library__Events__V1__LoanCanceled *body) {
    library__events__v1__loan_canceled__init(body);
    body->loan_id = loan->loan_id;
    body->user_id = loan->user_id;
    body->book_id = loan->book_id;
    body->book_title = loan->book_title;
    body->reason = loan->cancel_reason;
    body->due_time = loan->due_time;
    body->borrow_time = loan->borrow_time;
    library__events__v1__event__init(e);
    e->body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED;
    e->loan_canceled = body;
}

status_code saga_publish_returned(nats_connection *connection, const loan_record *record, uint32_t attempt,
                                  status *st) {
    event e;
    Library__Events__V1__LoanReturned body;
    returned_event(record->loan, &e, &body);
    return publish_attempt(connection, record, attempt, &e, st);
}

/* LoanActivated under subject_id (the loan's id, or an announcement's own). */
static status_code publish_activated(nats_connection *connection, const loan_record *record,
                                     const char *subject_id, status *st) {
    const loan_message *loan = record->loan;
    Library__Events__V1__LoanActivated body = LIBRARY__EVENTS__V1__LOAN_ACTIVATED__INIT;
    body.loan_id = loan->loan_id;
    body.user_id = loan->user_id;
    body.book_id = loan->book_id;
    body.book_title = loan->book_title;
    body.due_time = loan->due_time;
    body.borrow_time = loan->borrow_time;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED;
    e.loan_activated = &body;
    return publish_step(connection, record, subject_id, 0, &e, st);
}

/* LoanActivated or LoanCanceled, as the loan now is; nothing for a loan in another state. */
static status_code publish_outcome(nats_connection *connection, const loan_record *record, status *st) {
    const loan_message *loan = record->loan;
    if (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE)
        return publish_activated(connection, record, loan->loan_id, st);
    if (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED) {
        event e;
        Library__Events__V1__LoanCanceled body;
        canceled_event(loan, &e, &body);
        return publish_loan_event(connection, record, &e, st);
    }
    return STATUS_OK;
}

/* LoanOverdue (under subject_id; NULL: the renewal's step) and LoanRenewed (under
 * subject_id; NULL: the renewal's step, attempt). */
static status_code publish_overdue_as(nats_connection *connection, const loan_record *record,
                                      const char *subject_id, status *st) {
    const loan_message *loan = record->loan;
    Library__Events__V1__LoanOverdue body = LIBRARY__EVENTS__V1__LOAN_OVERDUE__INIT;
    body.loan_id = loan->loan_id;
    body.user_id = loan->user_id;
    body.book_id = loan->book_id;
    body.due_time = loan->due_time;
    body.borrow_time = loan->borrow_time;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE;
    e.loan_overdue = &body;
    return subject_id ? publish_step(connection, record, subject_id, 0, &e, st)
                      : publish_renewal_step(connection, record, 0, &e, st);
}

static status_code publish_overdue(nats_connection *connection, const loan_record *record, status *st) {
    return publish_overdue_as(connection, record, NULL, st);
}

static status_code publish_renewed_as(nats_connection *connection, const loan_record *record,
                                      const char *subject_id, uint32_t attempt, status *st) {
    const loan_message *loan = record->loan;
    Library__Events__V1__LoanRenewed body = LIBRARY__EVENTS__V1__LOAN_RENEWED__INIT;
    body.loan_id = loan->loan_id;
    body.user_id = loan->user_id;
    body.book_id = loan->book_id;
    body.due_time = loan->due_time;
    body.renewal_count = loan->renewal_count;
    body.borrow_time = loan->borrow_time;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED;
    e.loan_renewed = &body;
    return subject_id ? publish_step(connection, record, subject_id, 0, &e, st)
                      : publish_renewal_step(connection, record, attempt, &e, st);
}

status_code saga_publish_renewed(nats_connection *connection, const loan_record *record, uint32_t attempt,
                                 status *st) {
    return publish_renewed_as(connection, record, NULL, attempt, st);
}

/* An ACTIVE loan unchanged for half the retention is announced again, as it now is
 * (LoanActivated, and LoanRenewed and LoanOverdue when they apply), under ids of their own
 * ("<loan id>-a<ms>"), so the event stream, which keeps RETENTION, always holds what a
 * rebuilt page needs of every open loan. Nothing else acts on these three events. */
static status_code announce_again(nats_connection *connection, const loan_record *record, int64_t now_ms,
                                  status *st) {
    char subject_id[EVENT_ID_MAX];
    snprintf(subject_id, sizeof subject_id, "%.64s-a%lld", record->loan->loan_id, (long long)now_ms);
    status_code code = publish_activated(connection, record, subject_id, st);
    if (code == STATUS_OK && record->loan->renewal_count > 0) {
        snprintf(subject_id, sizeof subject_id, "%.64s-n%d-a%lld", record->loan->loan_id,
                 (int)record->loan->renewal_count, (long long)now_ms);
        code = publish_renewed_as(connection, record, subject_id, 0, st);
    }
    if (code == STATUS_OK && record->overdue_published) {
        snprintf(subject_id, sizeof subject_id, "%.64s-o-a%lld", record->loan->loan_id, (long long)now_ms);
        code = publish_overdue_as(connection, record, subject_id, st);
    }
    return code;
}

/* --- metrics -------------------------------------------------------------------------------- */

static const char *const loan_outcomes[] = {"requested", "activated", "canceled", "returned", "overdue",
                                            "renewed"};
enum { OUTCOME_COUNT = sizeof loan_outcomes / sizeof loan_outcomes[0] };
static metric_series *loans_by_outcome[OUTCOME_COUNT];
static metric_series *saga_seconds[2]; /* activated, canceled */
static metric_series *open_loans_gauge;
static metric_series *forgotten_loans, *forgotten_holds;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_register(void) {
    metric_family *loans = metrics_counter("library_loans_total", "Loans reaching each step of the saga.",
                                           (const char *[]){"outcome", NULL});
    for (int i = 0; i < OUTCOME_COUNT; i++)
        loans_by_outcome[i] = metrics_series(loans, (const char *[]){loan_outcomes[i], NULL});
    metric_family *seconds = metrics_histogram(
        "library_saga_duration_seconds",
        "Time from BorrowBook storing a loan to lending learning its outcome.",
        (const char *[]){"outcome", NULL}, metrics_duration_buckets, metrics_duration_bucket_count);
    saga_seconds[0] = metrics_series(seconds, (const char *[]){"activated", NULL});
    saga_seconds[1] = metrics_series(seconds, (const char *[]){"canceled", NULL});
    open_loans_gauge = metrics_series(
        metrics_gauge("library_reconciler_open_loans",
                      "Loans the reconciler keeps in view: PENDING, ACTIVE, or RETURNED until the copy is back.",
                      (const char *[]){NULL}),
        (const char *[]){NULL});
    metric_family *forgotten = metrics_counter(
        "library_lending_forgotten_total", "Settled loans and holds forgotten once their retention was over.",
        (const char *[]){"kind", NULL});
    forgotten_loans = metrics_series(forgotten, (const char *[]){"loan", NULL});
    forgotten_holds = metrics_series(forgotten, (const char *[]){"hold", NULL});
}

void saga_count_loan(const char *outcome) {
    pthread_once(&metrics_once, metrics_register);
    for (int i = 0; i < OUTCOME_COUNT; i++)
        if (strcmp(loan_outcomes[i], outcome) == 0)
            metric_add(loans_by_outcome[i], 1);
}

/* The saga of this loan just decided: count it and how long it took. */
static void record_outcome(const loan_record *record) {
    bool activated = record->loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
    saga_count_loan(activated ? "activated" : "canceled");
    const Google__Protobuf__Timestamp *start = record->loan->borrow_time;
    if (start) {
        double seconds = (double)timestamp_now_ms() / 1000 - ((double)start->seconds + start->nanos / 1e9);
        metric_observe(saga_seconds[activated ? 0 : 1], seconds > 0 ? seconds : 0);
    }
}

/* --- consuming the catalog's answers ------------------------------------------------------ */

typedef struct outcome_job {
    bool reserved;
    bool changed_state;
} outcome_job;

static status_code apply_outcome(void *arg, arena *a, loan_record *record, bool *changed, status *st) {
    outcome_job *job = arg;
    loan_message *loan = record->loan;
    loan_state now = lending_after_reservation((loan_state)loan->status, job->reserved);
    *changed = now != (loan_state)loan->status;
    job->changed_state = *changed;
    if (*changed) {
        loan->status = (Library__Lending__V1__LoanStatus)now;
        if (now == LOAN_CANCELED)
            loan->cancel_reason = "OUT_OF_STOCK";
        record->update_time_ms = timestamp_now_ms();
    }
    (void)a;
    (void)st;
    return STATUS_OK;
}

typedef struct user_job {
    const char *loan_id;
    loan_state state; /* the loan's state now: open states are kept, others removed */
    int64_t return_seconds; /* a RETURNED loan's return time, which fixes its fine */
} user_job;

static status_code apply_user(void *arg, arena *a, user_record *record, bool *changed, status *st) {
    user_job *job = arg;
    bool fixed = false;
    if (job->state == LOAN_RETURNED &&
        account_fix(a, record, job->loan_id, job->return_seconds, timestamp_now_ms(), &fixed, st) != STATUS_OK)
        return st->code;
    *changed = user_record_follow(record, job->loan_id, job->state) || fixed;
    return STATUS_OK;
}

/* The user record follows the loan (a settled loan frees its slot, a late return fixes its
 * fine), and the account's events go out. */
static status_code sync_user(lending_saga *saga, arena *a, const loan_record *record, status *st) {
    const loan_message *loan = record->loan;
    user_job job = {.loan_id = loan->loan_id, .state = (loan_state)loan->status,
                    .return_seconds = loan->return_time ? loan->return_time->seconds : timestamp_now_ms() / 1000};
    user_record *user = NULL;
    status_code code = loan_store_update_user(saga->store, loan->user_id, a, apply_user, &job, &user, st);
    if (code == STATUS_OK && user->n_account_outbox > 0)
        code = account_publish(saga->store, saga->connection, a, loan->user_id, user, st);
    return code;
}

status_code lending_saga_sync_user(lending_saga *saga, arena *a, const loan_record *record, status *st) {
    return sync_user(saga, a, record, st);
}

static status_code apply_due(void *arg, arena *a, user_record *record, bool *changed, status *st) {
    const loan_record *renewed = arg;
    const loan_message *loan = renewed->loan;
    *changed = false;
    if (loan->due_time == NULL)
        return STATUS_OK;
    /* A late loan's fine so far is carried before its due time moves on. */
    bool carried = false;
    if (account_carry(a, record, loan->loan_id, renewed->update_time_ms / 1000, loan->due_time->seconds,
                      renewed->fine_terms, timestamp_now_ms(), &carried, st) != STATUS_OK)
        return st->code;
    *changed = user_record_extend_due(record, loan->loan_id, loan->due_time->seconds, renewed->fine_terms) ||
               carried;
    return STATUS_OK;
}

static status_code clear_renewal_unpublished(void *arg, arena *a, loan_record *record, bool *changed,
                                             status *st) {
    const int32_t *published = arg;
    (void)a;
    (void)st;
    /* a newer renewal since is announced by whoever made it */
    *changed = record->renewal_unpublished && record->loan->renewal_count == *published;
    if (*changed)
        record->renewal_unpublished = false;
    return STATUS_OK;
}

status_code lending_saga_announce_renewal(lending_saga *saga, arena *a, const loan_record *record,
                                          uint32_t attempt, status *st) {
    /* The user record first: its due time is what the overdue block reads, and a reader who
     * renewed must not stay blocked by the old one. */
    user_record *user = NULL;
    status_code code = loan_store_update_user(saga->store, record->loan->user_id, a, apply_due,
                                              (void *)record, &user, st);
    if (code == STATUS_OK && user->n_account_outbox > 0)
        code = account_publish(saga->store, saga->connection, a, record->loan->user_id, user, st);
    if (code == STATUS_OK)
        code = saga_publish_renewed(saga->connection, record, attempt, st);
    int32_t published = record->loan->renewal_count;
    if (code == STATUS_OK && record->renewal_unpublished)
        code = loan_store_update(saga->store, record->loan->loan_id, a, clear_renewal_unpublished,
                                 &published, NULL, st);
    return code;
}

static status_code confirm_release(void *arg, arena *a, loan_record *record, bool *changed, status *st) {
    (void)arg;
    (void)a;
    (void)st;
    *changed = !record->release_confirmed;
    record->release_confirmed = true;
    return STATUS_OK;
}

static status_code handle_reservation(lending_saga *saga, arena *a, const char *loan_id, bool reserved,
                                      const char *hold_id, status *st) {
    outcome_job job = {.reserved = reserved};
    loan_record *record = NULL;
    status_code code = loan_store_update(saga->store, loan_id, a, apply_outcome, &job, &record, st);
    if (code == STATUS_NOT_FOUND)
        return STATUS_OK; /* not a loan of ours any more: nothing to do */
    if (code != STATUS_OK)
        return code;
    if (reserved && record->loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED) {
        /* A late reservation for a loan already canceled: give the copy straight back. A hold
         * whose set-aside copy it took is over too (the copy goes to the next reader). */
        LOG_WARN("loan %s was canceled but the catalog reserved a copy; releasing it", loan_id);
        if (hold_id != NULL && hold_id[0] != '\0' && holds_lost(saga->store, a, hold_id, st) != STATUS_OK)
            return st->code;
        return saga_publish_returned(saga->connection, record, 0, st);
    }
    if (job.changed_state)
        record_outcome(record);
    code = sync_user(saga, a, record, st);
    /* The hold is FULFILLED (and the reader's hold slot free) before LoanActivated wakes the
     * BorrowBook waiting for it, so the reader who sees the loan sees the hold done too. */
    if (code == STATUS_OK && hold_id != NULL && hold_id[0] != '\0')
        code = holds_fulfil(saga->store, saga->connection, a, hold_id, loan_id, st);
    if (code == STATUS_OK)
        code = publish_outcome(saga->connection, record, st);
    return code;
}

/* The loan a CopyReleased answers, settled (RETURNED or CANCELED) as it must be to have been
 * released: from the loan index when it shows it settled (both states are final, and their
 * fields never change after), else from the bucket. */
static status_code released_loan(lending_saga *saga, arena *a, const char *loan_id, loan_record **out,
                                 status *st) {
    loan_message *loan = NULL;
    if (loan_store_find_loan(saga->store, loan_id, a, &loan) &&
        (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED ||
         loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED)) {
        loan_record *record = (void *)arena_new_message(a, &library__lending__internal__loan_record__descriptor);
        if (record == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        record->loan = loan;
        *out = record;
        return STATUS_OK;
    }
    return loan_store_get(saga->store, loan_id, a, out, st);
}

/* A RETURNED loan's user record was synced before its LoanReturned went out (ReturnBook and
 * the reconciler publish it only after sync_user succeeded), so only a CANCELED loan's (a
 * late reservation given back) is synced here; a stray entry left anyway is the user
 * reconciler's. */
static status_code handle_release(lending_saga *saga, arena *a, const char *loan_id, status *st) {
    loan_record *record = NULL;
    status_code code = released_loan(saga, a, loan_id, &record, st);
    if (code == STATUS_NOT_FOUND)
        return STATUS_OK;
    if (code != STATUS_OK)
        return code;
    if (record->loan->status != LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED)
        code = sync_user(saga, a, record, st);
    if (code == STATUS_OK)
        code = loan_store_update(saga->store, loan_id, a, confirm_release, NULL, NULL, st);
    return code;
}

static status_code on_catalog_event(void *arg, const event *e, uint64_t sequence, status *st) {
    (void)sequence;
    lending_saga *saga = arg;
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    status_code code = STATUS_OK;
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RESERVED:
        code = handle_reservation(saga, a, e->copy_reserved->loan_id, true, e->copy_reserved->hold_id, st);
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_OUT_OF_STOCK:
        code = handle_reservation(saga, a, e->out_of_stock->loan_id, false, NULL, st);
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RELEASED:
        code = handle_release(saga, a, e->copy_released->loan_id, st);
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED:
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY:
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED:
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED:
        code = holds_follow_catalog(saga->store, saga->connection, a, e, st);
        break;
    default:
        break;
    }
    arena_destroy(a);
    return code;
}

/* --- waiting for outcomes ----------------------------------------------------------------- */

/* LoanActivated or LoanCanceled, from whichever replica decided the loan: the handler waiting
 * for it, if it waits on this replica, answers now. */
static void on_outcome(void *closure, const uint8_t *data, size_t size) {
    lending_saga *saga = closure;
    event *e = library__events__v1__event__unpack(NULL, size, data);
    bool outcome = e != NULL && (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED ||
                                 e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED);
    if (outcome && e->correlation_id != NULL) {
        pthread_mutex_lock(&saga->lock);
        for (saga_waiter *w = saga->waiters; w != NULL; w = w->next)
            if (strcmp(w->loan_id, e->correlation_id) == 0) {
                w->done = true;
                pthread_cond_signal(&w->decided);
            }
        pthread_mutex_unlock(&saga->lock);
    }
    if (e != NULL)
        library__events__v1__event__free_unpacked(e, NULL);
}

saga_waiter *lending_saga_watch(lending_saga *saga, const char *loan_id) {
    saga_waiter *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    snprintf(w->loan_id, sizeof w->loan_id, "%s", loan_id);
    pthread_cond_init(&w->decided, NULL);
    pthread_mutex_lock(&saga->lock);
    w->next = saga->waiters;
    saga->waiters = w;
    pthread_mutex_unlock(&saga->lock);
    return w;
}

bool lending_saga_wait(lending_saga *saga, saga_waiter *w, int64_t timeout_ms) {
    if (w == NULL)
        return false;
    struct timespec until = timestamp_deadline(timeout_ms);
    pthread_mutex_lock(&saga->lock);
    while (!w->done && pthread_cond_timedwait(&w->decided, &saga->lock, &until) == 0) {
    }
    bool done = w->done;
    pthread_mutex_unlock(&saga->lock);
    return done;
}

void lending_saga_unwatch(lending_saga *saga, saga_waiter *w) {
    if (w == NULL)
        return;
    pthread_mutex_lock(&saga->lock);
    for (saga_waiter **link = &saga->waiters; *link != NULL; link = &(*link)->next) {
        if (*link == w) {
            *link = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&saga->lock);
    pthread_cond_destroy(&w->decided);
    free(w);
}

/* --- the reconciler and the overdue sweeper ----------------------------------------------- */

typedef struct overdue_mark {
    int32_t renewal_count; /* of the record whose due time LoanOverdue announced */
    bool marked;
} overdue_mark;

static status_code mark_overdue(void *arg, arena *a, loan_record *record, bool *changed, status *st) {
    overdue_mark *mark = arg;
    (void)a;
    (void)st;
    /* A renewal since the announcement moved the due time: the flag stays down, so the new
     * due time is announced when it passes. */
    *changed = !record->overdue_published && record->loan->renewal_count == mark->renewal_count;
    mark->marked = *changed; /* the last attempt's answer is the one stored */
    if (*changed)
        record->overdue_published = true;
    return STATUS_OK;
}

/* The loan was announced again at *now_ms: its last change is then. */
static status_code mark_announced(void *arg, arena *a, loan_record *record, bool *changed, status *st) {
    (void)a;
    (void)st;
    const int64_t *now_ms = arg;
    *changed = record->update_time_ms < *now_ms;
    if (*changed)
        record->update_time_ms = *now_ms;
    return STATUS_OK;
}

/* Redoes the unfinished step of one loan, if it has one. */
static void reconcile_loan(lending_saga *saga, arena *a, const char *loan_id, int64_t now) {
    loan_record *record = NULL;
    status st;
    if (loan_store_get(saga->store, loan_id, a, &record, &st) != STATUS_OK)
        return;
    const loan_message *loan = record->loan;
    int64_t age = now - record->update_time_ms;
    bool stale = age >= saga->options.reconcile_after_ms;
    /* A step still unanswered after the same-id republish may have had its answer lost (a
     * JetStream replica set that diverged in a partition, nats-server 2.9): a new attempt,
     * with ids of its own, gets a new answer (docs/decisions.md, "Storage"). */
    uint32_t attempt = events_attempt_for_age(age, saga->options.reconcile_after_ms);
    status_code code = STATUS_OK;
    if (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING && stale) {
        LOG_INFO("loan %s is still pending; announcing LoanRequested again (attempt %u)", loan_id, attempt);
        code = saga_publish_requested(saga->connection, record, attempt, &st);
    } else if (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED &&
               !record->release_confirmed && stale) {
        LOG_INFO("loan %s was returned but its copy is not released yet; announcing the return again "
                 "(attempt %u)", loan_id, attempt);
        code = sync_user(saga, a, record, &st);
        if (code == STATUS_OK)
            code = saga_publish_returned(saga->connection, record, attempt, &st);
    } else if (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE &&
               !record->overdue_published && loan->due_time &&
               lending_is_overdue(LOAN_ACTIVE, loan->due_time->seconds, now / 1000)) {
        overdue_mark mark = {.renewal_count = loan->renewal_count};
        code = publish_overdue(saga->connection, record, &st);
        if (code == STATUS_OK)
            code = loan_store_update(saga->store, loan_id, a, mark_overdue, &mark, NULL, &st);
        if (code == STATUS_OK && mark.marked)
            saga_count_loan("overdue");
    }
    int64_t announce_after = saga->options.retention_ms / 2;
    if (code == STATUS_OK && announce_after > 0 && loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE &&
        age >= announce_after) {
        code = announce_again(saga->connection, record, now, &st);
        if (code == STATUS_OK)
            code = loan_store_update(saga->store, loan_id, a, mark_announced, &now, NULL, &st);
    }
    if (code == STATUS_OK && record->renewal_unpublished && stale) {
        LOG_INFO("loan %s was renewed but LoanRenewed may not be out; announcing it again (attempt %u)",
                 loan_id, attempt);
        code = lending_saga_announce_renewal(saga, a, record, attempt, &st);
    }
    if (code != STATUS_OK)
        LOG_WARN("reconciling loan %s: %s", loan_id, st.message);
}

/* A loan the user record names but the store does not have after RECONCILE_AFTER: BorrowBook
 * died between the two writes, or its store of the loan is still on the way (a JetStream
 * cluster electing a leader takes seconds). The reconciler claims the key with a CANCELED
 * INTERRUPTED record, by create: if BorrowBook's create comes later it finds that record and
 * answers it, and if BorrowBook got there first the claim fails and the loan goes on. Either
 * way one of them wins, and the slot is freed only for a loan that can never be stored. (A
 * drop without the claim freed the slot of a loan that was then stored: an ACTIVE loan that
 * ListLoans no longer showed.) */
static status_code claim_interrupted(lending_saga *saga, arena *a, const char *user_id,
                                     const char *loan_id, loan_record **out, status *st) {
    loan_record *record = (void *)arena_new_message(a, &library__lending__internal__loan_record__descriptor);
    loan_message *loan = (void *)arena_new_message(a, &library__lending__v1__loan__descriptor);
    user_record *user = NULL;
    if (record == NULL || loan == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    loan->loan_id = (char *)loan_id;
    loan->user_id = (char *)user_id;
    const user_open_loan *entry = loan_store_get_user(saga->store, user_id, a, &user, st) == STATUS_OK
                                      ? user_record_open_entry(user, loan_id)
                                      : NULL;
    if (entry != NULL)
        loan->book_id = entry->book_id;
    loan->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED;
    loan->cancel_reason = "INTERRUPTED";
    record->loan = loan;
    record->update_time_ms = timestamp_now_ms();
    status_code code = loan_store_create(saga->store, record, a, st);
    if (code == STATUS_ALREADY_EXISTS) /* BorrowBook stored it after all */
        return loan_store_get(saga->store, loan_id, a, out, st);
    if (code != STATUS_OK)
        return code;
    LOG_WARN("loan %s of a user record was never stored; recorded as CANCELED INTERRUPTED", loan_id);
    *out = record;
    return publish_outcome(saga->connection, record, st); /* mypage lists it as ListLoans does */
}

/* A user record can list a loan that was settled without the record hearing of it, or one
 * that was never stored (claim_interrupted): such an entry would hold a slot forever.
 * loan_ids are the entries the index has seen stray for RECONCILE_AFTER; each is read again
 * here and synced once settled. */
static void reconcile_user(lending_saga *saga, arena *a, const char *user_id, const char *const *loan_ids,
                           size_t count) {
    for (size_t i = 0; i < count; i++) {
        loan_record *record = NULL;
        status st;
        status_code code = loan_store_get(saga->store, loan_ids[i], a, &record, &st);
        if (code == STATUS_NOT_FOUND)
            code = claim_interrupted(saga, a, user_id, loan_ids[i], &record, &st);
        /* A CANCELED loan is announced again before its slot is freed: a claim whose
         * LoanCanceled failed to publish has no other chance (mypage would miss the loan). The
         * id is the first announcement's, so a stored one is not doubled. */
        if (code == STATUS_OK && record->loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED)
            code = publish_outcome(saga->connection, record, &st);
        if (code == STATUS_OK && (record->loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED ||
                                  record->loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED))
            code = sync_user(saga, a, record, &st);
        if (code != STATUS_OK)
            LOG_WARN("reconciling the user record of loan %s: %s", loan_ids[i], st.message);
    }
}

/* The reconciler's watch (the loan store's, read a second time) is renewed this often, and
 * each fresh watch delivers every key again. */
#define REWATCH_MS LOAN_STORE_REWATCH_MS

/* Queues a settled record to be forgotten RETENTION after its last change. One due later than
 * two renewals of the watch from now is left to a later renewal, which delivers it again: the
 * queue holds what comes due soon, not every settled record of the retention. */
static bool queue_settled(lending_saga *saga, int64_t changed_ms, retention_kind kind, const char *id) {
    int64_t due = changed_ms + saga->options.retention_ms;
    if (due > timestamp_now_ms() + 2 * REWATCH_MS)
        return true;
    return retention_queue_push(saga->settled, due, kind, id);
}

/* The sooner of two times where 0 is never. */
static int64_t sooner(int64_t x, int64_t y) {
    return x == 0 ? y : y == 0 ? x : x < y ? x : y;
}

static bool loan_settled(const loan_record *record) {
    return lending_is_settled((loan_state)record->loan->status, record->release_confirmed);
}

/* --- final events announced again ----------------------------------------------------------- */

/* A settled loan's final event (LoanReturned or LoanCanceled) is announced again once due, in
 * an EventsRestated that only mypage reads: a stream replica set that diverged in a partition
 * (nats-server 2.9) can lose the first announcement for mypage's consumer while the catalog's
 * saw it, and nothing else would tell mypage the loan ended (docs/decisions.md, "A final event
 * mypage missed is announced again"). */

/* Events in one EventsRestated (about 250 bytes each), and queued at most: past that (NATS
 * away for long) a settled loan is not restated. */
enum { RESTATED_PER_MESSAGE = 256, RESTATED_MAX = 65536 };

static bool has_final_event(const loan_message *loan) {
    return loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED ||
           (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED && loan->return_time != NULL);
}

/* The loan's final event (has_final_event) as first announced, its time the loan's own;
 * packed into a. NULL when out of memory. */
static uint8_t *final_event(arena *a, const loan_record *record, size_t *size) {
    const loan_message *loan = record->loan;
    event e;
    Library__Events__V1__LoanReturned returned;
    Library__Events__V1__LoanCanceled canceled;
    Google__Protobuf__Timestamp *when;
    if (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED) {
        returned_event(loan, &e, &returned);
        when = loan->return_time;
    } else {
        canceled_event(loan, &e, &canceled);
        when = timestamp_from_ms(a, record->update_time_ms);
    }
    e.event_id = arena_sprintf(a, "%s-%s-restated", events_kind(e.body_case), loan->loan_id);
    e.correlation_id = loan->loan_id;
    e.traceparent = record->traceparent ? record->traceparent : "";
    e.occur_time = when;
    return e.event_id && when ? arena_pack(a, &e.base, size) : NULL;
}

/* Queues a loan that settled to have its final event announced again RECONCILE_AFTER later.
 * One that settled long before (a fresh watch delivers every key again) is left alone. False
 * when out of memory. */
static bool queue_restatement(lending_saga *saga, arena *a, const loan_record *record) {
    int64_t due = record->update_time_ms + saga->options.reconcile_after_ms;
    if (due < timestamp_now_ms() - saga->options.reconcile_after_ms || !has_final_event(record->loan))
        return true;
    size_t size = 0;
    uint8_t *packed = final_event(a, record, &size);
    return packed != NULL && restated_push(saga->restated, due, packed, size);
}

/* Announces the final events that are due, RESTATED_PER_MESSAGE to a message. Every replica
 * restates what it saw settle: two replicas that gather the same loans send the same event id,
 * and JetStream keeps one. A message that fails stays queued for the next round. */
static void restate_due(lending_saga *saga, arena *a, int64_t now) {
    ProtobufCBinaryData *batch = arena_alloc(a, RESTATED_PER_MESSAGE * sizeof *batch);
    size_t count;
    while (batch != NULL && !atomic_load(&saga->stopping) &&
           (count = restated_due(saga->restated, now, batch, RESTATED_PER_MESSAGE)) > 0) {
        Library__Events__V1__EventsRestated body = LIBRARY__EVENTS__V1__EVENTS_RESTATED__INIT;
        body.events = batch;
        body.n_events = count;
        event e = LIBRARY__EVENTS__V1__EVENT__INIT;
        e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_EVENTS_RESTATED;
        e.events_restated = &body;
        /* named by its first and last loan and its size: the same batch from two replicas */
        event *first = (event *)arena_unpack(a, &library__events__v1__event__descriptor, batch[0].data, batch[0].len);
        event *last = (event *)arena_unpack(a, &library__events__v1__event__descriptor, batch[count - 1].data,
                                            batch[count - 1].len);
        char *subject_id = first && last ? arena_sprintf(a, "%.40s-%.40s-%zu", first->correlation_id,
                                                         last->correlation_id, count)
                                         : NULL;
        status st;
        status_code code = subject_id ? events_publish_step(saga->connection, &e, subject_id, 0, "", NULL, &st)
                                      : status_set(&st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        if (code != STATUS_OK) {
            LOG_WARN("announcing %zu loans' final events again: %s; trying in the next round", count, st.message);
            return;
        }
        restated_drop(saga->restated, count);
    }
}

/* The index of what is open is fed by a watch on the whole bucket: at start it delivers the
 * newest value of every key, then each change. Keys are "loan.<id>" and "user.<key>". False
 * when out of memory: the index missed the change. */
static bool index_entry(lending_saga *saga, arena *a, const kv_change *change) {
    const char *key = change->key;
    bool deleted = change->deleted;
    const void *data = change->value;
    size_t size = change->size;
    bool stored = true;
    if (strncmp(key, "loan.", 5) == 0) {
        const loan_record *record = deleted ? NULL
            : (const loan_record *)arena_unpack(a, &library__lending__internal__loan_record__descriptor, data, size);
        if (record == NULL || record->loan == NULL) {
            stored = open_loans_set_loan(saga->open, key + 5, NULL);
        } else {
            open_loan_facts facts = {
                .state = (loan_state)record->loan->status,
                .update_time_ms = record->update_time_ms,
                .due_seconds = record->loan->due_time ? record->loan->due_time->seconds : 0,
                .overdue_published = record->overdue_published,
                .release_confirmed = record->release_confirmed,
                .renewal_unpublished = record->renewal_unpublished,
            };
            stored = open_loans_set_loan(saga->open, key + 5, &facts);
            if (stored && saga->options.retention_ms > 0 && loan_settled(record))
                stored = queue_settled(saga, record->update_time_ms, RETENTION_LOAN, key + 5);
            if (stored && loan_settled(record))
                stored = queue_restatement(saga, a, record);
        }
    } else if (strncmp(key, "hold.", 5) == 0) {
        const hold_record *record = deleted ? NULL
            : (const hold_record *)arena_unpack(a, &library__lending__internal__hold_record__descriptor, data, size);
        open_loan_facts facts = {0};
        bool open = record != NULL && record->hold != NULL && holds_index_facts(record, &facts);
        stored = open_loans_set_loan(saga->open_holds, key + 5, open ? &facts : NULL);
        if (stored && !open && record != NULL && record->hold != NULL && saga->options.retention_ms > 0)
            stored = queue_settled(saga, record->update_time_ms, RETENTION_HOLD, key + 5);
    } else if (strncmp(key, "user.", 5) == 0) {
        const user_record *user = deleted ? NULL
            : (const user_record *)arena_unpack(a, &library__lending__internal__user_record__descriptor, data, size);
        size_t count = user ? user->n_open_loans : 0;
        const char **ids = count ? arena_alloc(a, count * sizeof *ids) : NULL;
        if (count && ids == NULL)
            return false;
        for (size_t i = 0; i < count; i++)
            ids[i] = user->open_loans[i]->loan_id;
        stored = open_loans_set_user(saga->open, key + 5, ids, count);
        size_t holds = user ? user->n_open_holds : 0;
        const char **hold_ids = holds ? arena_alloc(a, holds * sizeof *hold_ids) : NULL;
        if (holds && hold_ids == NULL)
            return false;
        for (size_t i = 0; i < holds; i++)
            hold_ids[i] = user->open_holds[i]->hold_id;
        stored = stored && open_loans_set_user(saga->open_holds, key + 5, hold_ids, holds);
        int64_t account_next = user ? sooner(account_next_visit_ms(user, saga->options.reconcile_after_ms),
                                             account_refresh_visit_ms(user, saga->options.retention_ms))
                                    : 0;
        stored = stored && open_loans_set_account(saga->open, key + 5, account_next);
    }
    return stored;
}

typedef struct round {
    lending_saga *saga;
    arena *a;
    int64_t now;
} round;

static void visit_loan(void *arg, const char *loan_id) {
    round *r = arg;
    if (!atomic_load(&r->saga->stopping))
        reconcile_loan(r->saga, r->a, loan_id, r->now);
    arena_reset(r->a);
}

/* The user id a user record's key names (base64url), from the round's arena; NULL when the
 * key does not decode or the saga is stopping. */
static char *round_user(round *r, const char *user_key) {
    uint8_t *decoded = NULL;
    size_t size = 0;
    if (atomic_load(&r->saga->stopping) || !text_base64url_decode(r->a, user_key, &decoded, &size))
        return NULL;
    return arena_strndup(r->a, (const char *)decoded, size);
}

static void visit_user(void *arg, const char *user_key, const char *const *loan_ids, size_t count) {
    round *r = arg;
    char *user_id = round_user(r, user_key);
    if (user_id)
        reconcile_user(r->saga, r->a, user_id, loan_ids, count);
    arena_reset(r->a);
}

static void visit_hold_user(void *arg, const char *user_key, const char *const *hold_ids, size_t count) {
    round *r = arg;
    char *user_id = round_user(r, user_key);
    if (user_id)
        holds_reconcile_user(r->saga->store, r->saga->connection, r->a, user_id, hold_ids, count);
    arena_reset(r->a);
}

static void visit_hold(void *arg, const char *hold_id) {
    round *r = arg;
    if (!atomic_load(&r->saga->stopping))
        holds_reconcile(r->saga->store, r->saga->connection, r->a, hold_id, r->now, r->saga->options.reconcile_after_ms,
                        r->saga->options.retention_ms / 2);
    arena_reset(r->a);
}

static void visit_account(void *arg, const char *user_key) {
    round *r = arg;
    char *user_id = round_user(r, user_key);
    if (user_id)
        account_reconcile(r->saga->store, r->saga->connection, r->a, user_id, r->now, r->saga->options.retention_ms);
    arena_reset(r->a);
}

/* --- retention: settled loans and holds forgotten ----------------------------------------- */

/* Records forgotten in one round at most, so a round stays short after a long outage. */
#define FORGET_PER_ROUND 1000

typedef struct forget_change {
    const char *id;
    retention_kind kind;
    int64_t now_seconds;
} forget_change;

static status_code forget_from_user(void *arg, arena *a, user_record *record, bool *changed, status *st) {
    forget_change *forget = arg;
    (void)a;
    return forget->kind == RETENTION_LOAN
               ? user_record_forget_loan(record, forget->id, forget->now_seconds, changed, st)
               : user_record_forget_hold(record, forget->id, changed, st);
}

static user_list list_of(retention_kind kind) {
    return kind == RETENTION_LOAN ? USER_LOANS : USER_HOLDS;
}

static status_code forget_from_history(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st) {
    forget_change *forget = arg;
    (void)a;
    (void)st;
    *changed = user_history_forget((user_history *)record, list_of(forget->kind), forget->id);
    return STATUS_OK;
}

/* The record's retention is over when it is settled and its last change is RETENTION old; then it
 * leaves its user's history first and the bucket second, so a crash in between leaves a record
 * the next watch queues again. A loan with a fine still owed stays, and is looked at again a
 * tenth of the retention later (and at each renewal of the watch): a fine may stay unpaid for
 * months, and is not worth two reads every RECONCILE_AFTER. A failed read or write is tried
 * again after RECONCILE_AFTER. */
static void forget_settled(round *r, retention_kind kind, const char *id) {
    lending_saga *saga = r->saga;
    status st;
    status_code code;
    const char *user_id = NULL;
    int64_t changed_ms = 0;
    if (kind == RETENTION_LOAN) {
        loan_record *record = NULL;
        code = loan_store_get(saga->store, id, r->a, &record, &st);
        if (code == STATUS_NOT_FOUND || (code == STATUS_OK && !loan_settled(record)))
            return; /* gone already, or open again: a later change queues it */
        if (code == STATUS_OK)
            user_id = record->loan->user_id, changed_ms = record->update_time_ms;
    } else {
        hold_record *record = NULL;
        code = loan_store_get_hold(saga->store, id, r->a, &record, &st);
        if (code == STATUS_NOT_FOUND)
            return;
        if (code == STATUS_OK) {
            open_loan_facts facts;
            if (holds_index_facts(record, &facts))
                return;
            user_id = record->hold->user_id, changed_ms = record->update_time_ms;
        }
    }
    int64_t due = changed_ms + saga->options.retention_ms;
    if (code == STATUS_OK && due > r->now) {
        retention_queue_push(saga->settled, due, kind, id); /* changed since it was queued */
        return;
    }
    forget_change forget = {.id = id, .kind = kind, .now_seconds = r->now / 1000};
    user_record *user = NULL;
    if (code == STATUS_OK)
        code = loan_store_update_user(saga->store, user_id, r->a, forget_from_user, &forget, &user, &st);
    if (code == STATUS_OK && user_record_archive_may_hold(user, list_of(kind), id))
        code = loan_store_update_history(saga->store, user_id, r->a, forget_from_history, &forget, NULL, NULL,
                                         &st); /* and from the older part of the history */
    if (code == STATUS_OK)
        code = kind == RETENTION_LOAN ? loan_store_forget_loan(saga->store, id, &st)
                                      : loan_store_forget_hold(saga->store, id, &st);
    if (code == STATUS_OK) {
        metric_add(kind == RETENTION_LOAN ? forgotten_loans : forgotten_holds, 1);
        return;
    }
    int64_t again = saga->options.reconcile_after_ms;
    if (code == STATUS_FAILED_PRECONDITION && strcmp(st.reason, "FINE_OWED") == 0 &&
        saga->options.retention_ms / 10 > again)
        again = saga->options.retention_ms / 10;
    else if (code != STATUS_FAILED_PRECONDITION)
        LOG_WARN("forgetting %s %s after its retention: %s", kind == RETENTION_LOAN ? "loan" : "hold", id,
                 st.message);
    retention_queue_push(saga->settled, r->now + again, kind, id);
}

static void visit_settled(void *arg, retention_kind kind, const char *id) {
    round *r = arg;
    if (!atomic_load(&r->saga->stopping))
        forget_settled(r, kind, id);
    arena_reset(r->a);
}

static void reconcile_open(lending_saga *saga, arena *a) {
    round r = {.saga = saga, .a = a, .now = timestamp_now_ms()};
    open_loans_due(saga->open, r.now, saga->options.reconcile_after_ms, visit_loan, &r);
    open_loans_due(saga->open_holds, r.now, saga->options.reconcile_after_ms, visit_hold, &r);
    open_loans_users_due(saga->open_holds, r.now, saga->options.reconcile_after_ms, visit_hold_user, &r);
    open_loans_users_due(saga->open, r.now, saga->options.reconcile_after_ms, visit_user, &r);
    open_loans_accounts_due(saga->open, r.now, visit_account, &r);
    retention_queue_due(saga->settled, r.now, FORGET_PER_ROUND, visit_settled, &r);
    restate_due(saga, a, r.now);
    metric_set(open_loans_gauge, (double)open_loans_loan_count(saga->open));
}

/* Follows the bucket into the index and runs a round every RECONCILE_INTERVAL, once the
 * index holds every key. It reads the loan store's watch (loan_store_follow), which kv_follow
 * renews when it fails or outlived a NATS reconnect, and every REWATCH_MS too, so no missed
 * change is carried for long; each fresh watch starts the index over. While a round runs the
 * changes wait in the branch (16 MiB of them at most, then the store's index waits too). */

static void *reconciler_main(void *arg) {
    lending_saga *saga = arg;
    arena *a = arena_create(0);
    kv_follow *follow = loan_store_follow(saga->store);
    bool ready = false; /* the index holds every key's newest value */
    int64_t next_round = timestamp_monotonic_ms() + saga->options.reconcile_interval_ms;
    while (a && follow && !atomic_load(&saga->stopping)) {
        kv_change change;
        switch (kv_follow_next(follow, 100, &change)) {
        case KV_FOLLOW_RESTART:
            open_loans_clear(saga->open);
            open_loans_clear(saga->open_holds);
            retention_queue_clear(saga->settled);
            ready = false;
            break;
        case KV_FOLLOW_CAUGHT_UP:
            ready = true;
            break;
        case KV_FOLLOW_ENTRY:
            if (!index_entry(saga, a, &change))
                kv_follow_restart(follow); /* out of memory: the index missed a change */
            arena_reset(a);
            break;
        case KV_FOLLOW_IDLE:
        case KV_FOLLOW_STOPPED:
            break;
        }
        if (ready && timestamp_monotonic_ms() >= next_round && nats_connection_is_up(saga->connection)) {
            reconcile_open(saga, a);
            arena_reset(a);
            next_round = timestamp_monotonic_ms() + saga->options.reconcile_interval_ms;
        }
    }
    if (a == NULL || follow == NULL)
        LOG_ERROR("out of memory: the reconciler does not run");
    kv_follow_close(follow);
    arena_destroy(a);
    return NULL;
}

/* --- lifetime ----------------------------------------------------------------------------- */

status_code lending_saga_start(nats_connection *connection, loan_store *store,
                               const saga_options *options, lending_saga **out, status *st) {
    lending_saga *saga = calloc(1, sizeof *saga);
    if (saga == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    saga->connection = connection;
    saga->store = store;
    saga->options = *options;
    pthread_once(&metrics_once, metrics_register); /* the series show from the start */
    holds_metrics_register();
    pthread_mutex_init(&saga->lock, NULL);
    atomic_init(&saga->stopping, false);
    /* Only the two outcomes: every replica receives each one, so the other loan events (four
     * in a borrow and return) are not sent to every replica for nothing. */
    status_code code = nats_subscribe(connection, events_subject(LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED),
                                      on_outcome, saga, &saga->activated, st);
    if (code == STATUS_OK)
        code = nats_subscribe(connection, events_subject(LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED), on_outcome,
                              saga, &saga->canceled, st);
    if (code == STATUS_OK) {
        event_consumer_options consumer = {.durable = "lending", .filter_subject = EVENTS_COPY_SUBJECTS,
                                           .handler = on_catalog_event, .arg = saga,
                                           .ack_wait_ms = options->ack_wait_ms,
                                           .workers = options->event_workers};
        code = event_consumer_start(connection, &consumer, &saga->consumer, st);
    }
    if (code == STATUS_OK &&
        ((saga->open = open_loans_create()) == NULL || (saga->open_holds = open_loans_create()) == NULL ||
         (saga->settled = retention_queue_create()) == NULL ||
         (saga->restated = restated_create(RESTATED_MAX)) == NULL))
        code = status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (code == STATUS_OK) {
        open_loans_announce_every(saga->open, options->retention_ms / 2);
        open_loans_announce_every(saga->open_holds, options->retention_ms / 2);
    }
    if (code == STATUS_OK) {
        if (pthread_create(&saga->reconciler, NULL, reconciler_main, saga) == 0)
            saga->reconciler_running = true;
        else
            code = status_set(st, STATUS_INTERNAL, "THREAD", "cannot start the reconciler");
    }
    if (code != STATUS_OK) {
        lending_saga_stop(saga);
        return code;
    }
    *out = saga;
    return STATUS_OK;
}

void lending_saga_stop(lending_saga *saga) {
    if (saga == NULL)
        return;
    atomic_store(&saga->stopping, true);
    if (saga->reconciler_running)
        pthread_join(saga->reconciler, NULL);
    event_consumer_stop(saga->consumer);
    nats_subscription_close(saga->connection, saga->activated);
    nats_subscription_close(saga->connection, saga->canceled);
    open_loans_destroy(saga->open);
    open_loans_destroy(saga->open_holds);
    retention_queue_destroy(saga->settled);
    restated_destroy(saga->restated);
    pthread_mutex_destroy(&saga->lock);
    free(saga);
}
