/* test_holds.c - holds over gRPC against real nats-server, catalog and lending processes: the
 * story (a reader waits, a return makes the hold READY, the reader collects it), every
 * refusal, cancels, expiry passing the copy on, restocking serving the queue, and thirty
 * readers holding one book at once. The shared catalog runs with HOLD_PICKUP=4s. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "timestamp.h"
#include "kv.h"
#include "lending.h"
#include "library/lending/v1/lending.pb-c.h"
#include "loan_record.pb-c.h"
#include "stack_fixture.h"
#include "text.h"

typedef Library__Lending__V1__Loan Loan;
typedef Library__Lending__V1__Hold Hold;

#define LENDING "/library.lending.v1.LendingService/"
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define PENDING LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING
#define CANCELED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED
#define WAITING LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING
#define READY LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY
#define FULFILLED LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_FULFILLED
#define HOLD_CANCELED LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_CANCELED
#define EXPIRED LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_EXPIRED

TestSuite(holds, .init = fixture_setup, .fini = fixture_teardown, .timeout = 120);

static const char *unique(const char *prefix) {
    char id[13];
    text_random_hex(id, 6);
    return arena_sprintf(mem, "%s-%s", prefix, id);
}

static status_code place_hold(const char *bearer, const char *book_id, const char *request_id, Hold **out,
                              status *st) {
    Library__Lending__V1__PlaceHoldRequest request = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    request.book_id = (char *)book_id;
    request.request_id = (char *)(request_id ? request_id : "");
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(lending, LENDING "PlaceHold", &request.base, &library__lending__v1__hold__descriptor,
                                    mem, bearer, &response, st);
    *out = (Hold *)response;
    return code;
}

static Hold *hold(const char *user, const char *book_id) {
    Hold *h = NULL;
    status st;
    status_code code = place_hold(user_bearer(user), book_id, NULL, &h, &st);
    cr_assert_eq(code, STATUS_OK, "PlaceHold by %s: %s %s", user, status_code_name(code), st.message);
    return h;
}

static void refused(const char *user, const char *book_id, status_code expected, const char *reason) {
    Hold *h = NULL;
    status st;
    status_code code = place_hold(user_bearer(user), book_id, NULL, &h, &st);
    cr_assert_eq(code, expected, "PlaceHold by %s: %s %s, expected %s", user, status_code_name(code), st.message,
                 status_code_name(expected));
    if (reason)
        cr_assert_str_eq(st.reason, reason, "reason %s (%s), expected %s", st.reason, st.message, reason);
}

static status_code hold_call(const char *method, const char *bearer, const char *hold_id, Hold **out, status *st) {
    Library__Lending__V1__GetHoldRequest get = LIBRARY__LENDING__V1__GET_HOLD_REQUEST__INIT;
    Library__Lending__V1__CancelHoldRequest cancel = LIBRARY__LENDING__V1__CANCEL_HOLD_REQUEST__INIT;
    get.hold_id = cancel.hold_id = (char *)hold_id;
    bool is_get = strcmp(method, "GetHold") == 0;
    char path[96];
    snprintf(path, sizeof path, LENDING "%s", method);
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(lending, path, is_get ? &get.base : &cancel.base,
                                    &library__lending__v1__hold__descriptor, mem, bearer, &response, st);
    *out = (Hold *)response;
    return code;
}

static Hold *get_hold(const char *user, const char *hold_id) {
    Hold *h = NULL;
    status st;
    cr_assert_eq(hold_call("GetHold", user_bearer(user), hold_id, &h, &st), STATUS_OK, "GetHold: %s", st.message);
    return h;
}

/* Polls a hold until it has the status (the catalog answers asynchronously). */
static Hold *hold_becomes(const char *user, const char *hold_id, int status_wanted, int64_t within_ms) {
    int64_t until = harness_now_ms() + harness_latency_bound_ms(within_ms);
    Hold *h = get_hold(user, hold_id);
    while ((int)h->status != status_wanted && harness_now_ms() < until) {
        harness_sleep_ms(50);
        h = get_hold(user, hold_id);
    }
    cr_assert_eq((int)h->status, status_wanted, "hold %s is %d, expected %d", hold_id, h->status, status_wanted);
    return h;
}

static Loan *borrow(const char *user, const char *book_id) {
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(lending, LENDING "BorrowBook", &request.base,
                                    &library__lending__v1__loan__descriptor, mem, user_bearer(user), &response, &st);
    cr_assert_eq(code, STATUS_OK, "BorrowBook by %s: %s %s", user, status_code_name(code), st.message);
    Loan *loan = (Loan *)response;
    int64_t until = harness_now_ms() + harness_latency_bound_ms(8000);
    while (loan->status == PENDING && harness_now_ms() < until) {
        harness_sleep_ms(50);
        Library__Lending__V1__GetLoanRequest get = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
        get.loan_id = loan->loan_id;
        cr_assert_eq(harness_call(lending, LENDING "GetLoan", &get.base, &library__lending__v1__loan__descriptor, mem,
                                  user_bearer(user), &response, &st),
                     STATUS_OK);
        loan = (Loan *)response;
    }
    return loan;
}

