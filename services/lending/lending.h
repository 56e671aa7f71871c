/* lending.h - the lending rules as plain functions: who may borrow, how a loan moves between
 * states, and when it is overdue. No I/O here, so the unit tests call these directly. */
#ifndef LENDING_LENDING_H
#define LENDING_LENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum loan_state {
    LOAN_PENDING = 1,
    LOAN_ACTIVE = 2,
    LOAN_RETURNED = 3,
    LOAN_CANCELED = 4,
} loan_state;

typedef struct open_loan {
    loan_state state;
    int64_t due_seconds;
} open_loan;

/* May a user holding these open loans borrow one more? Overdue first (an ACTIVE loan past
 * due: FAILED_PRECONDITION, reason OVERDUE_LOANS), then the limit (PENDING + ACTIVE >=
 * max_active: FAILED_PRECONDITION, reason LOAN_LIMIT). */
status_code lending_may_borrow(const open_loan *loans, size_t count, int64_t now_seconds,
                               int max_active, status *st);

bool lending_is_overdue(loan_state state, int64_t due_seconds, int64_t now_seconds);

/* Nothing more happens to the loan: CANCELED, or RETURNED with the copy back in the catalog.
 * Its retention runs from then. */
bool lending_is_settled(loan_state state, bool release_confirmed);

/* The outcome of the catalog's reservation for a PENDING loan. Returns the new state, or the
 * current one when the loan is past PENDING already (a redelivered event changes nothing). */
loan_state lending_after_reservation(loan_state current, bool reserved);

/* A return: ACTIVE -> RETURNED; RETURNED stays (idempotent); PENDING and CANCELED are
 * FAILED_PRECONDITION, reason LOAN_NOT_ACTIVE. */
status_code lending_return(loan_state current, loan_state *next, status *st);

/* Loan ids: 20 hex digits, random, or derived from (user, request_id) so a retried BorrowBook
 * finds the loan it made. Lookups check them with field_check_id, as book ids. */
enum { LENDING_LOAN_ID_LENGTH = 20 };
void lending_new_loan_id(const char *user, const char *request_id, char out[LENDING_LOAN_ID_LENGTH + 1]);

enum { LENDING_PAGE_SIZE_DEFAULT = 20, LENDING_PAGE_SIZE_MAX = 100, LENDING_PAGE_TOKEN_MAX = 24 };

/* ListLoans page tokens name the loan the next page starts at ("n" and its id), not a
 * position: loans borrowed between two pages go to the front of the newest-first history,
 * which would shift a position and show a loan twice. start_at is "" for an empty token (the
 * newest loan first); garbage is INVALID_ARGUMENT, reason INVALID_PAGE_TOKEN. */
status_code lending_page_token_decode(const char *token, char start_at[LENDING_LOAN_ID_LENGTH + 1],
                                      status *st);
void lending_page_token_encode(const char *loan_id, char out[LENDING_PAGE_TOKEN_MAX]);

/* A ListLoans request, checked: whose loans (an empty user_id is the caller; another user's
 * only for an administrator: PERMISSION_DENIED), the page size (0 -> default, capped), the
 * status filter (a LoanStatus value) and where the page starts. user_id points into the
 * arguments. */
typedef struct lending_list_query {
    const char *user_id;
    size_t page_size;
    char start_at[LENDING_LOAN_ID_LENGTH + 1]; /* "" or the loan the page starts at */
} lending_list_query;
status_code lending_check_list(const char *caller, bool caller_admin, const char *user_id,
                               int32_t page_size, int status_filter, const char *page_token,
                               lending_list_query *out, status *st);

#endif
