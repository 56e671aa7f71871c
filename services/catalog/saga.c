/* saga.c - reserving and releasing copies for loans. */
#include "saga.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "decisions.h"
#include "events.h"
#include "field.h"
#include "log.h"
#include "timestamp.h"
#include <time.h>

struct catalog_saga {
    nats_connection *connection;
    book_store *store;
    catalog_saga_options options;
    event_consumer *consumer;
    pthread_t sweeper;
    bool sweeper_running;
    atomic_bool stopping;
};

static ssize_t find_string(char **list, size_t count, const char *value) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(list[i], value) == 0)
            return (ssize_t)i;
    return -1;
}

static status_code remember_decision(arena *a, book_record *record, const char *loan_id, bool reserved,
                                     const char *hold_id) {
    loan_decision *entry = (void *)arena_new_message(a, &library__catalog__internal__loan_decision__descriptor);
    if (entry == NULL)
        return STATUS_RESOURCE_EXHAUSTED;
    entry->loan_id = arena_strdup(a, loan_id);
    entry->reserved = reserved;
    entry->hold_id = hold_id ? arena_strdup(a, hold_id) : (char *)"";
    if (entry->loan_id == NULL || entry->hold_id == NULL ||
        !arena_append_kept(a, &record->recent_decisions, &record->n_recent_decisions, entry, DECISIONS_KEPT))
        return STATUS_RESOURCE_EXHAUSTED;
    return STATUS_OK;
}

static status_code touch(arena *a, book_record *record) {
    record->book->update_time = timestamp_now(a);
    return record->book->update_time ? STATUS_OK : STATUS_RESOURCE_EXHAUSTED;
}

static status_code add_loan_on_hand(arena *a, book_record *record, const char *loan_id) {
    char **loans = arena_alloc(a, (record->n_loans_on_hand + 1) * sizeof *loans);
    if (loans == NULL)
        return STATUS_RESOURCE_EXHAUSTED;
    if (record->n_loans_on_hand)
        memcpy(loans, record->loans_on_hand, record->n_loans_on_hand * sizeof *loans);
    loans[record->n_loans_on_hand] = arena_strdup(a, loan_id);
    record->loans_on_hand = loans;
    record->n_loans_on_hand++;
    return STATUS_OK;
}

/* A return gives the loan's copy back once: to the first WAITING hold, or to the shelf. */
static status_code decide_return(catalog_decision *job, arena *a, book_record *record, bool *changed,
                                 status *st) {
    ssize_t on_hand = find_string(record->loans_on_hand, record->n_loans_on_hand, job->loan_id);
    size_t outbox_before = record->n_outbox;
    if (on_hand >= 0) {
        record->loans_on_hand[on_hand] = record->loans_on_hand[record->n_loans_on_hand - 1];
        record->n_loans_on_hand--;
        record->book->available_copies++;
        *changed = true;
        if (holds_serve(a, record, &job->times, &job->hold_id, changed, st) != STATUS_OK ||
            holds_finish(a, record, outbox_before, st) != STATUS_OK)
            return st->code;
    }
    job->available = record->book->available_copies;
    return *changed && touch(a, record) != STATUS_OK
               ? status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory")
               : STATUS_OK;
}

status_code catalog_saga_decide(void *arg, arena *a, book_record *record, bool *changed,
                                status *st) {
    catalog_decision *job = arg;
    Library__Catalog__V1__Book *book = record->book;
    *changed = false;
    job->hold_id = NULL;
    if (!job->reserve)
        return decide_return(job, a, record, changed, st);
    job->need_archive = false;
    const loan_decision *known = decisions_find(record->recent_decisions, record->n_recent_decisions, job->loan_id);
    if (known == NULL && job->archive != NULL) {
        if (record->archive_revision > job->archive_revision) {
            job->need_archive = true; /* decisions moved since the archive was read */
            return STATUS_OK;
        }
        known = decisions_find(job->archive->decisions, job->archive->n_decisions, job->loan_id);
    }
    if (known != NULL) {
        job->reserved = known->reserved; /* asked before: same answer */
        job->hold_id = known->hold_id[0] ? known->hold_id : NULL;
        job->available = book->available_copies;
        return STATUS_OK;
    }
    if (find_string(record->loans_on_hand, record->n_loans_on_hand, job->loan_id) >= 0) {
        job->reserved = true;
        job->available = book->available_copies;
        return STATUS_OK;
    }
    if (job->archive == NULL && decisions_filter_may_hold(record->decided_filter, job->loan_id)) {
        job->need_archive = true; /* perhaps decided long ago: the archive says */
        return STATUS_OK;
    }
    /* The borrower's own set-aside copy first: nobody else may take it. */
    status taken = {.code = STATUS_OK};
    job->hold_id = job->user_id ? holds_take_for_loan(a, record, job->user_id, &taken) : NULL;
    if (taken.code != STATUS_OK) {
        *st = taken;
        return st->code;
    }
    job->reserved = job->hold_id != NULL || book->available_copies > 0;
    if (job->reserved) {
        if (add_loan_on_hand(a, record, job->loan_id) != STATUS_OK)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        if (job->hold_id == NULL)
            book->available_copies--;
    }
    if (remember_decision(a, record, job->loan_id, job->reserved, job->hold_id) != STATUS_OK ||
        touch(a, record) != STATUS_OK || holds_finish(a, record, record->n_outbox, st) != STATUS_OK)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    job->available = book->available_copies;
    *changed = true;
    return STATUS_OK;
}

