/* test_lending.c - LendingService and the borrow saga over gRPC, against real nats-server,
 * catalog and lending processes: the seed's scenario, concurrency, limits, overdue loans,
 * idempotency, ownership, a catalog outage, crashes, the history ListLoans keeps, and how
 * lending starts without NATS, drains on SIGTERM and reports readiness. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "events.h"
#include "grpc/health/v1/health.pb-c.h"
#include "kv.h"
#include "lending.h"
#include "library/lending/v1/lending.pb-c.h"
#include "loan_record.pb-c.h"
#include "stack_fixture.h"
#include "text.h"
#include "timestamp.h"

typedef Library__Lending__V1__Loan Loan;

#define LENDING "/library.lending.v1.LendingService/"
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define PENDING LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING
#define CANCELED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED
#define RETURNED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED

TestSuite(lending, .init = fixture_setup, .fini = fixture_teardown, .timeout = 120);

static const char *unique(const char *prefix) {
    char id[13];
    text_random_hex(id, 6);
    return arena_sprintf(mem, "%s-%s", prefix, id);
}

static status_code borrow_on(rpc_client *c, const char *bearer, const char *book_id,
                             const char *request_id, Loan **out, status *st) {
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    request.request_id = (char *)(request_id ? request_id : "");
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(c, LENDING "BorrowBook", &request.base, &library__lending__v1__loan__descriptor,
                                    mem, bearer, &response, st);
    if (out)
        *out = (Loan *)response;
    return code;
}

static Loan *borrow(const char *user, const char *book_id) {
    Loan *loan = NULL;
    status st;
    status_code code = borrow_on(lending, user_bearer(user), book_id, NULL, &loan, &st);
    cr_assert_eq(code, STATUS_OK, "BorrowBook by %s: %s %s", user, status_code_name(code), st.message);
    return loan;
}

static status_code return_loan_on(rpc_client *c, const char *bearer, const char *loan_id, Loan **out,
                                  status *st) {
    Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(c, LENDING "ReturnBook", &request.base, &library__lending__v1__loan__descriptor,
                                    mem, bearer, &response, st);
    if (out)
        *out = (Loan *)response;
    return code;
}

static status_code return_loan(const char *bearer, const char *loan_id, Loan **out, status *st) {
    return return_loan_on(lending, bearer, loan_id, out, st);
}

static status_code get_loan_on(rpc_client *c, const char *bearer, const char *loan_id, Loan **out, status *st) {
    Library__Lending__V1__GetLoanRequest request = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(c, LENDING "GetLoan", &request.base, &library__lending__v1__loan__descriptor, mem,
                                    bearer, &response, st);
    *out = (Loan *)response;
    return code;
}

static Loan *get_loan(const char *bearer, const char *loan_id, status_code expected) {
    Loan *loan = NULL;
    status st;
    status_code code = get_loan_on(lending, bearer, loan_id, &loan, &st);
    cr_assert_eq(code, expected, "GetLoan: %s %s", status_code_name(code), st.message);
    return loan;
}

static int available(const char *book_id) {
    Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(call_catalog("GetBook", &request.base, &library__catalog__v1__book__descriptor,
                              user_bearer("reader"), &response, &st),
                 STATUS_OK);
    return ((Book *)response)->available_copies;
}

/* Polls until the book shows `expected` available copies (the saga is asynchronous). */
static void expect_available(const char *book_id, int expected) {
    int64_t until = harness_now_ms() + 8000;
    int now = available(book_id);
    while (now != expected && harness_now_ms() < until) {
        harness_sleep_ms(50);
        now = available(book_id);
    }
    cr_assert_eq(now, expected, "available_copies is %d, expected %d", now, expected);
}

/* Polls a loan until it leaves PENDING. */
static Loan *settled(const char *user, const char *loan_id) {
    int64_t until = harness_now_ms() + 8000;
    Loan *loan = get_loan(user_bearer(user), loan_id, STATUS_OK);
    while (loan->status == PENDING && harness_now_ms() < until) {
        harness_sleep_ms(50);
        loan = get_loan(user_bearer(user), loan_id, STATUS_OK);
    }
    return loan;
}

Test(lending, the_seed_scenario_out_of_stock_compensation_and_restock) {
    Book *book = register_book("Saga and Compensation", "Seed", "978-89", 4);
    const char *users[4];
    for (int i = 0; i < 4; i++) {
        users[i] = unique("reader");
        Loan *loan = settled(users[i], borrow(users[i], book->book_id)->loan_id);
        cr_assert_eq(loan->status, ACTIVE, "borrow %d is %d", i + 1, loan->status);
        cr_assert_str_eq(loan->book_title, "Saga and Compensation");
        cr_assert_not_null(loan->due_time);
        cr_assert_gt(loan->due_time->seconds, loan->borrow_time->seconds + 13 * 86400);
        expect_available(book->book_id, 3 - i);
    }
    const char *fifth = unique("reader");
    Loan *canceled = settled(fifth, borrow(fifth, book->book_id)->loan_id);
    cr_assert_eq(canceled->status, CANCELED, "the fifth borrow must be canceled");
    cr_assert_str_eq(canceled->cancel_reason, "OUT_OF_STOCK");
    expect_available(book->book_id, 0);

    Library__Catalog__V1__AdjustStockRequest restock = LIBRARY__CATALOG__V1__ADJUST_STOCK_REQUEST__INIT;
    restock.book_id = book->book_id;
    restock.delta = 3;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(call_catalog("AdjustStock", &restock.base, &library__catalog__v1__book__descriptor,
                              admin_bearer(), &response, &st),
                 STATUS_OK, "%s", st.message);
    cr_assert_eq(((Book *)response)->available_copies, 3);
    cr_assert_eq(((Book *)response)->total_copies, 7);

    const char *sixth = unique("reader");
    cr_assert_eq(settled(sixth, borrow(sixth, book->book_id)->loan_id)->status, ACTIVE);
    expect_available(book->book_id, 2);

    /* withdrawing copies on loan is refused */
    restock.delta = -3;
    cr_assert_eq(call_catalog("AdjustStock", &restock.base, &library__catalog__v1__book__descriptor,
                              admin_bearer(), &response, &st),
                 STATUS_FAILED_PRECONDITION);

    Library__Lending__V1__ListLoansRequest list = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
    cr_assert_eq(harness_call(lending, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                              mem, user_bearer(users[0]), &response, &st),
                 STATUS_OK);
    Library__Lending__V1__ListLoansResponse *mine = (void *)response;
    cr_assert_eq(mine->n_loans, 1);
    Loan *returned = NULL;
    cr_assert_eq(return_loan(user_bearer(users[0]), mine->loans[0]->loan_id, &returned, &st), STATUS_OK,
                 "%s", st.message);
    cr_assert_eq(returned->status, RETURNED);
    cr_assert_not_null(returned->return_time);
    expect_available(book->book_id, 3);
}

typedef struct borrow_job {
    const char *address, *bearer, *book_id;
    status_code code;
    int loan_status;
    int64_t answered_at_ms; /* harness_now_ms() when the answer came */
    char loan_id[32];
    char user[64];
    char message[200];
} borrow_job;

static void *borrow_thread(void *arg) {
    borrow_job *job = arg;
    rpc_client *own = NULL;
    rpc_client_create(job->address, 15000, &own, NULL);
    arena *a = arena_create(0);
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)job->book_id;
    ProtobufCMessage *response = NULL;
    status st;
    job->code = harness_call(own, LENDING "BorrowBook", &request.base, &library__lending__v1__loan__descriptor,
                             a, job->bearer, &response, &st);
    job->answered_at_ms = harness_now_ms();
    if (job->code == STATUS_OK) {
        snprintf(job->loan_id, sizeof job->loan_id, "%s", ((Loan *)response)->loan_id);
        job->loan_status = (int)((Loan *)response)->status;
    }
    snprintf(job->message, sizeof job->message, "%.199s", st.message);
    arena_destroy(a);
    rpc_client_destroy(own);
    return NULL;
}

Test(lending, fifty_concurrent_borrows_of_ten_copies_give_exactly_ten_loans) {
    Book *book = register_book("Contended classic", "A", "", 10);
    enum { BORROWERS = 50 };
    borrow_job jobs[BORROWERS];
    pthread_t threads[BORROWERS];
    for (int i = 0; i < BORROWERS; i++) {
        jobs[i] = (borrow_job){.address = fixture_lending_address(), .book_id = book->book_id};
        snprintf(jobs[i].user, sizeof jobs[i].user, "%s", unique("crowd"));
        jobs[i].bearer = user_bearer(jobs[i].user);
        pthread_create(&threads[i], NULL, borrow_thread, &jobs[i]);
    }
    int active = 0, canceled = 0;
    for (int i = 0; i < BORROWERS; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_eq(jobs[i].code, STATUS_OK, "borrow %d: %s", i, status_code_name(jobs[i].code));
    }
    for (int i = 0; i < BORROWERS; i++) {
        Loan *loan = settled(jobs[i].user, jobs[i].loan_id);
        active += loan->status == ACTIVE;
        canceled += loan->status == CANCELED;
    }
    cr_assert_eq(active, 10, "%d loans are ACTIVE", active);
    cr_assert_eq(canceled, 40, "%d loans are CANCELED", canceled);
    expect_available(book->book_id, 0);
}