static void give_back(const char *user, const char *loan_id) {
    Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(lending, LENDING "ReturnBook", &request.base, &library__lending__v1__loan__descriptor,
                              mem, user_bearer(user), &response, &st),
                 STATUS_OK, "ReturnBook: %s", st.message);
}

static Book *get_book(const char *book_id) {
    Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(call_catalog("GetBook", &request.base, &library__catalog__v1__book__descriptor,
                              user_bearer("reader"), &response, &st),
                 STATUS_OK);
    return (Book *)response;
}

/* Polls until the book shows these counts. */
static void expect_copies(const char *book_id, int available, int on_hold) {
    int64_t until = harness_now_ms() + harness_latency_bound_ms(8000);
    Book *b = get_book(book_id);
    while ((b->available_copies != available || b->on_hold_copies != on_hold) && harness_now_ms() < until) {
        harness_sleep_ms(50);
        b = get_book(book_id);
    }
    cr_assert_eq(b->available_copies, available, "available_copies is %d, expected %d", b->available_copies,
                 available);
    cr_assert_eq(b->on_hold_copies, on_hold, "on_hold_copies is %d, expected %d", b->on_hold_copies, on_hold);
}

static void adjust(const char *book_id, int delta) {
    Library__Catalog__V1__AdjustStockRequest request = LIBRARY__CATALOG__V1__ADJUST_STOCK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    request.delta = delta;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(call_catalog("AdjustStock", &request.base, &library__catalog__v1__book__descriptor, admin_bearer(),
                              &response, &st),
                 STATUS_OK, "AdjustStock: %s", st.message);
}

Test(holds, a_returned_copy_goes_to_the_first_reader_waiting_who_collects_it) {
    Book *book = register_book("Holds and the Queue", "Koha", "978-17", 1);
    const char *first = unique("reader"), *second = unique("reader"), *third = unique("reader");
    Loan *loan = borrow(first, book->book_id);
    cr_assert_eq(loan->status, ACTIVE);

    Hold *waiting = hold(second, book->book_id);
    cr_assert_eq(waiting->status, WAITING);
    cr_assert_eq(waiting->position, 1, "the first hold is position %d", waiting->position);
    cr_assert_str_eq(waiting->book_title, "Holds and the Queue");
    cr_assert_not_null(waiting->place_time);
    Hold *behind = hold(third, book->book_id);
    cr_assert_eq(behind->status, WAITING);
    cr_assert_eq(behind->position, 2);
    expect_copies(book->book_id, 0, 0);

    give_back(first, loan->loan_id);
    Hold *ready = hold_becomes(second, waiting->hold_id, READY, 5000);
    cr_assert_eq(ready->position, 0);
    cr_assert_not_null(ready->expire_time);
    cr_assert_gt(ready->expire_time->seconds, ready->ready_time->seconds);
    expect_copies(book->book_id, 0, 1);
    cr_assert_eq(get_hold(third, behind->hold_id)->position, 1, "the second in line moves up");

    /* the set-aside copy is nobody else's */
    const char *other = unique("reader");
    Loan *refused_loan = borrow(other, book->book_id);
    cr_assert_eq(refused_loan->status, CANCELED);
    cr_assert_str_eq(refused_loan->cancel_reason, "OUT_OF_STOCK");

    Loan *collected = borrow(second, book->book_id);
    cr_assert_eq(collected->status, ACTIVE, "the holder's borrow is %d", collected->status);
    hold_becomes(second, waiting->hold_id, FULFILLED, 5000);
    expect_copies(book->book_id, 0, 0);

    char *metrics = harness_scrape(mem, fixture_metrics_port("lending"));
    cr_assert_not_null(metrics);
    cr_assert_geq(harness_sample(metrics, "library_holds_total{outcome=\"ready\"}"), 1);
    cr_assert_geq(harness_sample(metrics, "library_holds_total{outcome=\"fulfilled\"}"), 1);
    cr_assert_geq(harness_sample(metrics, "library_hold_wait_seconds_count"), 1);
}

