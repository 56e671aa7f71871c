/* lending.c - the lending rules. */
#include "lending.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "text.h"

bool lending_is_settled(loan_state state, bool release_confirmed) {
    return state == LOAN_CANCELED || (state == LOAN_RETURNED && release_confirmed);
}

bool lending_is_overdue(loan_state state, int64_t due_seconds, int64_t now_seconds) {
    return state == LOAN_ACTIVE && due_seconds > 0 && now_seconds > due_seconds;
}

status_code lending_may_borrow(const open_loan *loans, size_t count, int64_t now_seconds,
                               int max_active, status *st) {
    size_t overdue = 0, open = 0;
    for (size_t i = 0; i < count; i++) {
        if (loans[i].state == LOAN_PENDING || loans[i].state == LOAN_ACTIVE)
            open++;
        if (lending_is_overdue(loans[i].state, loans[i].due_seconds, now_seconds))
            overdue++;
    }
    if (overdue > 0)
        return status_set(st, STATUS_FAILED_PRECONDITION, "OVERDUE_LOANS",
                          "you have %zu overdue loan%s; return %s before borrowing again", overdue,
                          overdue == 1 ? "" : "s", overdue == 1 ? "it" : "them");
    if ((int)open >= max_active)
        return status_set(st, STATUS_FAILED_PRECONDITION, "LOAN_LIMIT",
                          "you already hold %zu loans; the limit is %d", open, max_active);
    return STATUS_OK;
}

loan_state lending_after_reservation(loan_state current, bool reserved) {
    if (current != LOAN_PENDING)
        return current;
    return reserved ? LOAN_ACTIVE : LOAN_CANCELED;
}

status_code lending_return(loan_state current, loan_state *next, status *st) {
    if (current == LOAN_ACTIVE || current == LOAN_RETURNED) {
        *next = LOAN_RETURNED;
        return STATUS_OK;
    }
    return status_set(st, STATUS_FAILED_PRECONDITION, "LOAN_NOT_ACTIVE",
                      "only an active loan can be returned; this one is %s",
                      current == LOAN_PENDING ? "still pending" : "canceled");
}

void lending_new_loan_id(const char *user, const char *request_id, char out[LENDING_LOAN_ID_LENGTH + 1]) {
    if (request_id == NULL || request_id[0] == '\0') {
        text_random_hex(out, 10);
        return;
    }
    char digest[65];
    const char *parts[] = {"BorrowBook", user, request_id, NULL};
    text_sha256_hex(parts, digest);
    snprintf(out, 21, "%.20s", digest);
}

status_code lending_page_token_decode(const char *token, char start_at[LENDING_LOAN_ID_LENGTH + 1],
                                      status *st) {
    start_at[0] = '\0';
    if (token == NULL || token[0] == '\0')
        return STATUS_OK;
    bool valid = token[0] == 'n' && strlen(token + 1) == LENDING_LOAN_ID_LENGTH;
    for (size_t i = 1; valid && i <= LENDING_LOAN_ID_LENGTH; i++)
        valid = (token[i] >= '0' && token[i] <= '9') || (token[i] >= 'a' && token[i] <= 'f');
    if (!valid)
        return status_set(st, STATUS_INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
                          "page_token is not a token this service issued");
    memcpy(start_at, token + 1, LENDING_LOAN_ID_LENGTH + 1);
    return STATUS_OK;
}

void lending_page_token_encode(const char *loan_id, char out[LENDING_PAGE_TOKEN_MAX]) {
    snprintf(out, LENDING_PAGE_TOKEN_MAX, "n%.*s", (int)LENDING_LOAN_ID_LENGTH, loan_id);
}

status_code lending_check_list(const char *caller, bool caller_admin, const char *user_id,
                               int32_t page_size, int status_filter, const char *page_token,
                               lending_list_query *out, status *st) {
    const char *user = user_id != NULL && user_id[0] ? user_id : caller;
    if (strcmp(user, caller) != 0 && !caller_admin)
        return status_set(st, STATUS_PERMISSION_DENIED, "NOT_YOUR_LOANS",
                          "only administrators may list another user's loans");
    if (strlen(user) >= AUTH_SUBJECT_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_TOO_LONG", "user_id is too long");
    if (page_size < 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "page_size must not be negative");
    if (status_filter < 0 || status_filter > LOAN_CANCELED)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "status is not a LoanStatus");
    if (lending_page_token_decode(page_token, out->start_at, st))
        return st->code;
    out->user_id = user;
    out->page_size = page_size == 0                       ? LENDING_PAGE_SIZE_DEFAULT
                     : page_size > LENDING_PAGE_SIZE_MAX ? LENDING_PAGE_SIZE_MAX
                                                          : (size_t)page_size;
    return STATUS_OK;
}
