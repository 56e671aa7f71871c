/* fuzz_lending_requests.c - every LendingService request through what the service does with
 * it, without the network: protobuf-c decoding into an arena, the handlers' checks (ids,
 * request ids, ListLoans' and ListHolds' owner, page size, status filter and page token) and
 * the rules behind them: RenewLoan's over a loan record made from the request's bytes,
 * PlaceHold's limits over a user record made from them, PayFines' and WaiveFine's account rules
 * over an account made from them (no balance below zero, a retry changes nothing).
 *
 * Input: one byte choosing the method (and, for ListLoans, RenewLoan and ListHolds, whether
 * the caller is an administrator), then the serialized request. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "auth.h"
#include "field.h"
#include "fines.h"
#include "fuzz.h"
#include "lending.h"
#include "library/lending/v1/lending.pb-c.h"
#include "renewals.h"
#include "status.h"
#include "user_record.h"

static const ProtobufCMessageDescriptor *const request_types[] = {
    &library__lending__v1__borrow_book_request__descriptor,
    &library__lending__v1__return_book_request__descriptor,
    &library__lending__v1__get_loan_request__descriptor,
    &library__lending__v1__list_loans_request__descriptor,
    &library__lending__v1__renew_loan_request__descriptor,
    &library__lending__v1__place_hold_request__descriptor,
    &library__lending__v1__cancel_hold_request__descriptor,
    &library__lending__v1__get_hold_request__descriptor,
    &library__lending__v1__list_holds_request__descriptor,
    &library__lending__v1__pay_fines_request__descriptor,
    &library__lending__v1__waive_fine_request__descriptor,
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

/* PlaceHold: the ids it checks and makes, then the per-user rules over a user record whose
 * open loans and holds come from the request's bytes. A hold that is placed is open and last
 * in the history; placing it again is a replay that changes nothing; a refusal changes
 * nothing; closing it frees the slot once. */
