/* saga.c - reserving and releasing copies for loans. */
#include "saga.h"

#include <stdio.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "events.h"
#include "field.h"
#include "log.h"
#include "timestamp.h"

enum { DECISIONS_KEPT = 1024 };

struct catalog_saga {
    nats_connection *connection;
    book_store *store;
    event_consumer *consumer;
};

static ssize_t find_string(char **list, size_t count, const char *value) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(list[i], value) == 0)
            return (ssize_t)i;
    return -1;
}

static status_code remember_decision(arena *a, book_record *record, const char *loan_id, bool reserved) {
    size_t kept = record->n_recent_decisions;
    size_t start = kept >= DECISIONS_KEPT ? kept - DECISIONS_KEPT + 1 : 0;
    size_t count = kept - start + 1;
    Library__Catalog__Internal__LoanDecision **list = arena_alloc(a, count * sizeof *list);
    Library__Catalog__Internal__LoanDecision *entry =
        (void *)arena_new_message(a, &library__catalog__internal__loan_decision__descriptor);
    if (list == NULL || entry == NULL)
        return STATUS_RESOURCE_EXHAUSTED;
    if (count > 1)
        memcpy(list, record->recent_decisions + start, (count - 1) * sizeof *list);
    entry->loan_id = arena_strdup(a, loan_id);
    entry->reserved = reserved;
    list[count - 1] = entry;
    record->recent_decisions = list;
    record->n_recent_decisions = count;
    return STATUS_OK;
}

static status_code touch(arena *a, book_record *record) {
    record->book->update_time = timestamp_now(a);
    return record->book->update_time ? STATUS_OK : STATUS_RESOURCE_EXHAUSTED;
}

status_code catalog_saga_decide(void *arg, arena *a, book_record *record, bool *changed,
                                status *st) {
    catalog_decision *job = arg;
    Library__Catalog__V1__Book *book = record->book;
    *changed = false;
    ssize_t on_hand = find_string(record->loans_on_hand, record->n_loans_on_hand, job->loan_id);
    if (!job->reserve) { /* a return: give the copy back once */
        if (on_hand >= 0) {
            record->loans_on_hand[on_hand] = record->loans_on_hand[record->n_loans_on_hand - 1];
            record->n_loans_on_hand--;
            book->available_copies++;
            *changed = true;
        }
        job->available = book->available_copies;
        return *changed && touch(a, record) != STATUS_OK
                   ? status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory")
                   : STATUS_OK;
    }
    for (size_t i = record->n_recent_decisions; i-- > 0;) {
        if (strcmp(record->recent_decisions[i]->loan_id, job->loan_id) == 0) {
            job->reserved = record->recent_decisions[i]->reserved; /* asked before: same answer */
            job->available = book->available_copies;
            return STATUS_OK;
        }
    }
    if (on_hand >= 0) {
        job->reserved = true;
        job->available = book->available_copies;
        return STATUS_OK;
    }
    job->reserved = book->available_copies > 0;
    if (job->reserved) {
        char **loans = arena_alloc(a, (record->n_loans_on_hand + 1) * sizeof *loans);
        if (loans == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        if (record->n_loans_on_hand)
            memcpy(loans, record->loans_on_hand, record->n_loans_on_hand * sizeof *loans);
        loans[record->n_loans_on_hand] = arena_strdup(a, job->loan_id);
        record->loans_on_hand = loans;
        record->n_loans_on_hand++;
        book->available_copies--;
    }
    if (remember_decision(a, record, job->loan_id, job->reserved) != STATUS_OK || touch(a, record) != STATUS_OK)
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

static status_code on_loan_requested(catalog_saga *saga, arena *a, const event *cause, status *st) {
    const Library__Events__V1__LoanRequested *request = cause->loan_requested;
    catalog_decision job = {.loan_id = request->loan_id, .reserve = true};
    book_record *record = NULL;
    status_code code = book_store_update(saga->store, request->book_id, a, catalog_saga_decide, &job, &record, st);
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
        e->copy_reserved = body;
        return events_publish(saga->connection, e, st);
    }
    Library__Events__V1__OutOfStock *body = (void *)arena_new_message(a, &library__events__v1__out_of_stock__descriptor);
    if (body == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    body->loan_id = request->loan_id;
    body->book_id = request->book_id;
    e->out_of_stock = body;
    return events_publish(saga->connection, e, st);
}

static status_code on_loan_returned(catalog_saga *saga, arena *a, const event *cause, status *st) {
    const Library__Events__V1__LoanReturned *returned = cause->loan_returned;
    catalog_decision job = {.loan_id = returned->loan_id, .reserve = false};
    book_record *record = NULL;
    status_code code = book_store_update(saga->store, returned->book_id, a, catalog_saga_decide, &job, &record, st);
    if (code != STATUS_OK && code != STATUS_NOT_FOUND)
        return code;
    event *e = answer_new(a, cause, LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RELEASED, returned->loan_id);
    Library__Events__V1__CopyReleased *body = (void *)arena_new_message(a, &library__events__v1__copy_released__descriptor);
    if (e == NULL || body == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    body->loan_id = returned->loan_id;
    body->book_id = returned->book_id;
    body->available_copies = job.available;
    e->copy_released = body;
    return events_publish(saga->connection, e, st);
}

static status_code on_loan_event(void *arg, const event *e, uint64_t sequence, status *st) {
    (void)sequence;
    catalog_saga *saga = arg;
    if (e->body_case != LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED &&
        e->body_case != LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED)
        return STATUS_OK; /* the other loan events are for the projection */
    if (catalog_saga_check_event(e, st) != STATUS_OK) {
        LOG_WARN("event %.64s names a malformed id (%s); refusing it", e->event_id, st->message);
        return st->code;
    }
    arena *a = arena_create(0);
    if (a == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    status_code code = e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED
                           ? on_loan_requested(saga, a, e, st)
                           : on_loan_returned(saga, a, e, st);
    arena_destroy(a);
    return code;
}

status_code catalog_saga_start(nats_connection *connection, book_store *store, int64_t ack_wait_ms,
                               int workers,
                               catalog_saga **out, status *st) {
    catalog_saga *saga = calloc(1, sizeof *saga);
    if (saga == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    saga->connection = connection;
    saga->store = store;
    event_consumer_options options = {.durable = "catalog", .filter_subject = EVENTS_LOAN_SUBJECTS,
                                      .handler = on_loan_event, .arg = saga,
                                      .ack_wait_ms = ack_wait_ms, .workers = workers};
    status_code code = event_consumer_start(connection, &options, &saga->consumer, st);
    if (code != STATUS_OK) {
        free(saga);
        return code;
    }
    *out = saga;
    return STATUS_OK;
}

void catalog_saga_stop(catalog_saga *saga) {
    if (saga == NULL)
        return;
    event_consumer_stop(saga->consumer);
    free(saga);
}