Test(lending, the_loan_limit_holds_even_for_concurrent_borrows) {
    const char *user = unique("greedy");
    Book *books[12];
    for (int i = 0; i < 12; i++)
        books[i] = register_book(arena_sprintf(mem, "Limit %d", i), "A", "", 3);
    enum { TRIES = 12 };
    borrow_job jobs[TRIES];
    pthread_t threads[TRIES];
    const char *bearer = user_bearer(user);
    for (int i = 0; i < TRIES; i++) {
        jobs[i] = (borrow_job){.address = fixture_lending_address(), .bearer = bearer, .book_id = books[i]->book_id};
        pthread_create(&threads[i], NULL, borrow_thread, &jobs[i]);
    }
    int granted = 0, limited = 0;
    for (int i = 0; i < TRIES; i++) {
        pthread_join(threads[i], NULL);
        granted += jobs[i].code == STATUS_OK;
        limited += jobs[i].code == STATUS_FAILED_PRECONDITION;
    }
    cr_assert_eq(granted, 5, "the limit is 5, %d went through", granted);
    cr_assert_eq(limited, TRIES - 5);
    Loan *loan = NULL;
    status st;
    cr_assert_eq(borrow_on(lending, bearer, books[0]->book_id, NULL, &loan, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "LOAN_LIMIT");
}

Test(lending, a_request_id_makes_borrow_idempotent) {
    Book *book = register_book("Once only", "A", "", 5);
    const char *user = unique("careful");
    Loan *first = NULL, *again = NULL;
    status st;
    cr_assert_eq(borrow_on(lending, user_bearer(user), book->book_id, "borrow-1", &first, &st), STATUS_OK);
    cr_assert_eq(borrow_on(lending, user_bearer(user), book->book_id, "borrow-1", &again, &st), STATUS_OK,
                 "%s", st.message);
    cr_assert_str_eq(first->loan_id, again->loan_id);
    cr_assert_eq(settled(user, first->loan_id)->status, ACTIVE);
    expect_available(book->book_id, 4);
    harness_sleep_ms(300);
    cr_assert_eq(available(book->book_id), 4, "a retried borrow took a second copy");
}

Test(lending, returns_are_for_the_borrower_or_an_admin_and_idempotent) {
    Book *book = register_book("Returnable", "A", "", 2);
    const char *owner = unique("owner");
    Loan *loan = settled(owner, borrow(owner, book->book_id)->loan_id);
    cr_assert_eq(loan->status, ACTIVE);
    status st;
    cr_assert_eq(return_loan(user_bearer("stranger"), loan->loan_id, NULL, &st), STATUS_NOT_FOUND);
    get_loan(user_bearer("stranger"), loan->loan_id, STATUS_NOT_FOUND);
    Loan *done = NULL;
    cr_assert_eq(return_loan(admin_bearer(), loan->loan_id, &done, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(done->status, RETURNED);
    cr_assert_eq(return_loan(user_bearer(owner), loan->loan_id, &done, &st), STATUS_OK);
    cr_assert_eq(done->status, RETURNED);
    expect_available(book->book_id, 2);
    harness_sleep_ms(300);
    cr_assert_eq(available(book->book_id), 2, "a second return gave back a second copy");

    Book *none = register_book("Nothing on the shelf", "A", "", 0);
    const char *unlucky = unique("unlucky");
    Loan *canceled = settled(unlucky, borrow(unlucky, none->book_id)->loan_id);
    cr_assert_eq(canceled->status, CANCELED);
    cr_assert_eq(return_loan(user_bearer(unlucky), canceled->loan_id, NULL, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "LOAN_NOT_ACTIVE");
}

Test(lending, bad_requests_and_unknown_things) {
    status st;
    Loan *loan = NULL;
    cr_assert_eq(borrow_on(lending, user_bearer("x"), "ffffffffffffffffffff", NULL, &loan, &st), STATUS_NOT_FOUND);
    cr_assert_eq(borrow_on(lending, user_bearer("x"), "bad id!", NULL, &loan, &st), STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "book_id") != NULL);
    cr_assert_eq(borrow_on(lending, NULL, "ffffffffffffffffffff", NULL, &loan, &st), STATUS_UNAUTHENTICATED);
    get_loan(user_bearer("x"), "ffffffffffffffffffff", STATUS_NOT_FOUND);
    get_loan(user_bearer("x"), "", STATUS_INVALID_ARGUMENT);

    Library__Lending__V1__ListLoansRequest list = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
    list.user_id = "someone-else";
    ProtobufCMessage *response = NULL;
    cr_assert_eq(harness_call(lending, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                              mem, user_bearer("x"), &response, &st),
                 STATUS_PERMISSION_DENIED);
    cr_assert_eq(harness_call(lending, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                              mem, admin_bearer(), &response, &st),
                 STATUS_OK);
    list.user_id = "";
    list.page_token = "garbage";
    cr_assert_eq(harness_call(lending, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                              mem, user_bearer("x"), &response, &st),
                 STATUS_INVALID_ARGUMENT);
}

Test(lending, list_loans_pages_newest_first_and_filters_by_status) {
    const char *user = unique("lister");
    Book *book = register_book("Listable", "A", "", 10);
    const char *ids[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = settled(user, borrow(user, book->book_id)->loan_id)->loan_id;
    }
    status st;
    cr_assert_eq(return_loan(user_bearer(user), ids[0], NULL, &st), STATUS_OK);
    Library__Lending__V1__ListLoansRequest list = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
    list.page_size = 3;
    ProtobufCMessage *response = NULL;
    cr_assert_eq(harness_call(lending, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                              mem, user_bearer(user), &response, &st),
                 STATUS_OK);
    Library__Lending__V1__ListLoansResponse *page = (void *)response;
    cr_assert_eq(page->n_loans, 3);
    cr_assert_str_eq(page->loans[0]->loan_id, ids[3], "newest first");
    cr_assert_str_not_empty(page->next_page_token);
    /* a borrow between two pages goes to the front and shifts nothing on the next page */
    settled(user, borrow(user, book->book_id)->loan_id);
    list.page_token = page->next_page_token;
    cr_assert_eq(harness_call(lending, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                              mem, user_bearer(user), &response, &st),
                 STATUS_OK);
    page = (void *)response;
    cr_assert_eq(page->n_loans, 1, "the second page has %zu loans (%s first): a loan shown twice", page->n_loans,
                 page->n_loans ? page->loans[0]->loan_id : "none");
    cr_assert_str_eq(page->loans[0]->loan_id, ids[0]);
    cr_assert_str_empty(page->next_page_token);
    list.page_token = "";
    list.page_size = 0;
    list.status = RETURNED;
    cr_assert_eq(harness_call(lending, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                              mem, user_bearer(user), &response, &st),
                 STATUS_OK);
    page = (void *)response;
    cr_assert_eq(page->n_loans, 1);
    cr_assert_eq(page->loans[0]->status, RETURNED);
    /* a token for a loan that is not in this user's history */
    list.status = 0;
    list.page_token = "n0123456789abcdef0123";
    cr_assert_eq(harness_call(lending, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                              mem, user_bearer(user), &response, &st),
                 STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.reason, "INVALID_PAGE_TOKEN");
}

/* --- stacks of their own ------------------------------------------------------------------ */

Test(lending, an_overdue_loan_blocks_borrowing_until_it_is_returned) {
    const char *env[] = {"LOAN_PERIOD=2s", "RECONCILE_INTERVAL=500ms", NULL};
    test_stack s;
    test_stack_start(&s, "overdue", env, false, NULL);
    Book *book = test_stack_register(&s, "Late", 5);
    const char *bearer = harness_bearer(mem, s.dir, "late-reader", false);
    nats_connection *watcher = NULL;
    nats_connection_options watch_options = harness_nats_options(s.nats.url, "test");
    status st;
    cr_assert_eq(nats_connection_open(&watch_options, &watcher, &st), STATUS_OK, "%s", st.message);
    natsSubscription *overdue_events = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&overdue_events, nats_connection_core(watcher),
                                              events_subject(LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE)), NATS_OK);
    Loan *loan = NULL;
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(loan->status, ACTIVE);
    cr_assert_not(loan->overdue);
    harness_sleep_ms(3200);

    /* the sweeper announces the overdue loan once */
    natsMsg *announced = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&announced, overdue_events, 3000), NATS_OK, "no LoanOverdue event");
    Library__Events__V1__Event *e = library__events__v1__event__unpack(
        NULL, (size_t)natsMsg_GetDataLength(announced), (const uint8_t *)natsMsg_GetData(announced));
    cr_assert_not_null(e);
    cr_assert_eq(e->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE);
    cr_assert_str_eq(e->loan_overdue->loan_id, loan->loan_id);
    library__events__v1__event__free_unpacked(e, NULL);
    natsMsg_Destroy(announced);
    announced = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&announced, overdue_events, 1500), NATS_TIMEOUT,
                 "LoanOverdue was published more than once");
    natsSubscription_Unsubscribe(overdue_events);
    nats_connection_retire_subscription(watcher, overdue_events);
    nats_connection_close(watcher);
    Loan *second = NULL;
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &second, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERDUE_LOANS");
    Library__Lending__V1__GetLoanRequest get = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    get.loan_id = loan->loan_id;
    ProtobufCMessage *response = NULL;
    cr_assert_eq(harness_call(s.lending_client, LENDING "GetLoan", &get.base, &library__lending__v1__loan__descriptor,
                              mem, bearer, &response, &st),
                 STATUS_OK);
    cr_assert(((Loan *)response)->overdue, "GetLoan must say overdue");

    Library__Lending__V1__ReturnBookRequest give_back = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    give_back.loan_id = loan->loan_id;
    cr_assert_eq(harness_call(s.lending_client, LENDING "ReturnBook", &give_back.base,
                              &library__lending__v1__loan__descriptor, mem, bearer, &response, &st),
                 STATUS_OK, "%s", st.message);
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &second, &st), STATUS_OK,
                 "borrowing after the return: %s", st.message);
    test_stack_stop(&s);
}

Test(lending, a_catalog_outage_gives_fast_unavailable_and_recovers) {
    const char *env[] = {"BREAKER_FAILURES=3", "BREAKER_OPEN=500ms", NULL};
    test_stack s;
    test_stack_start(&s, "breaker", env, false, NULL);
    Book *book = test_stack_register(&s, "Offline", 5);
    const char *bearer = harness_bearer(mem, s.dir, "patient", false);
    int catalog_port = s.catalog.port;
    cr_assert_eq(harness_process_stop(&s.catalog, SIGTERM, 10000), 0);
    Loan *loan = NULL;
    status st;
    for (int i = 0; i < 5; i++) {
        int64_t started = harness_now_ms();
        cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st), STATUS_UNAVAILABLE,
                     "attempt %d: %s", i, st.message);
        cr_assert_lt(harness_now_ms() - started, harness_latency_bound_ms(1500), "UNAVAILABLE took too long");
    }
    int64_t started = harness_now_ms();
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st), STATUS_UNAVAILABLE);
    cr_assert_lt(harness_now_ms() - started, harness_latency_bound_ms(100), "with the circuit open the answer is immediate");
    cr_assert_str_eq(st.reason, "CATALOG_UNAVAILABLE");

    char nats_env[160], port_env[32];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", s.nats.url);
    snprintf(port_env, sizeof port_env, "GRPC_PORT=%d", catalog_port);
    const char *catalog_env[] = {nats_env, port_env, NULL};
    cr_assert(harness_service_start("catalog", s.dir, catalog_env, &s.catalog));
    int64_t until = harness_now_ms() + 10000;
    status_code code;
    do {
        harness_sleep_ms(200);
        code = borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st);
    } while (code != STATUS_OK && harness_now_ms() < until);
    cr_assert_eq(code, STATUS_OK, "lending did not recover: %s", st.message);
    test_stack_stop(&s);
}

/* --- crashes -------------------------------------------------------------------------------- */

/* A loan the burst was told of: BorrowBook answered OK (its status then), or ReturnBook
 * answered OK (RETURNED). */
typedef struct burst_ack {
    char loan_id[LENDING_LOAN_ID_LENGTH + 1];
    int answered;
} burst_ack;

enum { BURST_ACKS_MAX = 512 };

typedef struct burst {
    const char *dir;
    const char *address;
    const char *const *book_ids;
    int book_count;
    int user;
    int64_t until_ms;
    int calls, ok;
    burst_ack acks[BURST_ACKS_MAX];
    int ack_count;
} burst;

