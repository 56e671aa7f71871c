/* renewals.h - RenewLoan (DESIGN.md section 10, "Renewals"): an ACTIVE loan's due time moves
 * to max(due_time, now) + the loan period, at most max_renewals times, idempotent by
 * request_id; both from the policy of the group the loan was made in, as it is now (policy.h).
 * The rule is a plain function over the loan record, so unit tests call it directly; the
 * handler stores its result by compare-and-set and announces it (saga.h). */
#ifndef LENDING_RENEWALS_H
#define LENDING_RENEWALS_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "loan_store.h"
#include "rpc_server.h"
#include "status.h"

/* Renewal requests a loan record remembers, newest kept. */
enum { RENEWAL_REQUESTS_KEPT = 16, RENEWAL_REQUEST_KEY_LENGTH = 20 };

typedef struct renewal {
    const char *caller;
    bool caller_admin;
    const char *request_key; /* "" without a request_id (renewal_request_key) */
    int64_t now_ms;
    int64_t loan_period_ms;
    int max_renewals;
    /* The loan's fine terms from this renewal on (its group's policy now); NULL: kept. */
    const Library__Lending__Internal__FineTerms *fine_terms;
    bool holds_waiting; /* WAITING holds on the loan's book (lending's copy of the catalog's queue) */
    const status *fines_owed; /* NULL, or the borrower's FINES_OWED refusal (account_check_block) */
} renewal;

/* The key under which a request is remembered: "" for an empty request_id, else 20 hex digits
 * of a digest of (caller, request_id). out has RENEWAL_REQUEST_KEY_LENGTH + 1 bytes. */
void renewal_request_key(const char *caller, const char *request_id, char *out);

/* Renews the loan in record, when it may be: another user's loan (not for an administrator) is
 * NOT_FOUND, reason LOAN_NOT_FOUND; a loan not ACTIVE is FAILED_PRECONDITION, LOAN_NOT_ACTIVE;
 * one renewed max_renewals times already is FAILED_PRECONDITION, RENEWAL_LIMIT; while holds
 * wait for the book, FAILED_PRECONDITION, HOLDS_WAITING; while the borrower owes fines,
 * r->fines_owed's refusal (FINES_OWED). *replay: the
 * record already holds this request's renewal, and nothing is checked or changed. A renewal
 * counts up renewal_count, sets the new due time, remembers the request, lowers
 * overdue_published (the new due time will be announced when it passes), raises
 * renewal_unpublished and takes on r->fine_terms. New strings and lists come from a. */
status_code renewal_apply(const renewal *r, arena *a, loan_record *record, bool *replay, bool *changed,
                          status *st);

/* The RenewLoan handler of the method table (state: lending_handlers). */
status_code renewals_renew_loan(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                                ProtobufCMessage **response, status *st);

#endif
