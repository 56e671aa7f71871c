/* fuzz_lending_requests.c - every LendingService request through what the service does with
 * it, without the network: protobuf-c decoding into an arena, the handlers' checks (ids,
 * request ids, ListLoans' owner, page size, status filter and page token) and the loan rules
 * behind them, RenewLoan's over a loan record made from the request's bytes.
 *
 * Input: one byte choosing the method (and, for ListLoans and RenewLoan, whether the caller
 * is an administrator), then the serialized request. */
#include <stdbool.h>
#include <string.h>

#include "arena.h"
#include "auth.h"
#include "field.h"
#include "fuzz.h"
#include "lending.h"
#include "library/lending/v1/lending.pb-c.h"
#include "renewals.h"
#include "status.h"

static const ProtobufCMessageDescriptor *const request_types[] = {
    &library__lending__v1__borrow_book_request__descriptor,
    &library__lending__v1__return_book_request__descriptor,
    &library__lending__v1__get_loan_request__descriptor,
    &library__lending__v1__list_loans_request__descriptor,
    &library__lending__v1__renew_loan_request__descriptor,
};
enum { METHOD_COUNT = sizeof request_types / sizeof request_types[0] };

static void check_failure(status_code code, const status *st) {
    FUZZ_CHECK(code == STATUS_INVALID_ARGUMENT || code == STATUS_PERMISSION_DENIED ||
               code == STATUS_FAILED_PRECONDITION);
    FUZZ_CHECK(st->code == code && st->reason[0] != '\0' && st->message[0] != '\0');
}