static void burst_acknowledge(burst *b, const char *loan_id, int answered) {
    for (int i = 0; i < b->ack_count; i++)
        if (strcmp(b->acks[i].loan_id, loan_id) == 0) {
            b->acks[i].answered = answered; /* a return of a loan borrowed before */
            return;
        }
    if (b->ack_count < BURST_ACKS_MAX) {
        snprintf(b->acks[b->ack_count].loan_id, sizeof b->acks[0].loan_id, "%s", loan_id);
        b->acks[b->ack_count++].answered = answered;
    }
}

static void *borrow_burst(void *arg) {
    burst *b = arg;
    arena *a = arena_create(0);
    const char *bearer = harness_bearer(a, b->dir, arena_sprintf(a, "crash-user-%d", b->user), false);
    for (int i = 0; harness_now_ms() < b->until_ms; i++) {
        rpc_client *c = NULL;
        rpc_client_create(b->address, 2000, &c, NULL);
        Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
        request.book_id = (char *)b->book_ids[(b->user + i) % b->book_count];
        request.request_id = arena_sprintf(a, "burst-%d-%d", b->user, i);
        ProtobufCMessage *response = NULL;
        status st;
        b->calls++;
        if (harness_call(c, LENDING "BorrowBook", &request.base, &library__lending__v1__loan__descriptor, a,
                         bearer, &response, &st) == STATUS_OK) {
            b->ok++;
            const Loan *loan = (Loan *)response;
            burst_acknowledge(b, loan->loan_id, (int)loan->status);
            /* give some back so the users stay under their limit */
            if (i % 2 == 1 && loan->status == ACTIVE) {
                Library__Lending__V1__ReturnBookRequest back = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
                back.loan_id = loan->loan_id;
                if (harness_call(c, LENDING "ReturnBook", &back.base, &library__lending__v1__loan__descriptor, a,
                                 bearer, &response, &st) == STATUS_OK)
                    burst_acknowledge(b, back.loan_id, RETURNED);
            }
        }
        rpc_client_destroy(c);
        harness_sleep_ms(20);
    }
    arena_destroy(a);
    return NULL;
}

/* Every loan of the crash users through ListLoans (admin), counted by book and status. */
static void count_loans(test_stack *s, int users, const char *book_id, int *active, int *pending) {
    *active = *pending = 0;
    for (int u = 0; u < users; u++) {
        Library__Lending__V1__ListLoansRequest list = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
        list.user_id = arena_sprintf(mem, "crash-user-%d", u);
        list.page_size = 100;
        for (int page = 0; page < 20; page++) {
            ProtobufCMessage *response = NULL;
            status st;
            cr_assert_eq(harness_call(s->lending_client, LENDING "ListLoans", &list.base,
                                      &library__lending__v1__list_loans_response__descriptor, mem,
                                      harness_bearer(mem, s->dir, "admin", true), &response, &st),
                         STATUS_OK, "%s", st.message);
            Library__Lending__V1__ListLoansResponse *r = (void *)response;
            for (size_t i = 0; i < r->n_loans; i++) {
                if (strcmp(r->loans[i]->book_id, book_id) != 0)
                    continue;
                *active += r->loans[i]->status == ACTIVE;
                *pending += r->loans[i]->status == PENDING;
            }
            if (r->next_page_token == NULL || r->next_page_token[0] == '\0')
                break;
            list.page_token = r->next_page_token;
        }
    }
}

static int own_available(test_stack *s, const char *book_id, int *total) {
    Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(s->catalog_client, CATALOG "GetBook", &request.base, &library__catalog__v1__book__descriptor,
                              mem, harness_bearer(mem, s->dir, "reader", false), &response, &st),
                 STATUS_OK, "%s", st.message);
    *total = ((Book *)response)->total_copies;
    return ((Book *)response)->available_copies;
}

static const char *loan_status_name(int value) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&library__lending__v1__loan_status__descriptor, value);
    return v ? v->name : "?";
}

/* Whether a loan at rest is what its client was told: RETURNED and CANCELED are final, an
 * ACTIVE loan may have been given back since, a PENDING one must have settled. */
static bool outcome_kept(int answered, int now) {
    switch (answered) {
    case ACTIVE: return now == ACTIVE || now == RETURNED;
    case PENDING: return now == ACTIVE || now == CANCELED || now == RETURNED;
    default: return now == answered;
    }
}

/* Every loan a burst was told of, read back at rest: it exists, is its user's, and is as told.
 * Returns how many it checked. */
static int expect_acknowledged_kept(test_stack *s, const burst *bursts, int users) {
    const char *admin = harness_bearer(mem, s->dir, "admin", true);
    int checked = 0;
    for (int u = 0; u < users; u++) {
        const burst *b = &bursts[u];
        const char *user = arena_sprintf(mem, "crash-user-%d", u);
        cr_assert_lt(b->ack_count, BURST_ACKS_MAX, "%s was told of more loans than the test keeps", user);
        for (int k = 0; k < b->ack_count; k++) {
            const burst_ack *ack = &b->acks[k];
            Loan *loan = NULL;
            status st;
            status_code code = get_loan_on(s->lending_client, admin, ack->loan_id, &loan, &st);
            cr_assert_eq(code, STATUS_OK, "loan %s of %s was answered %s, but GetLoan says %s: %s", ack->loan_id,
                         user, loan_status_name(ack->answered), status_code_name(code), st.message);
            cr_assert_str_eq(loan->user_id, user, "loan %s was %s's, GetLoan says %s's", ack->loan_id, user,
                             loan->user_id);
            cr_assert(outcome_kept(ack->answered, (int)loan->status), "loan %s of %s was answered %s but is %s at rest",
                      ack->loan_id, user, loan_status_name(ack->answered), loan_status_name((int)loan->status));
            checked++;
        }
    }
    return checked;
}

static void crash_during_burst(const char *name, bool crash_catalog) {
    const char *env[] = {"RECONCILE_INTERVAL=500ms", "RECONCILE_AFTER=1s", "EVENT_ACK_WAIT=2s",
                         "BREAKER_OPEN=200ms", NULL};
    test_stack s;
    test_stack_start(&s, name, env, false, NULL);
    enum { BOOKS = 3, USERS = 6, COPIES = 4 };
    const char *books[BOOKS];
    for (int i = 0; i < BOOKS; i++)
        books[i] = test_stack_register(&s, arena_sprintf(mem, "Crash %d", i), COPIES)->book_id;
    burst bursts[USERS];
    pthread_t threads[USERS];
    int64_t until = harness_now_ms() + 3000;
    for (int u = 0; u < USERS; u++) {
        bursts[u] = (burst){.dir = s.dir, .address = s.lending.address, .book_ids = books,
                            .book_count = BOOKS, .user = u, .until_ms = until};
        pthread_create(&threads[u], NULL, borrow_burst, &bursts[u]);
    }
    harness_sleep_ms(800);
    harness_process *victim = crash_catalog ? &s.catalog : &s.lending;
    int port = victim->port;
    cr_assert_eq(harness_process_stop(victim, SIGKILL, 5000), 128 + SIGKILL);
    harness_sleep_ms(300);
    char port_env[32];
    snprintf(port_env, sizeof port_env, "GRPC_PORT=%d", port);
    if (crash_catalog) {
        char nats_env[160];
        snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", s.nats.url);
        const char *catalog_env[] = {nats_env, port_env, "EVENT_ACK_WAIT=2s", NULL};
        cr_assert(harness_service_start("catalog", s.dir, catalog_env, &s.catalog), "catalog did not restart");
    } else {
        const char *lending_env[] = {"RECONCILE_INTERVAL=500ms", "RECONCILE_AFTER=1s", "EVENT_ACK_WAIT=2s",
                                     port_env, NULL};
        cr_assert(fixture_start_lending(s.dir, s.nats.url, s.catalog.address, lending_env, &s.lending),
                  "lending did not restart");
    }
    int calls = 0, ok = 0;
    for (int u = 0; u < USERS; u++) {
        pthread_join(threads[u], NULL);
        calls += bursts[u].calls;
        ok += bursts[u].ok;
    }
    cr_assert_gt(ok, 10, "the burst barely ran (%d of %d calls ok)", ok, calls);

    /* settle: no loan PENDING, and for every book available + ACTIVE == the copies registered
     * (not total_copies alone: the catalog under test could lose or make a copy in both) */
    int64_t deadline = harness_now_ms() + 20000;
    bool settled_all = false;
    int active = 0, pending = 0, total = 0, on_shelf = 0;
    while (!settled_all && harness_now_ms() < deadline) {
        harness_sleep_ms(500);
        settled_all = true;
        for (int b = 0; b < BOOKS && settled_all; b++) {
            count_loans(&s, USERS, books[b], &active, &pending);
            on_shelf = own_available(&s, books[b], &total);
            settled_all = pending == 0 && on_shelf + active == COPIES && total == COPIES;
        }
    }
    cr_assert(settled_all, "after the crash: pending %d, available %d + active %d != %d copies registered "
              "(total_copies %d)", pending, on_shelf, active, COPIES, total);
    int acknowledged = expect_acknowledged_kept(&s, bursts, USERS);

    /* The reconciler keeps in view the open loans only: here exactly the ACTIVE ones, since
     * every other loan of the burst was canceled or returned and its copy confirmed back. */
    int all_active = 0;
    for (int b = 0; b < BOOKS; b++) {
        int book_active = 0;
        count_loans(&s, USERS, books[b], &book_active, &pending);
        all_active += book_active;
    }
    double in_view = -1;
    for (int64_t until_ms = harness_now_ms() + 5000; harness_now_ms() < until_ms; harness_sleep_ms(200)) {
        char *body = harness_scrape(mem, s.lending.metrics_port);
        in_view = body ? harness_sample(body, "library_reconciler_open_loans") : -1;
        if (in_view == all_active)
            break;
    }
    cr_assert_eq(in_view, all_active, "the reconciler holds %g loans in view; %d are ACTIVE", in_view, all_active);
    cr_log_info("%s: %d calls, %d ok, %d acknowledged loans kept, invariant holds for %d books, %d loans open",
                name, calls, ok, acknowledged, BOOKS, all_active);
    test_stack_stop(&s);
}

Test(lending, kill_9_of_lending_mid_burst_loses_nothing) {
    crash_during_burst("crash-lending", false);
}

Test(lending, kill_9_of_catalog_mid_burst_loses_nothing) {
    crash_during_burst("crash-catalog", true);
}

/* A crash inside BorrowBook, after it wrote the user record and before it stored the loan,
 * leaves the record naming a loan that does not exist. The entry holds a slot until the
 * reconciler claims the loan as CANCELED INTERRUPTED, which it does only once the entry has
 * looked so for RECONCILE_AFTER (a borrow in progress looks the same for a moment). The
 * client's retry of that request afterwards gets that loan, and no second one. */