/* A W3C traceparent as rpc_server makes them: "00-<32 hex>-<16 hex>-<2 hex>". */
static bool traceparent_well_formed(const char *value) {
    if (value == NULL || strlen(value) != 55)
        return false;
    for (size_t i = 0; i < 55; i++) {
        bool dash = i == 2 || i == 35 || i == 52;
        char c = value[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

status_code catalog_saga_check_event(const event *e, status *st) {
    const char *loan_id = NULL, *book_id = NULL;
    if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED) {
        loan_id = e->loan_requested->loan_id;
        book_id = e->loan_requested->book_id;
    } else if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED) {
        loan_id = e->loan_returned->loan_id;
        book_id = e->loan_returned->book_id;
    } else if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED) {
        if (field_check_id(e->hold_placed->hold_id, "hold_id", st) ||
            field_check_id(e->hold_placed->book_id, "book_id", st))
            return st->code;
        if (e->hold_placed->pickup_seconds < 0 || e->hold_placed->pickup_seconds > HOLDS_PICKUP_MAX_SECONDS)
            return status_set(st, STATUS_INVALID_ARGUMENT, "INVALID_PICKUP",
                              "pickup_seconds must be from 0 to %lld", (long long)HOLDS_PICKUP_MAX_SECONDS);
        return STATUS_OK;
    } else if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED) {
        return field_check_id(e->hold_canceled->hold_id, "hold_id", st) ||
                       field_check_id(e->hold_canceled->book_id, "book_id", st)
                   ? st->code
                   : STATUS_OK;
    } else {
        return STATUS_OK;
    }
    if (field_check_id(loan_id, "loan_id", st) || field_check_id(book_id, "book_id", st))
        return st->code;
    return STATUS_OK;
}

static event *answer_new(arena *a, const event *cause, event_type type, const char *loan_id) {
    event *e = (void *)arena_new_message(a, &library__events__v1__event__descriptor);
    Google__Protobuf__Timestamp *t = timestamp_now(a);
    if (e == NULL || t == NULL)
        return NULL;
    char event_id[EVENT_ID_MAX];
    if (!events_format_id(event_id, sizeof event_id, type, loan_id, cause->attempt))
        return NULL;
    /* The answer to a re-announced step has an id of its own, or a lost first answer would
     * stay deduplicated for the stream's whole duplicate window. */
    e->event_id = arena_strdup(a, event_id);
    e->attempt = cause->attempt;
    e->body_case = type; /* the caller sets the body */
    e->occur_time = t;
    e->correlation_id = (char *)loan_id;
    /* It becomes a NATS header of the answer: only a well-formed one is passed on. */
    e->traceparent = traceparent_well_formed(cause->traceparent) ? cause->traceparent : (char *)"";
    return e->event_id ? e : NULL;
}

static hold_times hold_times_now(const catalog_saga *saga) {
    return (hold_times){.now_ms = timestamp_now_ms(), .pickup_ms = saga->options.hold_pickup_ms};
}

/* --- the outbox of hold events ------------------------------------------------------------ */

typedef struct published {
    char *const *event_ids;
    size_t count;
} published;

static status_code remove_published(void *arg, arena *a, book_record *record, bool *changed, status *st) {
    published *done = arg;
    (void)a;
    (void)st;
    *changed = holds_outbox_remove(record, done->event_ids, done->count);
    return STATUS_OK;
}