static void place_hold(arena *a, const Library__Lending__V1__PlaceHoldRequest *req) {
    status st;
    status_code code = field_check_id(req->book_id, "book_id", &st);
    if (code == STATUS_OK)
        code = field_check_request_id(req->request_id, &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    /* The hold id, as the handler makes it: one GetHold and CancelHold accept, and never the
     * id of a loan made with the same request id. */
    char scoped[160], hold_id[LENDING_LOAN_ID_LENGTH + 1], loan_id[LENDING_LOAN_ID_LENGTH + 1];
    if (req->request_id[0])
        snprintf(scoped, sizeof scoped, "hold:%s", req->request_id);
    else
        scoped[0] = '\0';
    lending_new_loan_id("fuzz-user", scoped, hold_id);
    FUZZ_CHECK(field_check_id(hold_id, "hold_id", &st) == STATUS_OK);
    if (req->request_id[0]) {
        lending_new_loan_id("fuzz-user", req->request_id, loan_id);
        FUZZ_CHECK(strcmp(hold_id, loan_id) != 0);
    }

    /* Open loans and holds from the book id's bytes: byte i picks the entry's book (this one
     * or another), kind, state and due time. */
    size_t n = strlen(req->book_id);
    unsigned char seed = (unsigned char)req->book_id[0];
    user_record user = LIBRARY__LENDING__INTERNAL__USER_RECORD__INIT;
    user_open_loan *loans[8];
    Library__Lending__Internal__OpenHold *holds[8];
    char *history[8];
    Library__Lending__Internal__OpenLoan loan_rows[8];
    Library__Lending__Internal__OpenHold hold_rows[8];
    char ids[8][24];
    for (size_t i = 0; i < n % 8; i++) {
        unsigned char b = (unsigned char)req->book_id[i];
        snprintf(ids[i], sizeof ids[i], "entry-%zu", i);
        char *book = b % 3 == 0 ? req->book_id : "another-book";
        if (b % 2) {
            loan_rows[i] = (Library__Lending__Internal__OpenLoan)LIBRARY__LENDING__INTERNAL__OPEN_LOAN__INIT;
            loan_rows[i].loan_id = ids[i];
            loan_rows[i].book_id = book;
            loan_rows[i].status = 1 + (b / 2) % 2; /* PENDING or ACTIVE */
            loan_rows[i].due_time = (int64_t)b * 1000;
            loans[user.n_open_loans++] = &loan_rows[i];
        } else {
            hold_rows[i] = (Library__Lending__Internal__OpenHold)LIBRARY__LENDING__INTERNAL__OPEN_HOLD__INIT;
            hold_rows[i].hold_id = ids[i];
            hold_rows[i].book_id = book;
            holds[user.n_open_holds++] = &hold_rows[i];
            history[user.n_hold_history++] = ids[i];
        }
    }
    user.open_loans = loans;
    user.open_holds = holds;
    user.hold_history = history;
    user_hold hold = {.hold_id = hold_id, .book_id = req->book_id, .now_seconds = 100000,
                      .max_holds = 1 + seed % 5};
    size_t open_before = user.n_open_holds, history_before = user.n_hold_history;
    bool replay = false, changed = false;
    bool need_archive = false;
    code = user_record_add_hold(a, &user, &hold, &replay, &need_archive, &changed, &st);
    if (code != STATUS_OK) {
        FUZZ_CHECK(code == STATUS_FAILED_PRECONDITION && st.reason[0] != '\0' && st.message[0] != '\0');
        FUZZ_CHECK(!changed && user.n_open_holds == open_before && user.n_hold_history == history_before);
        return;
    }
    FUZZ_CHECK(changed && !replay);
    FUZZ_CHECK(user.n_open_holds == open_before + 1 && user.n_open_holds <= (size_t)hold.max_holds);
    FUZZ_CHECK(strcmp(user_record_hold_from_newest(&user, 0), hold_id) == 0);
    for (size_t i = 0; i + 1 < user.n_open_holds; i++) /* one open hold per book */
        FUZZ_CHECK(strcmp(user.open_holds[i]->book_id, req->book_id) != 0);
    FUZZ_CHECK(user_record_add_hold(a, &user, &hold, &replay, &need_archive, &changed, &st) == STATUS_OK);
    FUZZ_CHECK(replay && !changed && user.n_open_holds == open_before + 1);
    FUZZ_CHECK(user_record_close_hold(&user, hold_id) && user.n_open_holds == open_before);
    FUZZ_CHECK(!user_record_close_hold(&user, hold_id));
}

/* CancelHold and GetHold: the hold id is checked before anything is looked up. */
static void one_hold(const char *hold_id) {
    status st;
    status_code code = field_check_id(hold_id, "hold_id", &st);
    if (code != STATUS_OK)
        check_failure(code, &st);
}

/* ListHolds, with the handler's checks in its order: the status filter, the book id, a
 * book's queue only for administrators, then the owner, page size and page token. */
static void list_holds(const Library__Lending__V1__ListHoldsRequest *req, bool admin) {
    status st;
    if (req->status < 0 || req->status > LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_EXPIRED)
        return;
    if (req->book_id[0] && field_check_id(req->book_id, "book_id", &st)) {
        check_failure(st.code, &st);
        return;
    }
    bool book_queue = req->user_id[0] == '\0' && req->book_id[0] != '\0';
    if (book_queue && !admin)
        return;
    lending_list_query query;
    status_code code = lending_check_list("fuzz-user", admin, req->user_id, req->page_size, 0, req->page_token,
                                          &query, &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    FUZZ_CHECK(query.page_size >= 1 && query.page_size <= LENDING_PAGE_SIZE_MAX);
    FUZZ_CHECK(admin || strcmp(query.user_id, "fuzz-user") == 0);
    FUZZ_CHECK(query.start_at[0] == '\0' || strlen(query.start_at) == LENDING_LOAN_ID_LENGTH);
}

/* An account from the bytes of text: late ACTIVE loans with their fine terms, and fines
 * assessed, fixed, paid or waived in part. Entries point into the arrays given. */
enum { FUZZ_FINES = 6 };
typedef struct fuzz_account {
    user_record record;
    user_open_loan *open[FUZZ_FINES], open_rows[FUZZ_FINES];
    fine_entry *fines[FUZZ_FINES], fine_rows[FUZZ_FINES];
    fine_terms terms[FUZZ_FINES];
    char ids[FUZZ_FINES][24];
} fuzz_account;

static void account_from(fuzz_account *f, const char *text) {
    size_t n = strlen(text);
    f->record = (user_record)LIBRARY__LENDING__INTERNAL__USER_RECORD__INIT;
    for (size_t i = 0; i < n % FUZZ_FINES; i++) {
        unsigned char b = (unsigned char)text[i], c = (unsigned char)text[(i + 1) % n];
        snprintf(f->ids[i], sizeof f->ids[i], "loan-%zu", i);
        f->terms[i] = (fine_terms)LIBRARY__LENDING__INTERNAL__FINE_TERMS__INIT;
        f->terms[i].per_interval = b % 50;
        f->terms[i].interval_seconds = 1 + c % 100;
        f->terms[i].max_per_loan = (int64_t)b * c;
        if (b % 2) { /* a late loan still out, maybe already fined */
            f->open_rows[i] = (user_open_loan)LIBRARY__LENDING__INTERNAL__OPEN_LOAN__INIT;
            f->open_rows[i].loan_id = f->ids[i];
            f->open_rows[i].book_id = "book";
            f->open_rows[i].status = 1 + c % 2;
            f->open_rows[i].due_time = 100000 - (int64_t)c * 10;
            f->open_rows[i].fine_terms = &f->terms[i];
            f->open[f->record.n_open_loans++] = &f->open_rows[i];
        }
        if (b % 3 == 0) {
            fine_entry *e = &f->fine_rows[i];
            *e = (fine_entry)LIBRARY__LENDING__INTERNAL__FINE_ENTRY__INIT;
            e->loan_id = f->ids[i];
            e->terms = &f->terms[i];
            e->due_time = 100000 - (int64_t)c * 10;
            e->amount = (int64_t)(b % 7) * f->terms[i].per_interval;
            e->fixed = b % 2 == 0;
            e->paid = e->amount / (1 + c % 4);
            f->fines[f->record.n_fines++] = e;
        }
    }
    f->record.open_loans = f->open;
    f->record.fines = f->fines;
}

/* PayFines and WaiveFine over an account made from the request: a refusal changes nothing, a
 * payment takes exactly its amount off the balance and never below zero, and the same
 * request again is a replay. */
static void account_request(arena *a, const ProtobufCMessage *request, bool pay) {
    const Library__Lending__V1__PayFinesRequest *payment = pay ? (const void *)request : NULL;
    const Library__Lending__V1__WaiveFineRequest *waiver = pay ? NULL : (const void *)request;
    status st;
    const char *request_id = pay ? payment->request_id : waiver->request_id;
    status_code code = field_check_request_id(request_id, &st);
    if (code == STATUS_OK && !pay)
        code = field_check_id(waiver->loan_id, "loan_id", &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    fuzz_account f;
    account_from(&f, pay ? payment->user_id : waiver->loan_id);
    int64_t now_ms = 100000 * 1000LL;
    char key[ACCOUNT_REQUEST_KEY_LENGTH + 1];
    account_request_key(pay ? "PayFines" : "WaiveFine", request_id, key);
    bool replay = false;
    uint64_t version = f.record.account_version;
    int64_t before = account_balance(&f.record, now_ms / 1000);
    FUZZ_CHECK(before >= 0);
    code = pay ? account_pay(a, &f.record, payment->amount, key, now_ms, &replay, &st)
               : account_waive(a, &f.record, f.record.n_fines ? f.record.fines[0]->loan_id : waiver->loan_id,
                               waiver->reason, key, now_ms, &replay, &st);
    int64_t after = account_balance(&f.record, now_ms / 1000);
    FUZZ_CHECK(after >= 0);
    if (code != STATUS_OK) {
        FUZZ_CHECK(code == STATUS_INVALID_ARGUMENT || code == STATUS_FAILED_PRECONDITION);
        FUZZ_CHECK(st.reason[0] != '\0' && st.message[0] != '\0');
        FUZZ_CHECK(strcmp(st.reason, "OVERPAYMENT") != 0 || payment->amount > before);
        FUZZ_CHECK(after == before);
        return;
    }
    FUZZ_CHECK(!replay && f.record.account_version > version && f.record.n_account_outbox > 0);
    if (pay)
        FUZZ_CHECK(after == before - payment->amount);
    else
        FUZZ_CHECK(after <= before);
    if (key[0] == '\0')
        return;
    uint64_t done = f.record.account_version;
    code = pay ? account_pay(a, &f.record, payment->amount, key, now_ms, &replay, &st)
               : account_waive(a, &f.record, f.record.fines[0]->loan_id, waiver->reason, key, now_ms, &replay, &st);
    FUZZ_CHECK(code == STATUS_OK && replay && f.record.account_version == done);
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
        case 4: renew_loan(a, (const void *)request, admin); break;
        case 5: place_hold(a, (const void *)request); break;
        case 6: one_hold(((const Library__Lending__V1__CancelHoldRequest *)(const void *)request)->hold_id); break;
        case 7: one_hold(((const Library__Lending__V1__GetHoldRequest *)(const void *)request)->hold_id); break;
        case 8: list_holds((const void *)request, admin); break;
        case 9: account_request(a, request, true); break;
        default: account_request(a, request, false); break;
        }
    }
    arena_destroy(a);
    return 0;
}
