/* saga.h - lending's part of the borrow saga (DESIGN.md section 4): it publishes
 * LoanRequested / LoanReturned / LoanOverdue, consumes the catalog's CopyReserved, OutOfStock
 * and CopyReleased, and runs the reconciler that republishes what a crash left unpublished.
 * BorrowBook waits for the outcome through a plain NATS subscription to the outcome events. */
#ifndef LENDING_SAGA_H
#define LENDING_SAGA_H

#include <stdbool.h>
#include <stdint.h>

#include "events.h"
#include "loan_store.h"
#include "nats_connection.h"
#include "status.h"

typedef struct lending_saga lending_saga;
typedef struct saga_waiter saga_waiter;

typedef struct saga_options {
    int64_t reconcile_interval_ms; /* how often the reconciler and overdue sweeper run */
    int64_t reconcile_after_ms;    /* how old an unfinished step must be before it is redone */
    int64_t ack_wait_ms;           /* redelivery of unacknowledged catalog events */
    int event_workers;             /* catalog events handled at once */
    int64_t retention_ms;          /* settled loans and holds are forgotten after it; 0: never */
} saga_options;

status_code lending_saga_start(nats_connection *connection, loan_store *store,
                               const saga_options *options, lending_saga **out, status *st);
void lending_saga_stop(lending_saga *saga); /* NULL is a no-op */

/* Register before publishing LoanRequested, wait, then unwatch (always). */
saga_waiter *lending_saga_watch(lending_saga *saga, const char *loan_id);
bool lending_saga_wait(lending_saga *saga, saga_waiter *waiter, int64_t timeout_ms);
void lending_saga_unwatch(lending_saga *saga, saga_waiter *waiter);

/* Makes the user's record agree with the loan (open loans kept, finished ones removed). */
status_code lending_saga_sync_user(lending_saga *saga, arena *a, const loan_record *record, status *st);

/* Counts a loan reaching a step ("requested", "activated", "canceled", "returned",
 * "overdue", "renewed") in library_loans_total{outcome}. */
void saga_count_loan(const char *outcome);

/* Announce a step of the loan with its deterministic id (events_format_id): attempt 0 from the
 * handlers, a higher one from the reconciler redoing a step that stayed unanswered. */
status_code saga_publish_requested(nats_connection *connection, const loan_record *record, uint32_t attempt,
                                   status *st);
status_code saga_publish_returned(nats_connection *connection, const loan_record *record, uint32_t attempt,
                                  status *st);
/* LoanRenewed of the loan's newest renewal, id "loan-renewed-<loan id>-n<renewal count>". */
status_code saga_publish_renewed(nats_connection *connection, const loan_record *record, uint32_t attempt,
                                 status *st);

/* Carries a stored renewal out: the user record's due time for the loan (the overdue block),
 * LoanRenewed, then the record's renewal_unpublished flag down. RenewLoan calls it after the
 * renewal, the reconciler for a renewal whose flag stayed up (a crash or a failed publish in
 * between); each step is idempotent, so doing it twice is harmless. */
status_code lending_saga_announce_renewal(lending_saga *saga, arena *a, const loan_record *record,
                                          uint32_t attempt, status *st);

#endif