status_code catalog_saga_publish_outbox(nats_connection *connection, book_store *store, arena *a,
                                        const book_record *record, status *st) {
    if (record == NULL || record->n_outbox == 0)
        return STATUS_OK;
    char **ids = arena_alloc(a, record->n_outbox * sizeof *ids);
    if (ids == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    size_t count = 0;
    status_code code = STATUS_OK;
    for (size_t i = 0; i < record->n_outbox && code == STATUS_OK; i++) {
        code = events_publish(connection, record->outbox[i], st);
        if (code == STATUS_OK)
            ids[count++] = record->outbox[i]->event_id;
    }
    if (count == 0)
        return code;
    published done = {.event_ids = ids, .count = count};
    status ignored;
    /* Published is published: a failure to take them out only means publishing them again
     * later, which the stream deduplicates. */
    if (book_store_update(store, record->book->book_id, a, remove_published, &done, NULL, &ignored) != STATUS_OK)
        LOG_WARN("published hold events of book %s stay in its outbox for now: %s", record->book->book_id,
                 ignored.message);
    return code;
}

/* --- holds -------------------------------------------------------------------------------- */

typedef struct hold_job {
    const event *cause;
    hold_times times;
} hold_job;

static status_code apply_hold_event(void *arg, arena *a, book_record *record, bool *changed, status *st) {
    hold_job *job = arg;
    size_t outbox_before = record->n_outbox;
    status_code code = job->cause->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED
        ? holds_place(a, record, job->cause->hold_placed, job->cause->attempt, &job->times, changed, st)
        : holds_release(a, record, job->cause->hold_canceled, job->cause->attempt, &job->times, changed, st);
    if (code != STATUS_OK)
        return code;
    if (*changed && (holds_finish(a, record, outbox_before, st) != STATUS_OK || touch(a, record) != STATUS_OK))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    return STATUS_OK;
}

static status_code on_hold_event(catalog_saga *saga, arena *a, const event *cause, status *st) {
    const char *book_id = cause->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED
                              ? cause->hold_placed->book_id
                              : cause->hold_canceled->book_id;
    hold_job job = {.cause = cause, .times = hold_times_now(saga)};
    book_record *record = NULL;
    status_code code = book_store_update(saga->store, book_id, a, apply_hold_event, &job, &record, st);
    if (code == STATUS_NOT_FOUND) {
        LOG_WARN("event %.64s names book %s, which does not exist; dropping it", cause->event_id, book_id);
        return STATUS_OK;
    }
    if (code == STATUS_RESOURCE_EXHAUSTED && strcmp(st->reason, "QUEUE_FULL") == 0) {
        LOG_WARN("%s", st->message); /* lending's reconciler cancels the hold it never saw queued */
        return STATUS_OK;
    }
    if (code != STATUS_OK)
        return code;
    return catalog_saga_publish_outbox(saga->connection, saga->store, a, record, st);
}

/* --- the decision archive ------------------------------------------------------------------- */

typedef struct archived {
    const decision_archive *archive;
    uint64_t revision;
} archived;

static status_code drop_archived(void *arg, arena *a, book_record *record, bool *changed, status *st) {
    archived *done = arg;
    if (!decisions_drop_archived(a, record, done->archive, done->revision, changed))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    return STATUS_OK;
}

/* Moves the older decisions of a full window to the book's archive: the archive first, then
 * the record drops what the archive holds (a crash in between leaves them in both, which the
 * next move settles). Decided and answered already, so a failure only leaves the window
 * longer for now (remember_decision still bounds it). */
static void archive_window(catalog_saga *saga, arena *a, const book_record *record) {
    const char *book_id = record->book->book_id;
    decision_archive *archive = NULL;
    uint64_t revision = 0;
    status st;
    if (book_store_archive(saga->store, book_id, record->recent_decisions, record->n_recent_decisions, a, &archive,
                           &revision, &st) != STATUS_OK ||
        book_store_update(saga->store, book_id, a, drop_archived, &(archived){archive, revision}, NULL, &st) !=
            STATUS_OK)
        LOG_WARN("the older loan decisions of book %s stay in its record for now: %s", book_id, st.message);
}

/* Decides (or finds the decision of) a loan, reading the book's archive when the record's
 * filter names the loan. */
static status_code decide_loan(catalog_saga *saga, arena *a, const char *book_id, catalog_decision *job,
                               book_record **record, status *st) {
    enum { ARCHIVE_READS = 4 };
    for (int reads = 0;; reads++) {
        status_code code = book_store_update(saga->store, book_id, a, catalog_saga_decide, job, record, st);
        if (code != STATUS_OK || !job->need_archive)
            return code;
        if (reads == ARCHIVE_READS)
            return status_set(st, STATUS_UNAVAILABLE, "DECISIONS_MOVING",
                              "the loan decisions of book %s kept moving while read; later again", book_id);
        decision_archive *archive = NULL;
        code = book_store_get_archive(saga->store, book_id, a, &archive, &job->archive_revision, st);
        if (code != STATUS_OK)
            return code;
        job->archive = archive;
    }
}

static status_code on_loan_requested(catalog_saga *saga, arena *a, const event *cause, status *st) {
    const Library__Events__V1__LoanRequested *request = cause->loan_requested;
    catalog_decision job = {.loan_id = request->loan_id, .reserve = true, .user_id = request->user_id};
    book_record *record = NULL;
    status_code code = decide_loan(saga, a, request->book_id, &job, &record, st);
    if (code == STATUS_NOT_FOUND)
        job.reserved = false; /* no such book: nothing to lend */
    else if (code != STATUS_OK)
        return code;
    event *e = answer_new(a, cause,
                          job.reserved ? LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RESERVED
                                       : LIBRARY__EVENTS__V1__EVENT__BODY_OUT_OF_STOCK,
                          request->loan_id);
    if (e == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (job.reserved) {
        Library__Events__V1__CopyReserved *body = (void *)arena_new_message(a, &library__events__v1__copy_reserved__descriptor);
        if (body == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        body->loan_id = request->loan_id;
        body->book_id = request->book_id;
        body->available_copies = job.available;
        body->hold_id = job.hold_id ? (char *)job.hold_id : (char *)"";
        e->copy_reserved = body;
    } else {
        Library__Events__V1__OutOfStock *body =
            (void *)arena_new_message(a, &library__events__v1__out_of_stock__descriptor);
        if (body == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        body->loan_id = request->loan_id;
        body->book_id = request->book_id;
        e->out_of_stock = body;
    }
    code = events_publish(saga->connection, e, st);
    if (code == STATUS_OK && record != NULL && decisions_window_full(record))
        archive_window(saga, a, record); /* after the answer: off the borrower's wait */
    return code;
}

static status_code on_loan_returned(catalog_saga *saga, arena *a, const event *cause, status *st) {
    const Library__Events__V1__LoanReturned *returned = cause->loan_returned;
    catalog_decision job = {.loan_id = returned->loan_id, .reserve = false, .times = hold_times_now(saga)};
    book_record *record = NULL;
    status_code code = book_store_update(saga->store, returned->book_id, a, catalog_saga_decide, &job, &record, st);
    if (code != STATUS_OK && code != STATUS_NOT_FOUND)
        return code;
    if (code == STATUS_OK && catalog_saga_publish_outbox(saga->connection, saga->store, a, record, st) != STATUS_OK)
        return st->code; /* redelivered, or the sweeper publishes it */
    event *e = answer_new(a, cause, LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RELEASED, returned->loan_id);
    Library__Events__V1__CopyReleased *body = (void *)arena_new_message(a, &library__events__v1__copy_released__descriptor);
    if (e == NULL || body == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    body->loan_id = returned->loan_id;
    body->book_id = returned->book_id;
    body->available_copies = job.available;
    body->hold_id = job.hold_id ? (char *)job.hold_id : (char *)"";
    e->copy_released = body;
    return events_publish(saga->connection, e, st);
}

static status_code on_loan_event(void *arg, const event *e, uint64_t sequence, status *st) {
    (void)sequence;
    catalog_saga *saga = arg;
    if (e->body_case != LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED &&
        e->body_case != LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED &&
        e->body_case != LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED &&
        e->body_case != LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED)
        return STATUS_OK; /* the other loan events are for the projection */
    if (catalog_saga_check_event(e, st) != STATUS_OK) {
        LOG_WARN("event %.64s is malformed (%s); refusing it", e->event_id, st->message);
        return st->code;
    }
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    status_code code;
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED: code = on_loan_requested(saga, a, e, st); break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED: code = on_loan_returned(saga, a, e, st); break;
    default: code = on_hold_event(saga, a, e, st); break;
    }
    arena_destroy(a);
    return code;
}

/* --- the hold sweeper ---------------------------------------------------------------------- */

typedef struct sweep_list {
    arena *a;
    int64_t now_ms;
    char **book_ids;
    size_t count, capacity;
} sweep_list;

static void collect_due(void *arg, const book_entry *book) {
    sweep_list *list = arg;
    bool due = book->outbox_count > 0 || (book->next_expiry_ms != 0 && book->next_expiry_ms <= list->now_ms);
    if (!due)
        return;
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 16;
        char **grown = arena_alloc(list->a, capacity * sizeof *grown);
        if (grown == NULL)
            return; /* the next round gets the rest */
        if (list->count)
            memcpy(grown, list->book_ids, list->count * sizeof *grown);
        list->book_ids = grown;
        list->capacity = capacity;
    }
    char *id = arena_strdup(list->a, book->book_id);
    if (id)
        list->book_ids[list->count++] = id;
}

static status_code apply_expiry(void *arg, arena *a, book_record *record, bool *changed, status *st) {
    const hold_times *times = arg;
    size_t outbox_before = record->n_outbox;
    *changed = false;
    if (holds_expire(a, record, times, changed, st) != STATUS_OK)
        return st->code;
    if (*changed && (holds_finish(a, record, outbox_before, st) != STATUS_OK || touch(a, record) != STATUS_OK))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    return STATUS_OK;
}

/* Every replica sweeps: the compare-and-set lets one expiry through, and the stream
 * deduplicates the events two replicas publish. */
static void sweep(catalog_saga *saga, arena *a) {
    sweep_list list = {.a = a, .now_ms = timestamp_now_ms()};
    book_index_each(book_store_index(saga->store), collect_due, &list);
    for (size_t i = 0; i < list.count && !atomic_load(&saga->stopping); i++) {
        hold_times times = hold_times_now(saga);
        book_record *record = NULL;
        status st;
        status_code code = book_store_update(saga->store, list.book_ids[i], a, apply_expiry, &times, &record, &st);
        if (code == STATUS_OK)
            code = catalog_saga_publish_outbox(saga->connection, saga->store, a, record, &st);
        if (code != STATUS_OK && code != STATUS_NOT_FOUND)
            LOG_WARN("sweeping the holds of book %s: %s", list.book_ids[i], st.message);
    }
}

static void *sweeper_main(void *arg) {
    catalog_saga *saga = arg;
    arena *a = arena_create(0);
    int64_t next = timestamp_monotonic_ms() + saga->options.hold_sweep_ms;
    while (a && !atomic_load(&saga->stopping)) {
        struct timespec pause = {.tv_nsec = 50 * 1000000};
        nanosleep(&pause, NULL);
        if (timestamp_monotonic_ms() < next || !nats_connection_is_up(saga->connection))
            continue;
        sweep(saga, a);
        arena_reset(a);
        next = timestamp_monotonic_ms() + saga->options.hold_sweep_ms;
    }
    if (a == NULL)
        LOG_ERROR("out of memory: the hold sweeper does not run");
    arena_destroy(a);
    return NULL;
}

status_code catalog_saga_start(nats_connection *connection, book_store *store,
                               const catalog_saga_options *options, catalog_saga **out, status *st) {
    catalog_saga *saga = calloc(1, sizeof *saga);
    if (saga == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    saga->connection = connection;
    saga->store = store;
    saga->options = *options;
    if (saga->options.hold_sweep_ms <= 0)
        saga->options.hold_sweep_ms = 1000;
    atomic_init(&saga->stopping, false);
    event_consumer_options consumer = {.durable = "catalog", .filter_subject = EVENTS_LOAN_SUBJECTS,
                                       .handler = on_loan_event, .arg = saga,
                                       .ack_wait_ms = options->ack_wait_ms, .workers = options->workers};
    status_code code = event_consumer_start(connection, &consumer, &saga->consumer, st);
    if (code == STATUS_OK) {
        if (pthread_create(&saga->sweeper, NULL, sweeper_main, saga) == 0)
            saga->sweeper_running = true;
        else
            code = status_set(st, STATUS_INTERNAL, "THREAD", "cannot start the hold sweeper");
    }
    if (code != STATUS_OK) {
        catalog_saga_stop(saga);
        return code;
    }
    *out = saga;
    return STATUS_OK;
}

void catalog_saga_stop(catalog_saga *saga) {
    if (saga == NULL)
        return;
    atomic_store(&saga->stopping, true);
    if (saga->sweeper_running)
        pthread_join(saga->sweeper, NULL);
    event_consumer_stop(saga->consumer);
    free(saga);
}