Test(lending, a_slot_held_by_a_loan_never_stored_is_freed_after_the_grace) {
    const char *env[] = {"MAX_ACTIVE_LOANS=1", "RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=2s", NULL};
    test_stack s;
    test_stack_start(&s, "ghost", env, false, NULL);
    Book *book = test_stack_register(&s, "Ghostly", 2);
    const char *user = "ghost-user";

    /* the user record as the request left it when it died */
    status st;
    char ghost_id[21];
    lending_new_loan_id(user, "ghost-request", ghost_id);
    Library__Lending__Internal__OpenLoan ghost = LIBRARY__LENDING__INTERNAL__OPEN_LOAN__INIT;
    ghost.loan_id = ghost_id;
    ghost.status = PENDING;
    Library__Lending__Internal__OpenLoan *open[] = {&ghost};
    char *history[] = {ghost_id};
    Library__Lending__Internal__UserRecord record = LIBRARY__LENDING__INTERNAL__USER_RECORD__INIT;
    record.n_open_loans = 1;
    record.open_loans = open;
    record.n_history = 1;
    record.history = history;
    test_stack_plant_user_record(&s, user, &record.base);
    int64_t planted = harness_now_ms();

    const char *bearer = harness_bearer(mem, s.dir, user, false);
    Loan *loan = NULL;
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st), STATUS_FAILED_PRECONDITION,
                 "the entry holds the only slot");
    cr_assert_str_eq(st.reason, "LOAN_LIMIT");
    status_code code = STATUS_FAILED_PRECONDITION;
    while (code == STATUS_FAILED_PRECONDITION && harness_now_ms() - planted < 10000) {
        harness_sleep_ms(200);
        code = borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st);
    }
    int64_t freed_after = harness_now_ms() - planted;
    cr_assert_eq(code, STATUS_OK, "the slot was not freed in 10 s: %s", st.message);
    cr_assert_eq(loan->status, ACTIVE);
    cr_assert_geq(freed_after, 1800, "the entry was dropped after %lld ms, inside the grace", (long long)freed_after);
    cr_log_info("the slot was freed %lld ms after the crash", (long long)freed_after);

    /* the loan that was never stored is on record as interrupted, with the book it was for */
    Loan *interrupted = NULL;
    cr_assert_eq(get_loan_on(s.lending_client, bearer, ghost_id, &interrupted, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(interrupted->book_id, "");
    cr_assert_eq(interrupted->status, CANCELED, "the interrupted loan is %d", interrupted->status);
    cr_assert_str_eq(interrupted->cancel_reason, "INTERRUPTED");
    /* the client retries the request that died: it gets that loan, not a second one beyond
     * the limit */
    code = borrow_on(s.lending_client, bearer, book->book_id, "ghost-request", &loan, &st);
    cr_assert_eq(code, STATUS_OK, "the retry got %s (%s)", status_code_name(code), st.message);
    cr_assert_str_eq(loan->loan_id, ghost_id);
    cr_assert_eq(loan->status, CANCELED, "the retry made loan %s %d", loan->loan_id, loan->status);
    test_stack_stop(&s);
}

/* MAX_ACTIVE_LOANS may be set up to 1000: every open loan counts, not only the first 64. */
Test(lending, a_loan_limit_above_sixty_four_holds) {
    enum { LIMIT = 66 };
    const char *env[] = {"MAX_ACTIVE_LOANS=66", NULL};
    test_stack s;
    test_stack_start(&s, "many", env, false, NULL);
    Book *book = test_stack_register(&s, "Many copies", LIMIT + 2);
    const char *bearer = harness_bearer(mem, s.dir, "collector", false);
    Loan *loan = NULL;
    status st;
    for (int i = 0; i < LIMIT; i++)
        cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st), STATUS_OK,
                     "borrow %d: %s", i + 1, st.message);
    status_code code = borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st);
    cr_assert_eq(code, STATUS_FAILED_PRECONDITION, "borrow %d of a limit of %d: %s", LIMIT + 1, LIMIT,
                 status_code_name(code));
    cr_assert_str_eq(st.reason, "LOAN_LIMIT");
    test_stack_stop(&s);
}

typedef struct return_thread_job {
    const char *address, *bearer, *loan_id;
    status_code code;
} return_thread_job;

static void *return_thread(void *arg) {
    return_thread_job *job = arg;
    rpc_client *own = NULL;
    rpc_client_create(job->address, 10000, &own, NULL);
    arena *a = arena_create(0);
    Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    request.loan_id = (char *)job->loan_id;
    ProtobufCMessage *response = NULL;
    status st;
    job->code = harness_call(own, LENDING "ReturnBook", &request.base, &library__lending__v1__loan__descriptor, a,
                             job->bearer, &response, &st);
    arena_destroy(a);
    rpc_client_destroy(own);
    return NULL;
}

Test(lending, concurrent_returns_never_push_available_above_total) {
    Book *book = register_book("Returned at once", "A", "", 3);
    enum { LOANS = 3, RETURNS_EACH = 4 };
    const char *users[LOANS], *loans[LOANS];
    for (int i = 0; i < LOANS; i++) {
        users[i] = unique("returner");
        loans[i] = settled(users[i], borrow(users[i], book->book_id)->loan_id)->loan_id;
    }
    expect_available(book->book_id, 0);
    return_thread_job jobs[LOANS * RETURNS_EACH];
    pthread_t threads[LOANS * RETURNS_EACH];
    for (int i = 0; i < LOANS * RETURNS_EACH; i++) {
        int owner = i % LOANS;
        jobs[i] = (return_thread_job){.address = fixture_lending_address(), .loan_id = loans[owner],
                                      .bearer = i % 2 ? user_bearer(users[owner]) : admin_bearer()};
        pthread_create(&threads[i], NULL, return_thread, &jobs[i]);
    }
    for (int i = 0; i < LOANS * RETURNS_EACH; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_eq(jobs[i].code, STATUS_OK, "return %d: %s", i, status_code_name(jobs[i].code));
    }
    expect_available(book->book_id, 3);
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "catalog", 10000));
    cr_assert_eq(available(book->book_id), 3, "returns gave back more copies than were lent");
}

/* Publishes the loan's LoanRequested `times` more times, under new message ids
 * ("<prefix>-<i>-<loan>", so JetStream's dedup cannot drop them): only the consumers' own
 * idempotency stands between them and a second copy. */
static void publish_loan_requested_again(nats_connection *nats, const char *loan_id, const char *user,
                                         const Book *book, const char *prefix, int times) {
    for (int i = 0; i < times; i++) {
        Library__Events__V1__LoanRequested body = LIBRARY__EVENTS__V1__LOAN_REQUESTED__INIT;
        body.loan_id = (char *)loan_id;
        body.user_id = (char *)user;
        body.book_id = book->book_id;
        body.book_title = book->title;
        Library__Events__V1__Event e = LIBRARY__EVENTS__V1__EVENT__INIT;
        e.event_id = arena_sprintf(mem, "%s-%d-%s", prefix, i, loan_id);
        e.correlation_id = (char *)loan_id;
        e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED;
        e.loan_requested = &body;
        status st;
        cr_assert_eq(events_publish(nats, &e, &st), STATUS_OK, "%s", st.message);
    }
}

Test(lending, an_event_delivered_twice_changes_nothing) {
    Book *book = register_book("Twice told", "A", "", 2);
    const char *user = unique("twice");
    Loan *loan = settled(user, borrow(user, book->book_id)->loan_id);
    cr_assert_eq(loan->status, ACTIVE);
    expect_available(book->book_id, 1);

    /* Replay LoanRequested under new message ids (so JetStream's dedup cannot drop them):
     * only the consumers' own idempotency stands between them and a second copy. */
    nats_connection *nats = NULL;
    nats_connection_options options = harness_nats_options(fixture_nats_url(), "test");
    status st;
    cr_assert_eq(nats_connection_open(&options, &nats, &st), STATUS_OK, "%s", st.message);
    publish_loan_requested_again(nats, loan->loan_id, user, book, "replay", 3);
    nats_connection_close(nats);
    /* catalog has handled every replay, and lending whatever catalog answered */
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "catalog", 10000));
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "lending", 10000));
    cr_assert_eq(available(book->book_id), 1, "a replayed LoanRequested took another copy");
    cr_assert_eq(get_loan(user_bearer(user), loan->loan_id, STATUS_OK)->status, ACTIVE);
}

/* --- starting, draining and readiness --------------------------------------------------------- */


/* Polls readiness until it is `wanted`: how long that took, or -1 when not within timeout_ms. */
static int64_t await_readiness(rpc_client *c, int wanted, int64_t timeout_ms) {
    int64_t started = harness_now_ms();
    while (fixture_health(c, "") != wanted) {
        if (harness_now_ms() - started > timeout_ms)
            return -1;
        harness_sleep_ms(50);
    }
    return harness_now_ms() - started;
}

/* A pod that cannot reach NATS must fail its start visibly (exit 1, the reason in its log)
 * once NATS_CONNECT_TIMEOUT has passed, so Kubernetes restarts it, rather than retry forever
 * or give up at once while NATS is still starting next to it. */
Test(lending, without_nats_at_start_it_exits_after_nats_connect_timeout) {
    const char *dir = arena_sprintf(mem, "%s/no-nats", fixture_dir());
    mkdir(dir, 0755);
    cr_assert(harness_keys_create(dir));
    const char *env[] = {arena_sprintf(mem, "NATS_URL=nats://127.0.0.1:%d", harness_free_port()),
                         "NATS_CONNECT_TIMEOUT=2s", "CATALOG_ADDR=127.0.0.1:1", NULL};
    harness_process lonely;
    int64_t started = harness_now_ms();
    cr_assert(harness_service_spawn("lending", dir, env, &lonely), "lending did not start: %s", lonely.log_path);
    int exit_status = harness_process_stop(&lonely, 0, 20000);
    int64_t took = harness_now_ms() - started;
    cr_assert_eq(exit_status, 1, "lending exited with %d after %lld ms (-1: still running after 20 s); log: %s",
                 exit_status, (long long)took, lonely.log_path);
    cr_assert_geq(took, 2000, "lending gave up after %lld ms, before NATS_CONNECT_TIMEOUT (2 s)", (long long)took);
    cr_assert_lt(took, 7000, "lending gave up after %lld ms, long after NATS_CONNECT_TIMEOUT (2 s)", (long long)took);
    int code = 0;
    char *log = harness_command_output(mem, arena_sprintf(mem, "cat '%s'", lonely.log_path), &code);
    cr_assert(strstr(log, "cannot connect to NATS") != NULL, "the log does not say why lending stopped: %s", log);
    cr_log_info("without NATS lending exited with 1 after %lld ms", (long long)took);
}

