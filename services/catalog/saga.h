/* saga.h - the catalog's part of the borrow saga: it consumes LoanRequested and LoanReturned
 * and answers with CopyReserved or OutOfStock, and CopyReleased. Each decision is stored in
 * the book record together with the stock change, so a redelivered event gets the same
 * answer and never takes or gives back a second copy. */
#ifndef CATALOG_SAGA_H
#define CATALOG_SAGA_H

#include "book_store.h"
#include "nats_connection.h"
#include "status.h"

typedef struct catalog_saga catalog_saga;

status_code catalog_saga_start(nats_connection *connection, book_store *store, int64_t ack_wait_ms,
                               catalog_saga **out, status *st);
void catalog_saga_stop(catalog_saga *saga); /* NULL is a no-op */

#endif
