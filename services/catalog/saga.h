/* saga.h - the catalog's part of the borrow saga: it consumes LoanRequested and LoanReturned
 * and answers with CopyReserved or OutOfStock, and CopyReleased. Each decision is stored in
 * the book record together with the stock change, so a redelivered event gets the same
 * answer and never takes or gives back a second copy. */
#ifndef CATALOG_SAGA_H
#define CATALOG_SAGA_H

#include <stdbool.h>
#include <stdint.h>

#include "book_store.h"
#include "events.h"
#include "nats_connection.h"
#include "status.h"

typedef struct catalog_saga catalog_saga;

/* One decision about one loan on a book record, as the consumer makes it inside the
 * compare-and-set loop (a book_change): LoanRequested (reserve) takes a copy when one is free
 * and remembers the answer, so asking again gets the same answer; LoanReturned gives the
 * loan's copy back once. Declared here so the fuzz harness can call it without NATS. */
typedef struct catalog_decision {
    const char *loan_id;
    bool reserve;  /* LoanRequested: true; LoanReturned: false */
    bool reserved; /* the outcome of a reservation */
    int32_t available;
} catalog_decision;
status_code catalog_saga_decide(void *decision, arena *a, book_record *record, bool *changed,
                                status *st);

/* Events come off a stream that anything holding NATS credentials can write to, and their
 * ids become KV keys and part of the answer's Nats-Msg-Id. A LoanRequested or LoanReturned
 * whose loan_id or book_id is not a server-made id (a '.', a wildcard, CR/LF...) is
 * INVALID_ARGUMENT, so the consumer terminates it instead of acting on it. */
status_code catalog_saga_check_event(const event *e, status *st);

status_code catalog_saga_start(nats_connection *connection, book_store *store, int64_t ack_wait_ms,
                               int workers,
                               catalog_saga **out, status *st);
void catalog_saga_stop(catalog_saga *saga); /* NULL is a no-op */

#endif