/* The BorrowBook calls lending has begun, as its /metrics count them. */
static double borrows_started(int metrics_port) {
    char *body = harness_scrape(mem, metrics_port);
    return body ? harness_sample(body, "grpc_server_started_total{grpc_type=\"unary\",grpc_service=\"library."
                                       "lending.v1.LendingService\",grpc_method=\"BorrowBook\"}")
                : -1;
}

/* A GetLoan on a new connection, again until lending refuses it (the drain closed the port):
 * UNAVAILABLE, or the last answer it gave when it did not within timeout_ms. Until the drain
 * begins the answer is NOT_FOUND; a call that reaches the server as it stops listening is
 * cancelled by gRPC core ("Server Shutdown"), a refusal too. */
static status_code await_refusal(const char *address, const char *bearer, int64_t timeout_ms) {
    int64_t until = harness_now_ms() + timeout_ms;
    status_code code;
    do {
        rpc_client *fresh = NULL;
        cr_assert_eq(rpc_client_create(address, 1000, &fresh, NULL), STATUS_OK);
        Loan *loan = NULL;
        status st;
        code = get_loan_on(fresh, bearer, "ffffffffffffffffffff", &loan, &st);
        rpc_client_destroy(fresh);
        if (code == STATUS_CANCELLED)
            cr_log_info("a new call raced the drain: CANCELLED (%s)", st.message);
        if (code != STATUS_UNAVAILABLE)
            harness_sleep_ms(20);
    } while ((code == STATUS_NOT_FOUND || code == STATUS_CANCELLED) && harness_now_ms() < until);
    return code;
}

/* Starts a BorrowBook (5 s deadline) that lending cannot finish while the catalog is paused:
 * it waits for GetBook (give lending a CATALOG_TIMEOUT above the deadline). Returns once
 * lending has begun the call; SIGCONT the catalog to let it go on. */
static void start_borrow_held_by_the_catalog(test_stack *s, borrow_job *job, pthread_t *thread) {
    Book *book = test_stack_register(s, "Held up", 1);
    *job = (borrow_job){.address = s->lending.address, .book_id = book->book_id,
                        .bearer = harness_bearer(mem, s->dir, "held-reader", false)};
    cr_assert(harness_pause(s->catalog.pid));
    cr_assert_eq(pthread_create(thread, NULL, borrow_thread, job), 0);
    int64_t until = harness_now_ms() + 5000;
    while (borrows_started(s->lending.metrics_port) < 1 && harness_now_ms() < until)
        harness_sleep_ms(20);
    cr_assert_eq(borrows_started(s->lending.metrics_port), 1, "the BorrowBook did not reach lending");
}

/* What rpc_server_shutdown promises on SIGTERM (a rolling update): no new calls, calls in
 * flight finish within DRAIN_GRACE, then exit 0. A BorrowBook caught mid-way must still get
 * its loan, not a CANCELLED its client cannot tell from a borrow that never happened. */
Test(lending, sigterm_lets_a_borrow_in_flight_finish_and_refuses_new_calls) {
    const char *env[] = {"DRAIN_GRACE=8s", "CATALOG_TIMEOUT=10s", NULL};
    test_stack s;
    test_stack_start(&s, "drain", env, false, NULL);
    borrow_job job;
    pthread_t thread;
    start_borrow_held_by_the_catalog(&s, &job, &thread);

    int64_t sigterm_at = harness_now_ms();
    cr_assert_eq(kill(s.lending.pid, SIGTERM), 0);
    status_code refused = await_refusal(s.lending.address, job.bearer, 3000);
    kill(s.catalog.pid, SIGCONT);
    cr_assert_eq(refused, STATUS_UNAVAILABLE, "3 s into the drain a new call still got %s", status_code_name(refused));
    pthread_join(thread, NULL);
    cr_assert_eq(job.code, STATUS_OK, "the BorrowBook in flight at SIGTERM got %s: %s", status_code_name(job.code),
                 job.message);
    cr_assert(job.loan_status == ACTIVE || job.loan_status == PENDING, "the loan came back %s",
              loan_status_name(job.loan_status));
    int exit_status = harness_process_stop(&s.lending, 0, 20000);
    int64_t took = harness_now_ms() - sigterm_at;
    cr_assert_eq(exit_status, 0, "lending exited with %d after the drain; log: %s", exit_status, s.lending.log_path);
    cr_assert_lt(took, 8000, "lending exited %lld ms after SIGTERM, past DRAIN_GRACE (8 s)", (long long)took);
    cr_log_info("drained: the borrow got %s, lending exited 0 %lld ms after SIGTERM", loan_status_name(job.loan_status),
                (long long)took);
    test_stack_stop(&s);
}

/* The other half of the promise: a call still running when DRAIN_GRACE is over is cancelled
 * then, so its client hears at the grace and not when the call would have ended; and lending
 * still exits 0. It exits once the cancelled handler has returned, which is bounded by that
 * handler's own timeouts (here the call's 5 s deadline), not by DRAIN_GRACE: the chart's
 * terminationGracePeriodSeconds leaves slack for that. */
Test(lending, sigterm_cancels_what_outlasts_drain_grace_and_exits_0) {
    const char *env[] = {"DRAIN_GRACE=1s", "CATALOG_TIMEOUT=10s", NULL};
    test_stack s;
    test_stack_start(&s, "drain-grace", env, false, NULL);
    borrow_job job;
    pthread_t thread;
    start_borrow_held_by_the_catalog(&s, &job, &thread);
    int64_t sigterm_at = harness_now_ms();
    int exit_status = harness_process_stop(&s.lending, SIGTERM, 20000);
    int64_t exited_after = harness_now_ms() - sigterm_at;
    kill(s.catalog.pid, SIGCONT);
    pthread_join(thread, NULL);
    int64_t answered_after = job.answered_at_ms - sigterm_at;
    cr_assert(job.code == STATUS_CANCELLED || job.code == STATUS_UNAVAILABLE, "the held borrow got %s: %s",
              status_code_name(job.code), job.message);
    cr_assert_geq(answered_after, 1000, "the held borrow was cut off %lld ms after SIGTERM, inside DRAIN_GRACE (1 s)",
                  (long long)answered_after);
    cr_assert_lt(answered_after, 4000,
                 "the held borrow was answered %lld ms after SIGTERM: at its own end (5 s), not at DRAIN_GRACE (1 s)",
                 (long long)answered_after);
    cr_assert_eq(exit_status, 0, "lending exited with %d (-1: still running 20 s after SIGTERM); log: %s", exit_status,
                 s.lending.log_path);
    cr_log_info("the held borrow got %s %lld ms after SIGTERM; lending exited 0 after %lld ms",
                status_code_name(job.code), (long long)answered_after, (long long)exited_after);
    test_stack_stop(&s);
}

/* Readiness is what takes a pod out of the Service while it cannot do its job: NOT_SERVING
 * soon after NATS goes away, SERVING again once it is back (the same port and store). */
Test(lending, readiness_is_not_serving_while_nats_is_down) {
    test_stack s;
    test_stack_start(&s, "readiness", NULL, false, NULL);
    cr_assert_eq(fixture_health(s.lending_client, ""), SERVING);
    int nats_port = s.nats.port;
    cr_assert_neq(harness_process_stop(&s.nats, SIGTERM, 10000), -1, "nats-server did not stop");
    int64_t down = await_readiness(s.lending_client, NOT_SERVING, 10000);
    cr_assert_neq(down, -1, "lending still says SERVING 10 s after nats-server stopped");
    cr_assert_eq(fixture_health(s.lending_client, "library.lending.v1.LendingService"), NOT_SERVING,
                 "the LendingService name must follow the dependency too");
    cr_assert_eq(fixture_health(s.lending_client, "liveness"), SERVING, "liveness must not fail because NATS is down");

    cr_assert(harness_nats_start(s.dir, nats_port, &s.nats), "nats-server did not restart");
    int64_t up = await_readiness(s.lending_client, SERVING, 15000);
    cr_assert_neq(up, -1, "lending is still NOT_SERVING 15 s after nats-server came back");
    cr_log_info("NOT_SERVING %lld ms after NATS stopped, SERVING %lld ms after it restarted", (long long)down,
                (long long)up);
    test_stack_stop(&s);
}

/* --- the history ListLoans keeps ------------------------------------------------------------ */

enum { HISTORY_KEPT = 1000 }; /* handlers.c keeps the newest 1000 loans of a user */

typedef struct history_filler {
    const char *address, *bearer, *book_id;
    atomic_int *made; /* loans made by all fillers */
    int target;
} history_filler;

/* Borrows a book with no copy until the fillers together have made `target` loans: each is
 * canceled at once, which frees its slot for the next. Refused or failed borrows are tried
 * again, and a loan made twice by a retry is one loan: ListLoans has the final word. */
static void *fill_history(void *arg) {
    history_filler *f = arg;
    rpc_client *c = NULL;
    rpc_client_create(f->address, 10000, &c, NULL);
    arena *a = arena_create(0);
    while (atomic_load(f->made) < f->target) {
        arena_reset(a);
        Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
        request.book_id = (char *)f->book_id;
        ProtobufCMessage *response = NULL;
        status st;
        if (harness_call(c, LENDING "BorrowBook", &request.base, &library__lending__v1__loan__descriptor, a,
                         f->bearer, &response, &st) == STATUS_OK)
            atomic_fetch_add(f->made, 1);
    }
    arena_destroy(a);
    rpc_client_destroy(c);
    return NULL;
}

/* Every loan ListLoans shows the user, newest first (all pages). */
static Loan **list_all(rpc_client *c, const char *bearer, size_t *count) {
    Loan **all = arena_alloc(mem, 2 * HISTORY_KEPT * sizeof *all);
    *count = 0;
    Library__Lending__V1__ListLoansRequest list = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
    list.page_size = 100;
    for (int page = 0; page < 2 * HISTORY_KEPT / 100; page++) {
        ProtobufCMessage *response = NULL;
        status st;
        cr_assert_eq(harness_call(c, LENDING "ListLoans", &list.base, &library__lending__v1__list_loans_response__descriptor,
                                  mem, bearer, &response, &st),
                     STATUS_OK, "ListLoans: %s", st.message);
        Library__Lending__V1__ListLoansResponse *r = (void *)response;
        for (size_t i = 0; i < r->n_loans; i++)
            all[(*count)++] = r->loans[i];
        if (r->next_page_token == NULL || r->next_page_token[0] == '\0')
            break;
        list.page_token = r->next_page_token;
    }
    return all;
}

static bool listed(Loan **loans, size_t count, const char *loan_id) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(loans[i]->loan_id, loan_id) == 0)
            return true;
    return false;
}

/* A user's history is capped so their record stays small: ListLoans shows the newest 1000
 * loans and forgets the oldest; the loans themselves stay readable, and the loan limit counts
 * the open loans, however long the history grew. */