static void borrow_book(const Library__Lending__V1__BorrowBookRequest *req) {
    status st;
    status_code code = field_check_id(req->book_id, "book_id", &st);
    if (code == STATUS_OK)
        code = field_check_request_id(req->request_id, &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    /* The loan id it makes must be one GetLoan and ReturnBook accept. */
    char loan_id[21];
    lending_new_loan_id("fuzz-user", req->request_id, loan_id);
    FUZZ_CHECK(field_check_id(loan_id, "loan_id", &st) == STATUS_OK);
    /* The borrow rules, over open loans derived from the request's bytes. */
    open_loan open[8];
    size_t count = strlen(req->book_id) % 8;
    for (size_t i = 0; i < count; i++)
        open[i] = (open_loan){(loan_state)(1 + (unsigned char)req->book_id[i] % 4),
                              (int64_t)(unsigned char)req->book_id[i] * 1000};
    code = lending_may_borrow(open, count, 100000, 5, &st);
    if (code != STATUS_OK)
        check_failure(code, &st);
}

static void one_loan(const char *loan_id) {
    status st;
    status_code code = field_check_id(loan_id, "loan_id", &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    /* A return from every state: only ACTIVE and RETURNED end RETURNED. */
    for (int state = LOAN_PENDING; state <= LOAN_CANCELED; state++) {
        loan_state next = 0;
        code = lending_return((loan_state)state, &next, &st);
        FUZZ_CHECK((code == STATUS_OK) == (state == LOAN_ACTIVE || state == LOAN_RETURNED));
        FUZZ_CHECK(code != STATUS_OK || next == LOAN_RETURNED);
    }
}

static void list_loans(const Library__Lending__V1__ListLoansRequest *req, bool admin) {
    status st;
    lending_list_query query;
    status_code code = lending_check_list("fuzz-user", admin, req->user_id, req->page_size,
                                          (int)req->status, req->page_token, &query, &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    FUZZ_CHECK(query.page_size >= 1 && query.page_size <= LENDING_PAGE_SIZE_MAX);
    FUZZ_CHECK(strlen(query.user_id) < AUTH_SUBJECT_MAX);
    FUZZ_CHECK(admin || strcmp(query.user_id, "fuzz-user") == 0);
    FUZZ_CHECK(query.start_at[0] == '\0' || strlen(query.start_at) == LENDING_LOAN_ID_LENGTH);
    /* The next page's token decodes to the loan it names. */
    char loan_id[LENDING_LOAN_ID_LENGTH + 1], token[LENDING_PAGE_TOKEN_MAX], start_at[LENDING_LOAN_ID_LENGTH + 1];
    lending_new_loan_id(query.user_id, req->page_token, loan_id);
    lending_page_token_encode(loan_id, token);
    FUZZ_CHECK(lending_page_token_decode(token, start_at, &st) == STATUS_OK);
    FUZZ_CHECK(strcmp(start_at, loan_id) == 0);
}

/* The renewal rule over a loan whose owner, state, due time and renewals come from the
 * request's bytes: a renewal counts up by one, never moves the due time back, remembers its
 * request, and a retry of it changes nothing. */
static void renew_loan(arena *a, const Library__Lending__V1__RenewLoanRequest *req, bool admin) {
    status st;
    status_code code = field_check_id(req->loan_id, "loan_id", &st);
    if (code == STATUS_OK)
        code = field_check_request_id(req->request_id, &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    unsigned char seed = (unsigned char)req->loan_id[0];
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    due.seconds = (int64_t)seed * 1000;
    loan_message loan = LIBRARY__LENDING__V1__LOAN__INIT;
    loan.loan_id = req->loan_id;
    loan.user_id = seed % 3 == 0 ? "someone-else" : "fuzz-user";
    loan.status = (Library__Lending__V1__LoanStatus)(seed % 5);
    loan.renewal_count = (int32_t)(seed % 4);
    loan.due_time = seed % 7 == 0 ? NULL : &due;
    loan_record record = LIBRARY__LENDING__INTERNAL__LOAN_RECORD__INIT;
    record.loan = &loan;
    char key[RENEWAL_REQUEST_KEY_LENGTH + 1];
    renewal_request_key("fuzz-user", req->request_id, key);
    renewal rule = {.caller = "fuzz-user", .caller_admin = admin, .request_key = key, .now_ms = 100000000,
                    .loan_period_ms = 86400000, .max_renewals = 2};
    int32_t count_before = loan.renewal_count;
    int64_t due_before = loan.due_time ? loan.due_time->seconds : 0;
    bool replay = false, changed = false;
    code = renewal_apply(&rule, a, &record, &replay, &changed, &st);
    if (code != STATUS_OK) {
        FUZZ_CHECK(code == STATUS_NOT_FOUND || code == STATUS_FAILED_PRECONDITION);
        FUZZ_CHECK(st.reason[0] != '\0' && st.message[0] != '\0' && !changed);
        FUZZ_CHECK(loan.renewal_count == count_before);
        return;
    }
    FUZZ_CHECK(changed && !replay);
    FUZZ_CHECK(loan.status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE);
    FUZZ_CHECK(loan.renewal_count == count_before + 1 && loan.renewal_count <= rule.max_renewals);
    FUZZ_CHECK(loan.due_time != NULL && loan.due_time->seconds >= due_before + 86400 &&
               loan.due_time->seconds >= rule.now_ms / 1000 + 86400);
    FUZZ_CHECK(record.renewal_unpublished && !record.overdue_published);
    FUZZ_CHECK((key[0] != '\0') == (record.n_renewal_requests == 1));
    code = renewal_apply(&rule, a, &record, &replay, &changed, &st);
    if (key[0] != '\0')
        FUZZ_CHECK(code == STATUS_OK && replay && !changed && loan.renewal_count == count_before + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    unsigned method = data[0] % METHOD_COUNT;
    bool admin = (data[0] / METHOD_COUNT) % 2 == 1;
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    const ProtobufCMessage *request = arena_unpack(a, request_types[method], data + 1, size - 1);
    if (request != NULL) {
        switch (method) {
        case 0: borrow_book((const void *)request); break;
        case 1: one_loan(((const Library__Lending__V1__ReturnBookRequest *)(const void *)request)->loan_id); break;
        case 2: one_loan(((const Library__Lending__V1__GetLoanRequest *)(const void *)request)->loan_id); break;
        case 3: list_loans((const void *)request, admin); break;
        default: renew_loan(a, (const void *)request, admin); break;
        }
    }
    arena_destroy(a);
    return 0;
}