Test(holds, every_refusal_has_its_reason) {
    Book *book = register_book("Refusals", "Koha", "978-18", 1);
    const char *reader = unique("reader");
    hold(reader, book->book_id);
    refused(reader, book->book_id, STATUS_FAILED_PRECONDITION, "ALREADY_HELD");

    const char *borrower = unique("reader");
    Book *other = register_book("Borrowed", "Koha", "978-19", 2);
    cr_assert_eq(borrow(borrower, other->book_id)->status, ACTIVE);
    refused(borrower, other->book_id, STATUS_FAILED_PRECONDITION, "ALREADY_BORROWED");

    const char *collector = unique("reader");
    for (int i = 0; i < 5; i++)
        hold(collector, register_book(arena_sprintf(mem, "Limit %d", i), "Koha", "978-20", 0)->book_id);
    Book *sixth = register_book("Limit 6", "Koha", "978-21", 0);
    refused(collector, sixth->book_id, STATUS_FAILED_PRECONDITION, "HOLD_LIMIT");

    refused(reader, "0123456789abcdef0123", STATUS_NOT_FOUND, NULL);
    refused(reader, "", STATUS_INVALID_ARGUMENT, NULL);
    refused(reader, "no/such*id", STATUS_INVALID_ARGUMENT, NULL);

    /* another user's hold is not there for you; a canceled one is not open */
    Hold *mine = hold(unique("reader"), sixth->book_id);
    Hold *h = NULL;
    status st;
    cr_assert_eq(hold_call("GetHold", user_bearer(reader), mine->hold_id, &h, &st), STATUS_NOT_FOUND);
    cr_assert_eq(hold_call("CancelHold", user_bearer(reader), mine->hold_id, &h, &st), STATUS_NOT_FOUND);
    cr_assert_eq(hold_call("CancelHold", admin_bearer(), mine->hold_id, &h, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(h->status, HOLD_CANCELED);
    cr_assert_eq(hold_call("CancelHold", admin_bearer(), mine->hold_id, &h, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "HOLD_NOT_OPEN");

    /* a book's queue is for administrators */
    Library__Lending__V1__ListHoldsRequest list = LIBRARY__LENDING__V1__LIST_HOLDS_REQUEST__INIT;
    list.book_id = book->book_id;
    ProtobufCMessage *response = NULL;
    cr_assert_eq(harness_call(lending, LENDING "ListHolds", &list.base,
                              &library__lending__v1__list_holds_response__descriptor, mem, user_bearer(reader),
                              &response, &st),
                 STATUS_PERMISSION_DENIED);
}

Test(holds, a_free_copy_is_ready_at_once_and_a_cancel_puts_it_back) {
    Book *book = register_book("Ready at Once", "Koha", "978-22", 1);
    const char *reader = unique("reader");
    Hold *h = hold(reader, book->book_id);
    cr_assert_eq(h->status, READY, "a hold on a free copy with nobody waiting is %d", h->status);
    expect_copies(book->book_id, 0, 1);
    Hold *canceled = NULL;
    status st;
    cr_assert_eq(hold_call("CancelHold", user_bearer(reader), h->hold_id, &canceled, &st), STATUS_OK, "%s",
                 st.message);
    cr_assert_eq(canceled->status, HOLD_CANCELED);
    expect_copies(book->book_id, 1, 0);

    /* a request id makes it idempotent */
    Hold *again = NULL, *repeat = NULL;
    cr_assert_eq(place_hold(user_bearer(reader), book->book_id, "hold-1", &again, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(place_hold(user_bearer(reader), book->book_id, "hold-1", &repeat, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(again->hold_id, repeat->hold_id);
    expect_copies(book->book_id, 0, 1);
}

Test(holds, an_uncollected_copy_expires_to_the_next_hold_then_the_shelf) {
    Book *book = register_book("Expiry", "Koha", "978-23", 1);
    const char *first = unique("reader"), *second = unique("reader");
    Hold *a = hold(first, book->book_id);
    cr_assert_eq(a->status, READY);
    Hold *b = hold(second, book->book_id);
    cr_assert_eq(b->status, WAITING);
    hold_becomes(first, a->hold_id, EXPIRED, 10000); /* HOLD_PICKUP=4s */
    hold_becomes(second, b->hold_id, READY, 5000);
    expect_copies(book->book_id, 0, 1);
    hold_becomes(second, b->hold_id, EXPIRED, 10000);
    expect_copies(book->book_id, 1, 0);
    /* an expired hold frees its slot: the reader may hold the book again */
    cr_assert_eq(hold(first, book->book_id)->status, READY);
}

Test(holds, added_stock_serves_the_holds_waiting_first) {
    Book *book = register_book("Restock", "Koha", "978-24", 0);
    const char *readers[3];
    Hold *holds[3];
    for (int i = 0; i < 3; i++) {
        readers[i] = unique("reader");
        holds[i] = hold(readers[i], book->book_id);
        cr_assert_eq(holds[i]->status, WAITING);
        cr_assert_eq(holds[i]->position, i + 1);
    }
    adjust(book->book_id, 2);
    hold_becomes(readers[0], holds[0]->hold_id, READY, 5000);
    hold_becomes(readers[1], holds[1]->hold_id, READY, 5000);
    cr_assert_eq(get_hold(readers[2], holds[2]->hold_id)->position, 1);
    expect_copies(book->book_id, 0, 2);
    /* AdjustStock never withdraws a set-aside copy */
    Library__Catalog__V1__AdjustStockRequest request = LIBRARY__CATALOG__V1__ADJUST_STOCK_REQUEST__INIT;
    request.book_id = book->book_id;
    request.delta = -1;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(call_catalog("AdjustStock", &request.base, &library__catalog__v1__book__descriptor, admin_bearer(),
                              &response, &st),
                 STATUS_FAILED_PRECONDITION);
}

typedef struct hold_job {
    const char *address, *bearer, *book_id;
    status_code code;
    char hold_id[32];
    char message[200];
} hold_job;

static void *hold_thread(void *arg) {
    hold_job *job = arg;
    rpc_client *own = NULL;
    rpc_client_create(job->address, 15000, &own, NULL);
    arena *a = arena_create(0);
    Library__Lending__V1__PlaceHoldRequest request = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    request.book_id = (char *)job->book_id;
    ProtobufCMessage *response = NULL;
    status st;
    job->code = harness_call(own, LENDING "PlaceHold", &request.base, &library__lending__v1__hold__descriptor, a,
                             job->bearer, &response, &st);
    if (job->code == STATUS_OK)
        snprintf(job->hold_id, sizeof job->hold_id, "%s", ((Hold *)response)->hold_id);
    snprintf(job->message, sizeof job->message, "%.199s", st.message);
    arena_destroy(a);
    rpc_client_destroy(own);
    return NULL;
}

/* A borrower's loop: give the copy back, borrow again (a copy that went to a hold is not
 * theirs: CANCELED OUT_OF_STOCK ends the loop), for as long as the readers place holds. */
typedef struct churn_job {
    const char *address, *bearer, *book_id;
    char loan_id[32];
    atomic_bool *stop;
    int returns, reborrowed;
    char failure[200];
} churn_job;

static void *churn_thread(void *arg) {
    churn_job *job = arg;
    rpc_client *own = NULL;
    rpc_client_create(job->address, 15000, &own, NULL);
    arena *a = arena_create(0);
    while (job->loan_id[0] && !atomic_load(job->stop)) {
        arena_reset(a);
        Library__Lending__V1__ReturnBookRequest give = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
        give.loan_id = job->loan_id;
        ProtobufCMessage *response = NULL;
        status st;
        if (harness_call(own, LENDING "ReturnBook", &give.base, &library__lending__v1__loan__descriptor, a,
                         job->bearer, &response, &st) != STATUS_OK) {
            snprintf(job->failure, sizeof job->failure, "ReturnBook: %.180s", st.message);
            break;
        }
        job->returns++;
        job->loan_id[0] = '\0';
        Library__Lending__V1__BorrowBookRequest take = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
        take.book_id = (char *)job->book_id;
        if (harness_call(own, LENDING "BorrowBook", &take.base, &library__lending__v1__loan__descriptor, a,
                         job->bearer, &response, &st) != STATUS_OK) {
            snprintf(job->failure, sizeof job->failure, "BorrowBook: %.180s", st.message);
            break;
        }
        const Loan *loan = (Loan *)response;
        for (int wait = 0; loan->status == PENDING && wait < 100; wait++) { /* the saga decides */
            harness_sleep_ms(50);
            Library__Lending__V1__GetLoanRequest get = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
            get.loan_id = loan->loan_id;
            if (harness_call(own, LENDING "GetLoan", &get.base, &library__lending__v1__loan__descriptor, a, job->bearer,
                             &response, &st) != STATUS_OK)
                break;
            loan = (Loan *)response;
        }
        if (loan->status == ACTIVE) {
            snprintf(job->loan_id, sizeof job->loan_id, "%s", loan->loan_id);
            job->reborrowed++;
        }
    }
    arena_destroy(a);
    rpc_client_destroy(own);
    return NULL;
}

Test(holds, thirty_readers_hold_one_book_and_each_copy_goes_to_exactly_one) {
    enum { READERS = 30, COPIES = 3 };
    Book *book = register_book("Thirty Readers", "Koha", "978-25", COPIES);
    atomic_bool stop = false;
    churn_job churn[COPIES];
    pthread_t churners[COPIES];
    for (int i = 0; i < COPIES; i++) {
        const char *borrower = unique("borrower");
        Loan *loan = borrow(borrower, book->book_id);
        cr_assert_eq(loan->status, ACTIVE);
        churn[i] = (churn_job){.address = fixture_lending_address(), .bearer = user_bearer(borrower),
                               .book_id = book->book_id, .stop = &stop};
        snprintf(churn[i].loan_id, sizeof churn[i].loan_id, "%s", loan->loan_id);
    }
    hold_job jobs[READERS];
    pthread_t threads[READERS];
    const char *readers[READERS];
    for (int i = 0; i < READERS; i++) {
        readers[i] = unique("reader");
        jobs[i] = (hold_job){.address = fixture_lending_address(), .bearer = user_bearer(readers[i]),
                             .book_id = book->book_id};
    }
    /* the borrowers return and borrow in a loop while the thirty place their holds */
    for (int i = 0; i < COPIES; i++)
        pthread_create(&churners[i], NULL, churn_thread, &churn[i]);
    for (int i = 0; i < READERS; i++)
        pthread_create(&threads[i], NULL, hold_thread, &jobs[i]);
    for (int i = 0; i < READERS; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&stop, true);
    int returns = 0, reborrowed = 0;
    for (int i = 0; i < COPIES; i++) {
        pthread_join(churners[i], NULL);
        cr_assert_eq(churn[i].failure[0], '\0', "borrower %d: %s", i, churn[i].failure);
        returns += churn[i].returns;
        reborrowed += churn[i].reborrowed;
    }
    for (int i = 0; i < READERS; i++)
        cr_assert_eq(jobs[i].code, STATUS_OK, "PlaceHold %d: %s %s", i, status_code_name(jobs[i].code),
                     jobs[i].message);
    cr_log_info("during the holds the borrowers returned %d times and borrowed again %d times", returns, reborrowed);

    /* at rest: the borrowers give back what they still have */
    int active = 0;
    for (int i = 0; i < COPIES; i++)
        if (churn[i].loan_id[0])
            active++;

    Library__Lending__V1__ListHoldsRequest list = LIBRARY__LENDING__V1__LIST_HOLDS_REQUEST__INIT;
    list.book_id = book->book_id;
    list.page_size = 100;
    ProtobufCMessage *response = NULL;
    status st;
    int64_t until = harness_now_ms() + harness_latency_bound_ms(8000);
    Hold *all[READERS];
    int ready = 0, waiting = 0, inversions = 0;
    for (;;) { /* every hold answered by the catalog: READY, or WAITING with a position */
        ready = waiting = 0;
        bool settled = true;
        for (int i = 0; i < READERS; i++) {
            all[i] = get_hold(readers[i], jobs[i].hold_id);
            ready += all[i]->status == READY;
            waiting += all[i]->status == WAITING;
            settled &= all[i]->status == READY || (all[i]->status == WAITING && all[i]->position > 0);
        }
        Book *b = get_book(book->book_id);
        if ((settled && b->on_hold_copies == ready) || harness_now_ms() >= until)
            break;
        harness_sleep_ms(100);
    }
    cr_assert_eq(ready + waiting, READERS, "%d READY + %d WAITING of %d holds", ready, waiting, READERS);
    Book *b = get_book(book->book_id);
    cr_assert_eq(b->on_hold_copies, ready, "%d copies on hold for %d READY holds", b->on_hold_copies, ready);
    cr_assert_eq(b->available_copies + b->on_hold_copies + active, COPIES,
                 "available %d + on hold %d + ACTIVE %d != %d", b->available_copies, b->on_hold_copies, active, COPIES);
    cr_assert(waiting == 0 || b->available_copies == 0, "%d copies on the shelf while %d readers wait",
              b->available_copies, waiting);
    /* queue order: no WAITING hold was placed before a READY one, except a hold that found a
     * free copy and nobody ahead of it when it reached the catalog (READY at once), beside one
     * placed in the same instant that reached the catalog later (docs/decisions.md, "Holds") */
    int64_t same_instant_ms = harness_latency_bound_ms(500);
    for (int i = 0; i < READERS; i++)
        for (int j = 0; j < READERS; j++) {
            if (all[i]->status != READY || all[j]->status != WAITING)
                continue;
            int64_t placed_ready = timestamp_to_ms(all[i]->place_time, 0), placed_waiting = timestamp_to_ms(all[j]->place_time, 0);
            if (placed_waiting >= placed_ready)
                continue;
            bool at_once = timestamp_to_ms(all[i]->ready_time, 0) - placed_ready < same_instant_ms;
            cr_assert(at_once && placed_ready - placed_waiting < same_instant_ms,
                      "hold %s is READY (placed %lld, ready %lld) but %s, placed %lld ms earlier, still waits",
                      all[i]->hold_id, (long long)placed_ready, (long long)timestamp_to_ms(all[i]->ready_time, 0),
                      all[j]->hold_id, (long long)(placed_ready - placed_waiting));
            inversions++;
        }
    cr_log_info("%d READY holds placed after a WAITING one in the same instant", inversions);

    /* the administrator's view of the queue: the WAITING holds, positions 1..n in order */
    cr_assert_eq(harness_call(lending, LENDING "ListHolds", &list.base,
                              &library__lending__v1__list_holds_response__descriptor, mem, admin_bearer(), &response,
                              &st),
                 STATUS_OK, "%s", st.message);
    Library__Lending__V1__ListHoldsResponse *queue = (void *)response;
    cr_assert_eq((int)queue->n_holds, waiting, "the queue lists %zu holds, %d wait", queue->n_holds, waiting);
    for (size_t i = 0; i < queue->n_holds; i++)
        cr_assert_eq(queue->holds[i]->position, (int)i + 1, "hold %zu has position %d", i, queue->holds[i]->position);

    /* the loans still out come back: each copy goes to the next in line */
    for (int i = 0; i < COPIES; i++)
        if (churn[i].loan_id[0]) {
            Library__Lending__V1__ReturnBookRequest give = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
            give.loan_id = churn[i].loan_id;
            cr_assert_eq(harness_call(lending, LENDING "ReturnBook", &give.base, &library__lending__v1__loan__descriptor,
                                      mem, churn[i].bearer, &response, &st),
                         STATUS_OK, "%s", st.message);
        }
    int expected_ready = ready + (waiting < active ? waiting : active);
    expect_copies(book->book_id, COPIES - expected_ready, expected_ready);
}

Test(holds, a_renewal_is_refused_while_a_reader_waits) {
    Book *book = register_book("Renew or Not", "Koha", "978-26", 1);
    const char *borrower = unique("borrower"), *waiter = unique("reader");
    Loan *loan = borrow(borrower, book->book_id);
    cr_assert_eq(loan->status, ACTIVE);
    Library__Lending__V1__RenewLoanRequest renew = LIBRARY__LENDING__V1__RENEW_LOAN_REQUEST__INIT;
    renew.loan_id = loan->loan_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(lending, LENDING "RenewLoan", &renew.base, &library__lending__v1__loan__descriptor, mem,
                              user_bearer(borrower), &response, &st),
                 STATUS_OK, "nobody waits yet: %s", st.message);
    cr_assert_eq(((Loan *)response)->renewal_count, 1);
    Hold *h = hold(waiter, book->book_id);
    cr_assert_eq(h->status, WAITING);
    cr_assert_eq(h->position, 1);
    cr_assert_eq(harness_call(lending, LENDING "RenewLoan", &renew.base, &library__lending__v1__loan__descriptor, mem,
                              user_bearer(borrower), &response, &st),
                 STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "HOLDS_WAITING", "reason %s: %s", st.reason, st.message);
    Hold *canceled = NULL;
    cr_assert_eq(hold_call("CancelHold", user_bearer(waiter), h->hold_id, &canceled, &st), STATUS_OK);
    int64_t until = harness_now_ms() + harness_latency_bound_ms(5000);
    status_code code;
    while ((code = harness_call(lending, LENDING "RenewLoan", &renew.base, &library__lending__v1__loan__descriptor,
                                mem, user_bearer(borrower), &response, &st)) != STATUS_OK &&
           harness_now_ms() < until)
        harness_sleep_ms(50);
    cr_assert_eq(code, STATUS_OK, "after the cancel the renewal goes through: %s", st.message);
    cr_assert_eq(((Loan *)response)->renewal_count, 2);
}

/* PlaceHold died between taking the user's slot and storing the hold: after RECONCILE_AFTER
 * the reconciler claims the hold as CANCELED and frees the slot. */
Test(holds, a_slot_held_by_a_hold_never_stored_is_freed_after_the_grace) {
    const char *env[] = {"MAX_HOLDS=1", "RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=2s", NULL};
    test_stack s;
    test_stack_start(&s, "ghost-hold", env, false, NULL);
    Book *book = test_stack_register(&s, "Ghost Hold", 0);
    Book *other = test_stack_register(&s, "Another", 0);
    const char *user = "ghost-holder";

    status st;
    char ghost_id[21];
    lending_new_loan_id(user, "hold:ghost-request", ghost_id);
    Library__Lending__Internal__OpenHold ghost = LIBRARY__LENDING__INTERNAL__OPEN_HOLD__INIT;
    ghost.hold_id = ghost_id;
    ghost.book_id = book->book_id;
    Library__Lending__Internal__OpenHold *open[] = {&ghost};
    char *history[] = {ghost_id};
    Library__Lending__Internal__UserRecord record = LIBRARY__LENDING__INTERNAL__USER_RECORD__INIT;
    record.n_open_holds = 1;
    record.open_holds = open;
    record.n_hold_history = 1;
    record.hold_history = history;
    test_stack_plant_user_record(&s, user, &record.base);
    int64_t planted = harness_now_ms();

    const char *bearer = harness_bearer(mem, s.dir, user, false);
    Library__Lending__V1__PlaceHoldRequest place = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    place.book_id = other->book_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(s.lending_client, LENDING "PlaceHold", &place.base,
                                    &library__lending__v1__hold__descriptor, mem, bearer, &response, &st);
    cr_assert_eq(code, STATUS_FAILED_PRECONDITION, "the entry holds the only slot: %s", status_code_name(code));
    cr_assert_str_eq(st.reason, "HOLD_LIMIT");
    while (code == STATUS_FAILED_PRECONDITION && harness_now_ms() - planted < harness_latency_bound_ms(10000)) {
        harness_sleep_ms(200);
        code = harness_call(s.lending_client, LENDING "PlaceHold", &place.base, &library__lending__v1__hold__descriptor,
                            mem, bearer, &response, &st);
    }
    int64_t freed_after = harness_now_ms() - planted;
    cr_assert_eq(code, STATUS_OK, "the slot was not freed: %s", st.message);
    cr_assert_geq(freed_after, 1800, "the entry was dropped after %lld ms, inside the grace", (long long)freed_after);
    cr_log_info("the hold slot was freed %lld ms after the crash", (long long)freed_after);

    Library__Lending__V1__GetHoldRequest get = LIBRARY__LENDING__V1__GET_HOLD_REQUEST__INIT;
    get.hold_id = ghost_id;
    cr_assert_eq(harness_call(s.lending_client, LENDING "GetHold", &get.base, &library__lending__v1__hold__descriptor,
                              mem, bearer, &response, &st),
                 STATUS_OK, "%s", st.message);
    cr_assert_eq(((Hold *)response)->status, HOLD_CANCELED);
    /* the client retries the request that died: it gets the claimed hold, no second one */
    place.book_id = book->book_id;
    place.request_id = "ghost-request";
    cr_assert_eq(harness_call(s.lending_client, LENDING "PlaceHold", &place.base, &library__lending__v1__hold__descriptor,
                              mem, bearer, &response, &st),
                 STATUS_OK, "%s", st.message);
    cr_assert_str_eq(((Hold *)response)->hold_id, ghost_id);
    cr_assert_eq(((Hold *)response)->status, HOLD_CANCELED);
    test_stack_stop(&s);
}

Test(holds, a_reader_with_an_overdue_loan_may_place_no_hold) {
    const char *env[] = {"LOAN_PERIOD=1s", "RECONCILE_INTERVAL=300ms", NULL};
    test_stack s;
    test_stack_start(&s, "overdue-hold", env, false, NULL);
    Book *lent = test_stack_register(&s, "Kept Too Long", 1);
    Book *wanted = test_stack_register(&s, "Wanted", 0);
    const char *bearer = harness_bearer(mem, s.dir, "late-reader", false);
    Library__Lending__V1__BorrowBookRequest take = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    take.book_id = lent->book_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(s.lending_client, LENDING "BorrowBook", &take.base, &library__lending__v1__loan__descriptor,
                              mem, bearer, &response, &st),
                 STATUS_OK, "%s", st.message);
    cr_assert_eq(((Loan *)response)->status, ACTIVE);
    harness_sleep_ms(2100); /* past the 1 s period, whole seconds */
    Library__Lending__V1__PlaceHoldRequest place = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    place.book_id = wanted->book_id;
    cr_assert_eq(harness_call(s.lending_client, LENDING "PlaceHold", &place.base, &library__lending__v1__hold__descriptor,
                              mem, bearer, &response, &st),
                 STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERDUE_LOANS", "reason %s: %s", st.reason, st.message);
    test_stack_stop(&s);
}

/* The hold history is kept as the loan history is (user_record.h): the newest ids in the user
 * record, older ones in history.<user key>. A PlaceHold retried a hundred holds later is still
 * the same hold, and ListHolds pages through every hold across both parts. */
Test(holds, a_hold_a_hundred_holds_back_is_still_known_and_listed) {
    enum { LATER = 100, PAGE = 7 };
    Book *book = register_book("Often held", "A", "", 0);
    const char *user = unique("often-holds");
    const char *bearer = user_bearer(user);
    const char *ids[LATER + 1];
    status st;
    Hold *h = NULL, *canceled = NULL;
    for (int i = 0; i <= LATER; i++) {
        cr_assert_eq(place_hold(bearer, book->book_id, i == 0 ? "the-first" : NULL, &h, &st), STATUS_OK,
                     "hold %d: %s", i, st.message);
        ids[i] = h->hold_id;
        cr_assert_eq(hold_call("CancelHold", bearer, h->hold_id, &canceled, &st), STATUS_OK, "cancel %d: %s", i,
                     st.message);
    }

    /* The older ids moved: the user's history key holds them and the user record stays small. */
    nats_connection *nats = NULL;
    nats_connection_options options = harness_nats_options(fixture_nats_url(), "test");
    cr_assert_eq(nats_connection_open(&options, &nats, &st), STATUS_OK, "%s", st.message);
    kv_bucket *loans = NULL;
    cr_assert_eq(kv_bucket_open(nats, "loans", 1, &loans, &st), STATUS_OK, "%s", st.message);
    char *key = text_base64url_encode(mem, (const uint8_t *)user, strlen(user));
    kv_value value;
    cr_assert_eq(kv_get(loans, arena_sprintf(mem, "history.%s", key), mem, &value, &st), STATUS_OK,
                 "the user's older holds: %s", st.message);
    Library__Lending__Internal__UserHistory *older = library__lending__internal__user_history__unpack(
        NULL, value.size, (const uint8_t *)value.data);
    cr_assert_not_null(older);
    cr_assert_gt(older->n_hold_ids, 0);
    cr_assert_str_eq(older->hold_ids[0], ids[0], "the oldest hold moved first");
    cr_assert_eq(older->n_loan_ids, 0);
    library__lending__internal__user_history__free_unpacked(older, NULL);
    cr_assert_eq(kv_get(loans, arena_sprintf(mem, "user.%s", key), mem, &value, &st), STATUS_OK);
    cr_assert_lt(value.size, 4096, "the user record is %zu bytes", value.size);
    Library__Lending__Internal__UserRecord *record =
        library__lending__internal__user_record__unpack(NULL, value.size, (const uint8_t *)value.data);
    cr_assert_not_null(record);
    cr_assert_leq(record->n_hold_history, 64, "the window");
    cr_assert_gt(record->hold_filter.len, 0);
    cr_log_info("the user record with %d holds is %zu bytes, %zu hold ids in it", LATER + 1, value.size,
                record->n_hold_history);
    library__lending__internal__user_record__free_unpacked(record, NULL);

    /* PlaceHold of the first request again: the first hold, and no second one. */
    Hold *again = NULL;
    cr_assert_eq(place_hold(bearer, book->book_id, "the-first", &again, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(again->hold_id, ids[0]);
    cr_assert_eq(again->status, HOLD_CANCELED);
    cr_assert_eq(kv_get(loans, arena_sprintf(mem, "user.%s", key), mem, &value, &st), STATUS_OK);
    record = library__lending__internal__user_record__unpack(NULL, value.size, (const uint8_t *)value.data);
    cr_assert_not_null(record);
    size_t open = record->n_open_holds;
    library__lending__internal__user_record__free_unpacked(record, NULL);
    cr_assert_eq(open, 0, "the retried request took a hold slot again");
    kv_bucket_close(loans);
    nats_connection_close(nats);

    /* ListHolds, a few at a time: every hold, newest first, across the record and the archive. */
    Library__Lending__V1__ListHoldsRequest list = LIBRARY__LENDING__V1__LIST_HOLDS_REQUEST__INIT;
    list.user_id = (char *)user;
    list.page_size = PAGE;
    size_t count = 0;
    for (int page = 0; page < 2 * LATER / PAGE; page++) {
        ProtobufCMessage *response = NULL;
        cr_assert_eq(harness_call(lending, LENDING "ListHolds", &list.base,
                                  &library__lending__v1__list_holds_response__descriptor, mem, bearer, &response, &st),
                     STATUS_OK, "ListHolds: %s", st.message);
        Library__Lending__V1__ListHoldsResponse *r = (void *)response;
        for (size_t i = 0; i < r->n_holds; i++, count++) {
            cr_assert_lt(count, LATER + 1, "more holds listed than placed");
            cr_assert_str_eq(r->holds[i]->hold_id, ids[LATER - count], "hold %zu from the newest", count);
        }
        if (r->next_page_token == NULL || r->next_page_token[0] == '\0')
            break;
        list.page_token = r->next_page_token;
    }
    cr_assert_eq(count, LATER + 1, "ListHolds lists %zu holds", count);

    /* and a new hold on the book goes through: no open hold of it was left behind */
    cr_assert_eq(place_hold(bearer, book->book_id, NULL, &h, &st), STATUS_OK, "%s %s", st.reason, st.message);
}