Test(lending, a_history_past_a_thousand_loans_keeps_the_newest_and_still_counts_the_limit) {
    enum { LIMIT = 8, OLDEST = 3, FILLERS = LIMIT };
    const char *env[] = {"MAX_ACTIVE_LOANS=8", NULL};
    test_stack s;
    test_stack_start(&s, "history", env, false, NULL);
    Book *none = test_stack_register(&s, "Never on the shelf", 0);
    const char *bearer = harness_bearer(mem, s.dir, "avid-reader", false);
    const char *oldest[OLDEST];
    Loan *loan = NULL;
    status st;
    for (int i = 0; i < OLDEST; i++) {
        cr_assert_eq(borrow_on(s.lending_client, bearer, none->book_id, NULL, &loan, &st), STATUS_OK, "%s", st.message);
        oldest[i] = loan->loan_id;
    }
    int64_t started = harness_now_ms();
    atomic_int made = 0;
    history_filler fillers[FILLERS];
    pthread_t threads[FILLERS];
    for (int i = 0; i < FILLERS; i++) {
        fillers[i] = (history_filler){.address = s.lending.address, .bearer = bearer, .book_id = none->book_id,
                                      .made = &made, .target = HISTORY_KEPT};
        cr_assert_eq(pthread_create(&threads[i], NULL, fill_history, &fillers[i]), 0);
    }
    for (int i = 0; i < FILLERS; i++)
        pthread_join(threads[i], NULL);
    int64_t filled_ms = harness_now_ms() - started;
    cr_assert_eq(borrow_on(s.lending_client, bearer, none->book_id, NULL, &loan, &st), STATUS_OK, "%s", st.message);
    const char *newest = loan->loan_id;

    size_t count = 0;
    Loan **loans = list_all(s.lending_client, bearer, &count);
    cr_assert_eq(count, HISTORY_KEPT, "ListLoans shows %zu loans of a history of %d or more", count,
                 OLDEST + HISTORY_KEPT + 1);
    cr_assert_str_eq(loans[0]->loan_id, newest, "the newest loan comes first");
    for (int i = 0; i < OLDEST; i++) {
        cr_assert_not(listed(loans, count, oldest[i]), "the oldest loan %d is still listed", i);
        cr_assert_eq(get_loan_on(s.lending_client, bearer, oldest[i], &loan, &st), STATUS_OK,
                     "a loan gone from the history must stay readable: %s", st.message);
        cr_assert_eq(loan->status, CANCELED);
    }
    /* a page token naming a loan the history no longer holds */
    char token[LENDING_PAGE_TOKEN_MAX];
    lending_page_token_encode(oldest[OLDEST - 1], token);
    Library__Lending__V1__ListLoansRequest list = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
    list.page_token = token;
    ProtobufCMessage *response = NULL;
    cr_assert_eq(harness_call(s.lending_client, LENDING "ListLoans", &list.base,
                              &library__lending__v1__list_loans_response__descriptor, mem, bearer, &response, &st),
                 STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.reason, "INVALID_PAGE_TOKEN");

    Book *plenty = test_stack_register(&s, "Plenty", LIMIT + 1);
    for (int i = 0; i < LIMIT; i++) {
        cr_assert_eq(borrow_on(s.lending_client, bearer, plenty->book_id, NULL, &loan, &st), STATUS_OK,
                     "borrow %d of a limit of %d: %s", i + 1, LIMIT, st.message);
        cr_assert_eq(loan->status, ACTIVE);
    }
    cr_assert_eq(borrow_on(s.lending_client, bearer, plenty->book_id, NULL, &loan, &st), STATUS_FAILED_PRECONDITION,
                 "a borrow beyond the limit of %d went through", LIMIT);
    cr_assert_str_eq(st.reason, "LOAN_LIMIT");
    cr_log_info("%d loans made in %lld ms; ListLoans keeps %zu", atomic_load(&made), (long long)filled_ms, count);
    test_stack_stop(&s);
}

/* Polls GetLoan until the loan is in state `want`, up to bound_ms; the last loan read. */
static Loan *await_loan_status(rpc_client *c, const char *bearer, const char *loan_id, int want, int64_t bound_ms) {
    Loan *loan = NULL;
    status st;
    for (int64_t until = harness_now_ms() + bound_ms;; harness_sleep_ms(100)) {
        cr_assert_eq(get_loan_on(c, bearer, loan_id, &loan, &st), STATUS_OK, "GetLoan %s: %s", loan_id, st.message);
        if ((int)loan->status == want || harness_now_ms() >= until)
            return loan;
    }
}

/* Polls lending's library_reconciler_open_loans until it reads `want`, up to bound_ms. */
static double await_open_loans(test_stack *s, double want, int64_t bound_ms) {
    double in_view = -1;
    for (int64_t until = harness_now_ms() + bound_ms; harness_now_ms() < until; harness_sleep_ms(200)) {
        char *body = harness_scrape(mem, s->lending.metrics_port);
        in_view = body ? harness_sample(body, "library_reconciler_open_loans") : -1;
        if (in_view == want)
            break;
    }
    return in_view;
}

/* An answer the stream acknowledged and no consumer ever saw (the replicas of a 3-node
 * JetStream cluster diverged that way after a partition, with nats-server 2.9.10) must not
 * leave a loan waiting: a republish of the request under the same id is deduplicated for the
 * whole duplicate window, and so would the catalog's answer to it be. The test takes the
 * answers' ids in the stream first, so the catalog's first answers are swallowed as a lost
 * answer is; the reconciler's next attempt, with ids of its own, must settle the borrow and
 * then confirm the return. */
Test(lending, an_answer_the_stream_swallowed_is_asked_for_again) {
    const char *env[] = {"RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=1s", "BORROW_WAIT=300ms", NULL};
    test_stack s;
    test_stack_start(&s, "swallowed", env, false, NULL);
    Book *book = test_stack_register(&s, "Swallowed", 2);
    const char *user = "swallow-reader", *request_id = "swallow-1";
    char loan_id[LENDING_LOAN_ID_LENGTH + 1];
    lending_new_loan_id(user, request_id, loan_id);
    const char *answers[] = {"copy-reserved", "out-of-stock", "copy-released"};
    for (size_t i = 0; i < sizeof answers / sizeof *answers; i++)
        cr_assert(harness_publish_with_id(s.nats.url, "library.events.test.swallowed",
                                          arena_sprintf(mem, "%s-%s", answers[i], loan_id)),
                  "could not take the id of the %s answer", answers[i]);

    const char *bearer = harness_bearer(mem, s.dir, user, false);
    Loan *loan = NULL;
    status st;
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, request_id, &loan, &st), STATUS_OK, "BorrowBook: %s",
                 st.message);
    cr_assert_str_eq(loan->loan_id, loan_id, "the loan id is not the one the test swallowed the answers of");
    cr_assert_eq(loan->status, PENDING, "the catalog's answer was to be swallowed, but the loan is %s",
                 loan_status_name((int)loan->status));
    loan = await_loan_status(s.lending_client, bearer, loan_id, ACTIVE, harness_latency_bound_ms(15000));
    cr_assert_eq(loan->status, ACTIVE, "loan %s whose first answer was lost is still %s after 15 s", loan_id,
                 loan_status_name((int)loan->status));
    int total = 0;
    cr_assert_eq(own_available(&s, book->book_id, &total), 1, "one copy of 2 is lent: the catalog must show 1");

    cr_assert_eq(return_loan_on(s.lending_client, bearer, loan_id, &loan, &st), STATUS_OK, "ReturnBook: %s", st.message);
    int on_shelf = 0; /* the catalog takes the copy back when it handles LoanReturned */
    for (int64_t until = harness_now_ms() + harness_latency_bound_ms(10000);
         (on_shelf = own_available(&s, book->book_id, &total)) != 2 && harness_now_ms() < until;)
        harness_sleep_ms(100);
    cr_assert_eq(on_shelf, 2, "the returned copy is back on the shelf");
    double in_view = await_open_loans(&s, 0, harness_latency_bound_ms(15000));
    cr_assert_eq(in_view, 0, "the return's release answer was lost and never asked for again: %g loans still in view",
                 in_view);
    test_stack_stop(&s);
}

typedef struct write_flood {
    test_stack *stack;
    const char *bearer, *book_id;
    int calls;
    atomic_int *limited, *other;
} write_flood;

static void *flood_borrows(void *arg) {
    write_flood *f = arg;
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)f->book_id;
    for (int i = 0; i < f->calls; i++) {
        arena *a = arena_create(0); /* the test's arena is not for several threads */
        ProtobufCMessage *response = NULL;
        status st;
        status_code code = harness_call(f->stack->lending_client, LENDING "BorrowBook", &request.base,
                                        &library__lending__v1__loan__descriptor, a, f->bearer, &response, &st);
        bool limited = code == STATUS_RESOURCE_EXHAUSTED && strcmp(st.reason, "RATE_LIMITED") == 0;
        atomic_fetch_add(limited ? f->limited : f->other, 1);
        arena_destroy(a);
    }
    return NULL;
}

/* One user's flood of writes is limited per user (WRITE_RATE a second past WRITE_BURST),
 * with a pushback saying when to come back, while another user's borrows and returns in the
 * middle of it all succeed, and an administrator is not limited at all. */
