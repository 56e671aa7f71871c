/* fines.h - a user's account of fines, as rules over the user record (no I/O: unit tests call
 * these directly, and loan_store runs them under compare-and-set, again on a fresh record
 * when another writer got there first).
 *
 * A late ACTIVE loan accrues terms.per_interval for each started terms.interval_seconds past
 * its due time, at most terms.max_per_loan (renewals included). That is a function of the
 * time, so readers compute it at their own `now`; the record holds what was last assessed,
 * and the return fixes it. Money is an int64 of minor currency units; nothing here
 * overflows for any input, and no balance goes below zero. Every change of the account
 * grows account_version and leaves its event in account_outbox, in the same write. */
#ifndef LENDING_FINES_H
#define LENDING_FINES_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "library/lending/v1/lending.pb-c.h"
#include "loan_store.h"
#include "status.h"

typedef Library__Lending__Internal__FineTerms fine_terms;
typedef Library__Lending__Internal__FineEntry fine_entry;
typedef Library__Lending__Internal__AccountEvent account_event;
typedef Library__Lending__V1__Account account_message;

/* Settled fines (paid or waived in full) an account keeps, newest; owed ones are all kept. */
enum { FINES_SETTLED_KEPT = 50, ACCOUNT_REQUESTS_KEPT = 32, ACCOUNT_REQUEST_KEY_LENGTH = 20 };

/* What a loan due at due_seconds has accrued by now_seconds under terms (0 when not late or
 * with no terms). */
int64_t fine_accrued(const fine_terms *terms, int64_t due_seconds, int64_t now_seconds);

/* The fine's amount at now_seconds: fixed and waived fines as they stand, an accruing one
 * never below what was assessed. */
int64_t fine_amount_at(const fine_entry *fine, int64_t now_seconds);

/* What is still owed of the fine at now_seconds (amount - paid - waived, at least 0). */
int64_t fine_owed_at(const fine_entry *fine, int64_t now_seconds);

Library__Lending__V1__FineState fine_state(const fine_entry *fine);

/* The balance at now_seconds: what every fine owes, late ACTIVE loans without a fine entry
 * yet included. Reads only. */
int64_t account_balance(const user_record *record, int64_t now_seconds);

/* FAILED_PRECONDITION, reason FINES_OWED, when the balance at now_seconds is block_at or
 * more (block_at 0: never). */
status_code account_check_block(const user_record *record, int64_t now_seconds, int64_t block_at, status *st);

/* Brings the record's fines to now_ms: an entry for each late ACTIVE loan, each accruing
 * fine raised to its amount now, a FineAssessed in the outbox for each fine that grew.
 * *changed when any did. */
status_code account_assess(arena *a, user_record *record, int64_t now_ms, bool *changed, status *st);

/* The loan was returned at return_seconds (call it before its open entry leaves the record):
 * its fine is fixed at what it accrued by then, and announced. Nothing when the loan was not
 * late, or was fixed already. */
status_code account_fix(arena *a, user_record *record, const char *loan_id, int64_t return_seconds,
                        int64_t now_ms, bool *changed, status *st);

/* A renewal at renew_seconds moved the loan's due time to due_seconds (its open entry has the
 * old one still): what the fine accrued up to the renewal is carried, and it runs from the new
 * due time under the renewal's terms (NULL: the same). Nothing for a loan renewed in time. */
status_code account_carry(arena *a, user_record *record, const char *loan_id, int64_t renew_seconds,
                          int64_t due_seconds, const fine_terms *terms, int64_t now_ms, bool *changed,
                          status *st);

/* The digest that names a PayFines or WaiveFine request ("" when request_id is empty). */
void account_request_key(const char *method, const char *request_id, char out[ACCOUNT_REQUEST_KEY_LENGTH + 1]);

/* A payment of amount, oldest fines first. INVALID_ARGUMENT for amount <= 0 or a request key
 * used for another amount; FAILED_PRECONDITION OVERPAYMENT above the balance. *replay: this
 * request was taken already; nothing changed. */
status_code account_pay(arena *a, user_record *record, int64_t amount, const char *request_key, int64_t now_ms,
                        bool *replay, status *st);

/* Waives what is not paid of the loan's fine; an accruing fine accrues no more.
 * FAILED_PRECONDITION NO_FINE (the loan has none) or FINE_NOT_OWED (nothing left to waive);
 * INVALID_ARGUMENT for a request key used for another loan. */
status_code account_waive(arena *a, user_record *record, const char *loan_id, const char *reason,
                          const char *request_key, int64_t now_ms, bool *replay, status *st);

/* The account as the API shows it, from a record brought to now (account_assess). */
account_message *account_view(arena *a, const user_record *record, const char *user_id, int64_t block_at,
                              int64_t now_ms);

/* When the account next needs the reconciler (unix ms): a fine to assess, or an outbox entry
 * to publish (after_ms after it was written). 0: never. */
int64_t account_next_visit_ms(const user_record *record, int64_t after_ms);

/* Retention (docs/decisions.md, "Retention"; retention_ms 0: nothing happens). A settled
 * fine whose loan came back retention_ms ago leaves the account, and an account with fines
 * unchanged for half of retention_ms is announced again, so that the event stream, which
 * keeps retention_ms, always holds its newest snapshot: either is a new version of the
 * account with a FineAssessed restating its newest fine in the outbox. *changed when so. */
status_code account_refresh(arena *a, user_record *record, int64_t now_ms, int64_t retention_ms, bool *changed,
                            status *st);

/* When account_refresh next has something to do (unix ms), 0: never. */
int64_t account_refresh_visit_ms(const user_record *record, int64_t retention_ms);

/* Removes the outbox entries up to version (they are published). True when any went. */
bool account_outbox_done(user_record *record, uint64_t version);

#endif
