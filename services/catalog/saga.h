/* saga.h - the catalog's part of the borrow saga and of holds: it consumes LoanRequested and
 * LoanReturned and answers with CopyReserved or OutOfStock, and CopyReleased; it consumes
 * HoldPlaced and HoldCanceled and keeps each book's queue (holds.h). Each decision is stored
 * in the book record together with the stock change, so a redelivered event gets the same
 * answer and never takes or gives back a second copy. A sweeper on every replica expires
 * READY holds not collected in time and publishes what a crash left in a record's outbox. */
#ifndef CATALOG_SAGA_H
#define CATALOG_SAGA_H

#include <stdbool.h>
#include <stdint.h>

#include "book_store.h"
#include "events.h"
#include "holds.h"
#include "nats_connection.h"
#include "status.h"

typedef struct catalog_saga catalog_saga;

/* One decision about one loan on a book record, as the consumer makes it inside the
 * compare-and-set loop (a book_change): LoanRequested (reserve) takes a copy when one is free
 * and remembers the answer, so asking again gets the same answer; LoanReturned gives the
 * loan's copy back once. Declared here so the fuzz harness can call it without NATS. */
typedef struct catalog_decision {
    const char *loan_id;
    bool reserve;        /* LoanRequested: true; LoanReturned: false */
    const char *user_id; /* LoanRequested: the borrower, whose READY hold the loan takes first */
    hold_times times;    /* for a returned copy that goes to the next hold */
    bool reserved;       /* the outcome of a reservation */
    int32_t available;
    const char *hold_id; /* the hold whose copy the loan took, or that the returned copy went to */
    /* The book's decision archive as read at archive_revision, or NULL when not read. */
    const decision_archive *archive;
    uint64_t archive_revision;
    /* Out: the record's filter names the loan (or the archive read is older than the record's
     * filter), so nothing was decided: read the archive into `archive` and decide again. */
    bool need_archive;
} catalog_decision;
status_code catalog_saga_decide(void *decision, arena *a, book_record *record, bool *changed,
                                status *st);

/* Events come off a stream that anything holding NATS credentials can write to, and their
 * ids become KV keys and part of the answer's Nats-Msg-Id. A LoanRequested or LoanReturned
 * whose loan_id or book_id is not a server-made id (a '.', a wildcard, CR/LF...) is
 * INVALID_ARGUMENT, so the consumer terminates it instead of acting on it. */
status_code catalog_saga_check_event(const event *e, status *st);

typedef struct catalog_saga_options {
    int64_t ack_wait_ms;
    int workers;
    int64_t hold_pickup_ms;   /* HOLD_PICKUP */
    int64_t hold_sweep_ms;    /* how often the sweeper looks at the books */
} catalog_saga_options;

status_code catalog_saga_start(nats_connection *connection, book_store *store,
                               const catalog_saga_options *options, catalog_saga **out, status *st);

/* Publishes the events in the record's outbox (written by the change that made record) and
 * takes them out of the stored record. The hold sweeper redoes it if this fails. */
status_code catalog_saga_publish_outbox(nats_connection *connection, book_store *store, arena *a,
                                        const book_record *record, status *st);
void catalog_saga_stop(catalog_saga *saga); /* NULL is a no-op */

#endif