Test(lending, one_users_flood_of_writes_is_limited_and_nobody_elses) {
    const char *env[] = {"WRITE_RATE=5", "WRITE_BURST=20", NULL};
    test_stack s;
    test_stack_start(&s, "rate", env, false, NULL);
    Book *book = test_stack_register(&s, "Rationed", 3);
    enum { THREADS = 4, EACH = 125 };
    atomic_int limited = 0, other = 0;
    write_flood floods[THREADS];
    pthread_t threads[THREADS];
    int64_t started = harness_now_ms();
    for (int t = 0; t < THREADS; t++) {
        floods[t] = (write_flood){.stack = &s, .bearer = harness_bearer(mem, s.dir, "flooder", false),
                                  .book_id = "no-such-book", .calls = EACH, .limited = &limited, .other = &other};
        pthread_create(&threads[t], NULL, flood_borrows, &floods[t]);
    }
    const char *reader = harness_bearer(mem, s.dir, "patient-reader", false);
    for (int i = 0; i < 5; i++) {
        Loan *loan = NULL;
        status st;
        cr_assert_eq(borrow_on(s.lending_client, reader, book->book_id, NULL, &loan, &st), STATUS_OK,
                     "another user's borrow %d during the flood: %s %s", i + 1, st.reason, st.message);
        cr_assert_eq(return_loan_on(s.lending_client, reader, loan->loan_id, NULL, &st), STATUS_OK,
                     "another user's return %d during the flood: %s %s", i + 1, st.reason, st.message);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    double seconds = (double)(harness_now_ms() - started) / 1000.0;
    int allowed_most = 20 + (int)(5 * seconds) + 1;
    cr_log_info("rate: %d of %d writes by one user limited in %.1f s; %d allowed (at most %d)", limited,
                THREADS * EACH, seconds, other, allowed_most);
    cr_assert_leq(other, allowed_most, "%d writes passed in %.1f s: the limit allows %d", other, seconds,
                  allowed_most);
    cr_assert_geq(other, 20, "the burst of 20 must pass: %d did", other);

    /* the refusal says when to come back */
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = "no-such-book";
    size_t size = library__lending__v1__borrow_book_request__get_packed_size(&request);
    uint8_t *bytes = arena_alloc(mem, size + 1);
    library__lending__v1__borrow_book_request__pack(&request, bytes);
    rpc_call_options options = {.timeout_ms = 5000, .authorization = floods[0].bearer};
    rpc_reply_info info = {0};
    uint8_t *reply = NULL;
    size_t reply_size = 0;
    status st;
    status_code code = STATUS_OK;
    for (int i = 0; i < 30 && code != STATUS_RESOURCE_EXHAUSTED; i++) /* tokens came back meanwhile */
        code = rpc_client_call_raw(s.lending_client, LENDING "BorrowBook", bytes, size, mem, &reply, &reply_size,
                                   &options, &info, &st);
    cr_assert_eq(code, STATUS_RESOURCE_EXHAUSTED, "the flooder is not limited any more: %s", st.message);
    cr_assert_str_eq(st.reason, "RATE_LIMITED");
    cr_assert(info.retry_pushback_ms > 0 && info.retry_pushback_ms <= 201,
              "grpc-retry-pushback-ms is when the next token comes (within 200 ms at 5 a second): %lld",
              (long long)info.retry_pushback_ms);
    cr_assert(strstr(st.message, "too many writes") != NULL, "a message a person understands: %s", st.message);

    const char *admin = harness_bearer(mem, s.dir, "librarian", true);
    for (int i = 0; i < 40; i++) {
        code = return_loan_on(s.lending_client, admin, "00000000000000000000", NULL, &st);
        cr_assert_eq(code, STATUS_NOT_FOUND, "an administrator's write %d: %s %s", i + 1, st.reason, st.message);
    }
    test_stack_stop(&s);
}

/* --- RenewLoan ----------------------------------------------------------------------------- */

static status_code renew_on(rpc_client *c, const char *bearer, const char *loan_id, const char *request_id,
                            Loan **out, status *st) {
    Library__Lending__V1__RenewLoanRequest request = LIBRARY__LENDING__V1__RENEW_LOAN_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    request.request_id = (char *)(request_id ? request_id : "");
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(c, LENDING "RenewLoan", &request.base, &library__lending__v1__loan__descriptor,
                                    mem, bearer, &response, st);
    if (out)
        *out = (Loan *)response;
    return code;
}

static int64_t due_of(const Loan *loan) {
    cr_assert_not_null(loan->due_time, "loan %s has no due time", loan->loan_id);
    return loan->due_time->seconds;
}

/* The shared stack lends for the default 14 days and allows the default 2 renewals. */
Test(lending, renew_moves_the_due_time_on_by_the_loan_period_up_to_the_limit) {
    const int64_t period = 14 * 86400;
    Book *book = register_book("Renewable", "A", "", 2);
    const char *reader = unique("renewer");
    Loan *loan = settled(reader, borrow(reader, book->book_id)->loan_id);
    cr_assert_eq(loan->status, ACTIVE);
    cr_assert_eq(loan->renewal_count, 0);
    int64_t due = due_of(loan);

    Loan *renewed = NULL;
    status st;
    cr_assert_eq(renew_on(lending, user_bearer(reader), loan->loan_id, NULL, &renewed, &st), STATUS_OK, "%s",
                 st.message);
    cr_assert_eq(renewed->status, ACTIVE);
    cr_assert_eq(renewed->renewal_count, 1);
    /* the due time was ahead of now, so the period counts from it */
    cr_assert_eq(due_of(renewed), due + period, "due %lld, expected %lld", (long long)due_of(renewed),
                 (long long)(due + period));
    cr_assert_not(renewed->overdue);
    Loan *read = get_loan(user_bearer(reader), loan->loan_id, STATUS_OK);
    cr_assert_eq(read->renewal_count, 1);
    cr_assert_eq(due_of(read), due + period);

    /* an administrator (the librarian at the desk) may renew it too */
    cr_assert_eq(renew_on(lending, admin_bearer(), loan->loan_id, NULL, &renewed, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(renewed->renewal_count, 2);
    cr_assert_eq(due_of(renewed), due + 2 * period);

    cr_assert_eq(renew_on(lending, user_bearer(reader), loan->loan_id, NULL, &renewed, &st),
                 STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "RENEWAL_LIMIT");
    read = get_loan(user_bearer(reader), loan->loan_id, STATUS_OK);
    cr_assert_eq(read->renewal_count, 2, "a refused renewal changed the loan");
    cr_assert_eq(due_of(read), due + 2 * period);
}

Test(lending, renew_is_for_the_borrower_or_an_admin_and_only_for_active_loans) {
    Book *book = register_book("Renew rules", "A", "", 2);
    const char *reader = unique("owner");
    Loan *loan = settled(reader, borrow(reader, book->book_id)->loan_id);
    status st;
    Loan *renewed = NULL;
    cr_assert_eq(renew_on(lending, user_bearer("stranger"), loan->loan_id, NULL, &renewed, &st), STATUS_NOT_FOUND);
    cr_assert_str_eq(st.reason, "LOAN_NOT_FOUND");
    cr_assert_eq(get_loan(user_bearer(reader), loan->loan_id, STATUS_OK)->renewal_count, 0);
    cr_assert_eq(renew_on(lending, user_bearer(reader), "ffffffffffffffffffff", NULL, &renewed, &st),
                 STATUS_NOT_FOUND);
    cr_assert_eq(renew_on(lending, user_bearer(reader), "bad id!", NULL, &renewed, &st), STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "loan_id") != NULL, "%s", st.message);
    cr_assert_eq(renew_on(lending, NULL, loan->loan_id, NULL, &renewed, &st), STATUS_UNAUTHENTICATED);

    cr_assert_eq(return_loan(user_bearer(reader), loan->loan_id, NULL, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(renew_on(lending, user_bearer(reader), loan->loan_id, NULL, &renewed, &st),
                 STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "LOAN_NOT_ACTIVE");

    Book *none = register_book("Nothing to renew", "A", "", 0);
    Loan *canceled = settled(reader, borrow(reader, none->book_id)->loan_id);
    cr_assert_eq(canceled->status, CANCELED);
    cr_assert_eq(renew_on(lending, admin_bearer(), canceled->loan_id, NULL, &renewed, &st),
                 STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "LOAN_NOT_ACTIVE");
}

Test(lending, a_request_id_makes_renew_idempotent) {
    Book *book = register_book("Renew once", "A", "", 1);
    const char *reader = unique("retrier");
    Loan *loan = settled(reader, borrow(reader, book->book_id)->loan_id);
    int64_t due = due_of(loan);
    Loan *first = NULL, *again = NULL;
    status st;
    cr_assert_eq(renew_on(lending, user_bearer(reader), loan->loan_id, "renew-1", &first, &st), STATUS_OK, "%s",
                 st.message);
    cr_assert_eq(renew_on(lending, user_bearer(reader), loan->loan_id, "renew-1", &again, &st), STATUS_OK, "%s",
                 st.message);
    cr_assert_eq(first->renewal_count, 1);
    cr_assert_eq(again->renewal_count, 1, "a retried request renewed again");
    cr_assert_eq(due_of(again), due_of(first));
    cr_assert_gt(due_of(first), due);
    /* another request renews; the first, retried after it, still renews nothing */
    cr_assert_eq(renew_on(lending, user_bearer(reader), loan->loan_id, "renew-2", &again, &st), STATUS_OK);
    cr_assert_eq(again->renewal_count, 2);
    cr_assert_eq(renew_on(lending, user_bearer(reader), loan->loan_id, "renew-1", &again, &st), STATUS_OK,
                 "a retry at the limit is answered, not refused: %s", st.message);
    cr_assert_eq(again->renewal_count, 2);
    /* the same id from another caller is another request (here: refused at the limit) */
    cr_assert_eq(renew_on(lending, admin_bearer(), loan->loan_id, "renew-1", &again, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "RENEWAL_LIMIT");
}

/* The next LoanRenewed or LoanOverdue on sub, unpacked (the test frees it); its Nats-Msg-Id
 * into msg_id. */
static Library__Events__V1__Event *next_event(natsSubscription *sub, int64_t timeout_ms, char *msg_id, size_t size) {
    natsMsg *message = NULL;
    if (natsSubscription_NextMsg(&message, sub, timeout_ms) != NATS_OK)
        return NULL;
    const char *id = NULL;
    natsMsgHeader_Get(message, "Nats-Msg-Id", &id);
    snprintf(msg_id, size, "%s", id ? id : "");
    Library__Events__V1__Event *e = library__events__v1__event__unpack(
        NULL, (size_t)natsMsg_GetDataLength(message), (const uint8_t *)natsMsg_GetData(message));
    natsMsg_Destroy(message);
    return e;
}

Test(lending, an_overdue_reader_who_renews_may_borrow_again_and_the_new_due_time_is_watched) {
    const char *env[] = {"LOAN_PERIOD=5s", "RECONCILE_INTERVAL=300ms", NULL};
    test_stack s;
    test_stack_start(&s, "renew-overdue", env, false, NULL);
    Book *book = test_stack_register(&s, "Late but renewed", 5);
    const char *bearer = harness_bearer(mem, s.dir, "renewing-reader", false);
    nats_connection *watcher = NULL;
    nats_connection_options watch_options = harness_nats_options(s.nats.url, "test");
    status st;
    cr_assert_eq(nats_connection_open(&watch_options, &watcher, &st), STATUS_OK, "%s", st.message);
    natsSubscription *events = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&events, nats_connection_core(watcher), "library.events.loan.*"),
                 NATS_OK);
    cr_assert_eq(natsConnection_Flush(nats_connection_core(watcher)), NATS_OK);

    Loan *loan = NULL;
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &loan, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(loan->status, ACTIVE);
    harness_sleep_ms(6000); /* past the 5 s period (a shorter one left a loaded machine too little time
                              * between the renewal and the next borrow) */
    Loan *second = NULL;
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &second, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERDUE_LOANS");

    /* the sweeper announces the first due time before the reader renews */
    bool overdue_old = false, renewal = false, overdue_new = false;
    int64_t until = harness_now_ms() + harness_latency_bound_ms(5000);
    while (!overdue_old && harness_now_ms() < until) {
        char msg_id[EVENT_ID_MAX];
        Library__Events__V1__Event *e = next_event(events, 500, msg_id, sizeof msg_id);
        if (e == NULL)
            continue;
        if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE &&
            strcmp(e->loan_overdue->loan_id, loan->loan_id) == 0) {
            cr_assert_eq(e->loan_overdue->due_time->seconds, due_of(loan));
            cr_assert_str_eq(msg_id, arena_sprintf(mem, "loan-overdue-%s", loan->loan_id));
            overdue_old = true;
        }
        library__events__v1__event__free_unpacked(e, NULL);
    }
    cr_assert(overdue_old, "no LoanOverdue for the first due time");

    Loan *renewed = NULL;
    int64_t before = timestamp_now_ms() / 1000;
    cr_assert_eq(renew_on(s.lending_client, bearer, loan->loan_id, "late-renewal", &renewed, &st), STATUS_OK, "%s",
                 st.message);
    /* the due time was past: the period counts from now */
    cr_assert_geq(due_of(renewed), before + 5);
    cr_assert_leq(due_of(renewed), timestamp_now_ms() / 1000 + 5);
    cr_assert_not(renewed->overdue, "a renewed loan is not overdue");
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &second, &st), STATUS_OK,
                 "the renewal did not lift the overdue block: %s %s", st.reason, st.message);

    /* the events: LoanOverdue for the first due time, LoanRenewed with an id of its own, and
     * LoanOverdue again once the new due time has passed */
    until = harness_now_ms() + harness_latency_bound_ms(15000); /* the new due time is 5 s out */
    while (!(renewal && overdue_new) && harness_now_ms() < until) {
        char msg_id[EVENT_ID_MAX];
        Library__Events__V1__Event *e = next_event(events, 500, msg_id, sizeof msg_id);
        if (e == NULL)
            continue;
        if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE &&
            strcmp(e->loan_overdue->loan_id, loan->loan_id) == 0) {
            cr_assert_eq(e->loan_overdue->due_time->seconds, due_of(renewed), "a second LoanOverdue for the old due time");
            cr_assert_str_eq(msg_id, arena_sprintf(mem, "loan-overdue-%s-n1", loan->loan_id));
            overdue_new = true;
        } else if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED) {
            cr_assert_str_eq(e->loan_renewed->loan_id, loan->loan_id);
            cr_assert_str_eq(e->loan_renewed->user_id, "renewing-reader");
            cr_assert_eq(e->loan_renewed->renewal_count, 1);
            cr_assert_eq(e->loan_renewed->due_time->seconds, due_of(renewed));
            cr_assert_str_eq(msg_id, arena_sprintf(mem, "loan-renewed-%s-n1", loan->loan_id));
            cr_assert_not(renewal, "LoanRenewed was published twice");
            renewal = true;
        }
        library__events__v1__event__free_unpacked(e, NULL);
    }
    cr_assert(renewal, "no LoanRenewed");
    cr_assert(overdue_new, "no LoanOverdue for the renewed due time");
    natsSubscription_Unsubscribe(events);
    nats_connection_retire_subscription(watcher, events);
    nats_connection_close(watcher);
    /* overdue again: the block is back */
    cr_assert_eq(borrow_on(s.lending_client, bearer, book->book_id, NULL, &second, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERDUE_LOANS");
    test_stack_stop(&s);
}

/* A renewal stored whose LoanRenewed never went out (lending died in between): the reconciler
 * announces it, with the renewal's own id, and lowers the flag. */
Test(lending, the_reconciler_announces_a_renewal_left_unannounced) {
    Book *book = register_book("Renewed in a crash", "A", "", 1);
    const char *reader = unique("crashed");
    Loan *loan = settled(reader, borrow(reader, book->book_id)->loan_id);
    cr_assert_eq(loan->status, ACTIVE);

    nats_connection *connection = NULL;
    kv_bucket *loans = NULL;
    status st;
    nats_connection_options options = harness_nats_options(fixture_nats_url(), "test");
    cr_assert_eq(nats_connection_open(&options, &connection, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(kv_bucket_open(connection, "loans", 1, &loans, &st), STATUS_OK, "%s", st.message);
    natsSubscription *events = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&events, nats_connection_core(connection),
                                              events_subject(LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED)),
                 NATS_OK);
    cr_assert_eq(natsConnection_Flush(nats_connection_core(connection)), NATS_OK);

    /* the record as a RenewLoan that died after storing it left it */
    const char *key = arena_sprintf(mem, "loan.%s", loan->loan_id);
    kv_value value;
    cr_assert_eq(kv_get(loans, key, mem, &value, &st), STATUS_OK, "%s", st.message);
    Library__Lending__Internal__LoanRecord *record =
        library__lending__internal__loan_record__unpack(NULL, value.size, value.data);
    cr_assert_not_null(record);
    int64_t due = record->loan->due_time->seconds + 3600;
    record->loan->due_time->seconds = due;
    record->loan->renewal_count = 1;
    record->renewal_unpublished = true;
    record->update_time_ms = timestamp_now_ms();
    size_t size = library__lending__internal__loan_record__get_packed_size(record);
    uint8_t *packed = arena_alloc(mem, size);
    library__lending__internal__loan_record__pack(record, packed);
    library__lending__internal__loan_record__free_unpacked(record, NULL);
    cr_assert_eq(kv_update(loans, key, packed, size, value.revision, NULL, &st), STATUS_OK, "%s", st.message);

    char msg_id[EVENT_ID_MAX];
    Library__Events__V1__Event *e = next_event(events, 10000, msg_id, sizeof msg_id);
    cr_assert_not_null(e, "the reconciler did not announce the renewal");
    cr_assert_eq(e->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED);
    cr_assert_str_eq(e->loan_renewed->loan_id, loan->loan_id);
    cr_assert_eq(e->loan_renewed->renewal_count, 1);
    cr_assert_eq(e->loan_renewed->due_time->seconds, due);
    cr_assert_str_eq(msg_id, arena_sprintf(mem, "loan-renewed-%s-n1", loan->loan_id));
    library__events__v1__event__free_unpacked(e, NULL);

    bool lowered = false;
    for (int64_t until = harness_now_ms() + 5000; !lowered && harness_now_ms() < until; harness_sleep_ms(100)) {
        cr_assert_eq(kv_get(loans, key, mem, &value, &st), STATUS_OK, "%s", st.message);
        record = library__lending__internal__loan_record__unpack(NULL, value.size, value.data);
        cr_assert_not_null(record);
        lowered = !record->renewal_unpublished;
        library__lending__internal__loan_record__free_unpacked(record, NULL);
    }
    cr_assert(lowered, "the flag stayed up after the announcement");
    natsSubscription_Unsubscribe(events);
    nats_connection_retire_subscription(connection, events);
    kv_bucket_close(loans);
    nats_connection_close(connection);
}

/* --- the small saga records ------------------------------------------------------------------- */

/* The book and user records keep only their newest 32-64 ids; the older ones move to a record
 * beside each (docs/decisions.md, "Small records for the saga"). A loan a hundred loans back
 * is still known everywhere: its LoanRequested, asked again, takes no copy; its BorrowBook,
 * retried, is answered with it and takes no slot; ListLoans still lists it. */
Test(lending, a_loan_a_hundred_loans_back_is_still_known_to_the_catalog_and_to_lending) {
    enum { LATER = 100 };
    Book *book = register_book("Often lent", "A", "", 1);
    const char *user = unique("often");
    const char *bearer = user_bearer(user);
    Loan *first = NULL;
    status st;
    cr_assert_eq(borrow_on(lending, bearer, book->book_id, "the-first", &first, &st), STATUS_OK, "%s", st.message);
    first = settled(user, first->loan_id);
    cr_assert_eq(first->status, ACTIVE);
    cr_assert_eq(return_loan(bearer, first->loan_id, NULL, &st), STATUS_OK, "%s", st.message);
    expect_available(book->book_id, 1);
    for (int i = 0; i < LATER; i++) {
        Loan *loan = settled(user, borrow(user, book->book_id)->loan_id);
        cr_assert_eq(loan->status, ACTIVE, "loan %d", i);
        cr_assert_eq(return_loan(bearer, loan->loan_id, NULL, &st), STATUS_OK, "%s", st.message);
        expect_available(book->book_id, 1);
    }

    /* Both moves happened: the older ids are in the records beside the hot ones. */
    nats_connection *nats = NULL;
    nats_connection_options options = harness_nats_options(fixture_nats_url(), "test");
    cr_assert_eq(nats_connection_open(&options, &nats, &st), STATUS_OK, "%s", st.message);
    kv_bucket *books = NULL, *loans = NULL;
    cr_assert_eq(kv_bucket_open(nats, "books", 1, &books, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(kv_bucket_open(nats, "loans", 1, &loans, &st), STATUS_OK, "%s", st.message);
    kv_value value;
    cr_assert_eq(kv_get(books, arena_sprintf(mem, "decided.%s", book->book_id), mem, &value, &st), STATUS_OK,
                 "the book's older decisions: %s", st.message);
    cr_assert_eq(kv_get(books, arena_sprintf(mem, "book.%s", book->book_id), mem, &value, &st), STATUS_OK);
    cr_assert_lt(value.size, 4096, "the book record is %zu bytes", value.size);
    char *key = text_base64url_encode(mem, (const uint8_t *)user, strlen(user));
    cr_assert_eq(kv_get(loans, arena_sprintf(mem, "history.%s", key), mem, &value, &st), STATUS_OK,
                 "the user's older history: %s", st.message);
    cr_assert_eq(kv_get(loans, arena_sprintf(mem, "user.%s", key), mem, &value, &st), STATUS_OK);
    cr_assert_lt(value.size, 4096, "the user record is %zu bytes", value.size);
    kv_bucket_close(books);
    kv_bucket_close(loans);

    /* LoanRequested of the first loan again, under new ids: the catalog's answer is still
     * "reserved", and it takes no copy. */
    publish_loan_requested_again(nats, first->loan_id, user, book, "again", 2);
    nats_connection_close(nats);
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "catalog", 10000));
    cr_assert(harness_wait_consumer_idle(fixture_nats_url(), "lending", 10000));
    cr_assert_eq(available(book->book_id), 1, "a LoanRequested a hundred loans back took another copy");
    cr_assert_eq(get_loan(bearer, first->loan_id, STATUS_OK)->status, RETURNED);

    /* BorrowBook of the first request again: the first loan, and no slot taken. */
    Loan *again = NULL;
    cr_assert_eq(borrow_on(lending, bearer, book->book_id, "the-first", &again, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(again->loan_id, first->loan_id);
    cr_assert_eq(again->status, RETURNED);
    expect_available(book->book_id, 1);

    size_t count = 0;
    Loan **all = list_all(lending, bearer, &count);
    cr_assert_eq(count, LATER + 1, "ListLoans lists %zu loans", count);
    cr_assert_str_eq(all[count - 1]->loan_id, first->loan_id, "the oldest last");
}
