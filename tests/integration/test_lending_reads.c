/* test_lending_reads.c - GetLoan and ListLoans answer from lending's loan index: a caller
 * answered by a write never reads an older loan on the same replica, and a second replica on
 * the same NATS sees the change within a second (docs/decisions.md, "GetLoan from an index"). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "library/lending/v1/lending.pb-c.h"
#include "stack_fixture.h"
#include "text.h"

typedef Library__Lending__V1__Loan Loan;

#define LENDING "/library.lending.v1.LendingService/"
#define PENDING LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define RETURNED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED

TestSuite(lending_reads, .init = fixture_setup, .fini = fixture_teardown, .timeout = 120);

static const char *unique(const char *prefix) {
    char id[13];
    text_random_hex(id, 6);
    return arena_sprintf(mem, "%s-%s", prefix, id);
}

static Loan *call(rpc_client *c, const char *method, const char *user, const char *loan_id, const char *book_id) {
    ProtobufCMessage *response = NULL;
    status st;
    status_code code;
    char path[96];
    snprintf(path, sizeof path, LENDING "%s", method);
    if (book_id != NULL) {
        Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
        request.book_id = (char *)book_id;
        code = harness_call(c, path, &request.base, &library__lending__v1__loan__descriptor, mem, user_bearer(user),
                            &response, &st);
    } else if (strcmp(method, "RenewLoan") == 0) {
        Library__Lending__V1__RenewLoanRequest request = LIBRARY__LENDING__V1__RENEW_LOAN_REQUEST__INIT;
        request.loan_id = (char *)loan_id;
        code = harness_call(c, path, &request.base, &library__lending__v1__loan__descriptor, mem, user_bearer(user),
                            &response, &st);
    } else if (strcmp(method, "ReturnBook") == 0) {
        Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
        request.loan_id = (char *)loan_id;
        code = harness_call(c, path, &request.base, &library__lending__v1__loan__descriptor, mem, user_bearer(user),
                            &response, &st);
    } else {
        Library__Lending__V1__GetLoanRequest request = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
        request.loan_id = (char *)loan_id;
        code = harness_call(c, path, &request.base, &library__lending__v1__loan__descriptor, mem, user_bearer(user),
                            &response, &st);
    }
    cr_assert_eq(code, STATUS_OK, "%s by %s: %s %s", method, user, status_code_name(code), st.message);
    return (Loan *)response;
}

/* How far a loan has come: its status (PENDING, then ACTIVE, then RETURNED or CANCELED),
 * then its renewals; the due time only moves with a renewal. */
static int stage(const Loan *loan) {
    return loan->status == PENDING ? 0 : loan->status == ACTIVE ? 1 : 2;
}

static void expect_not_older(const Loan *read, const Loan *answered, const char *after) {
    cr_assert_str_eq(read->loan_id, answered->loan_id);
    cr_assert_geq(stage(read), stage(answered), "after %s: GetLoan says status %d, the write answered %d", after,
                  read->status, answered->status);
    cr_assert_geq(read->renewal_count, answered->renewal_count, "after %s: renewal_count %d, the write answered %d",
                  after, read->renewal_count, answered->renewal_count);
    cr_assert(read->due_time && answered->due_time);
    cr_assert_geq(read->due_time->seconds, answered->due_time->seconds,
                  "after %s: due %lld, the write answered %lld", after, (long long)read->due_time->seconds,
                  (long long)answered->due_time->seconds);
}

/* GetLoan `times` at once after a write answered `answered`; returns the newest read. */
static Loan *read_after(const char *user, Loan *answered, int times, const char *after, int *reads) {
    Loan *newest = answered;
    for (int i = 0; i < times; i++) {
        Loan *read = call(lending, "GetLoan", user, answered->loan_id, NULL);
        expect_not_older(read, newest, after);
        newest = read;
        (*reads)++;
    }
    return newest;
}

Test(lending_reads, get_loan_right_after_a_write_never_reads_an_older_loan) {
    Book *book = register_book("Read Your Writes", "Index", "978-90", 40);
    const char *reader = unique("ryw");
    int reads = 0, cycles = 0;
    while (reads < 200) {
        Loan *loan = call(lending, "BorrowBook", reader, NULL, book->book_id);
        loan = read_after(reader, loan, 4, "BorrowBook", &reads);
        int64_t until = harness_now_ms() + 8000;
        while (loan->status == PENDING && harness_now_ms() < until)
            loan = read_after(reader, loan, 1, "BorrowBook", &reads);
        cr_assert_eq(loan->status, ACTIVE, "loan %s is %d", loan->loan_id, loan->status);
        for (int renewal = 1; renewal <= 2; renewal++) {
            Loan *renewed = call(lending, "RenewLoan", reader, loan->loan_id, NULL);
            cr_assert_eq(renewed->renewal_count, renewal);
            loan = read_after(reader, renewed, 4, "RenewLoan", &reads);
        }
        Loan *returned = call(lending, "ReturnBook", reader, loan->loan_id, NULL);
        cr_assert_eq(returned->status, RETURNED);
        loan = read_after(reader, returned, 4, "ReturnBook", &reads);
        cr_assert_eq(loan->status, RETURNED);
        cycles++;
    }
    cr_assert_geq(reads, 200);
    cr_assert_gt(cycles, 5);
}

static Library__Lending__V1__ListLoansResponse *list_page(const char *user, int page_size, const char *token) {
    Library__Lending__V1__ListLoansRequest request = LIBRARY__LENDING__V1__LIST_LOANS_REQUEST__INIT;
    request.page_size = page_size;
    request.page_token = (char *)(token ? token : "");
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(lending, LENDING "ListLoans", &request.base,
                                    &library__lending__v1__list_loans_response__descriptor, mem, user_bearer(user),
                                    &response, &st);
    cr_assert_eq(code, STATUS_OK, "ListLoans: %s %s", status_code_name(code), st.message);
    return (Library__Lending__V1__ListLoansResponse *)response;
}

/* ListLoans from the index: right after each borrow and each return the loan is first and
 * as the write answered, and pages of two walk every loan once, newest first. */
Test(lending_reads, list_loans_shows_each_write_at_once_and_pages_through_all) {
    Book *book = register_book("Listed From Memory", "Index", "978-91", 10);
    const char *reader = unique("lister");
    const char *ids[5];
    for (int i = 0; i < 5; i++) {
        Loan *loan = call(lending, "BorrowBook", reader, NULL, book->book_id);
        ids[i] = loan->loan_id;
        Library__Lending__V1__ListLoansResponse *page = list_page(reader, 1, NULL);
        cr_assert_eq(page->n_loans, 1);
        cr_assert_str_eq(page->loans[0]->loan_id, ids[i], "ListLoans right after borrow %d", i + 1);
        cr_assert_geq(stage(page->loans[0]), stage(loan));
        int64_t until = harness_now_ms() + 8000;
        while (loan->status == PENDING && harness_now_ms() < until) {
            harness_sleep_ms(20);
            loan = call(lending, "GetLoan", reader, loan->loan_id, NULL);
        }
        cr_assert_eq(loan->status, ACTIVE);
        call(lending, "ReturnBook", reader, loan->loan_id, NULL);
        page = list_page(reader, 1, NULL);
        cr_assert_str_eq(page->loans[0]->loan_id, ids[i]);
        cr_assert_eq(page->loans[0]->status, RETURNED, "ListLoans right after return %d", i + 1);
    }
    size_t seen = 0;
    const char *token = NULL;
    for (int page_number = 0; page_number < 5; page_number++) {
        Library__Lending__V1__ListLoansResponse *page = list_page(reader, 2, token);
        for (size_t i = 0; i < page->n_loans; i++, seen++) {
            cr_assert_lt(seen, 5);
            cr_assert_str_eq(page->loans[i]->loan_id, ids[4 - seen], "loan %zu of the pages", seen);
        }
        if (page->next_page_token == NULL || page->next_page_token[0] == '\0')
            break;
        token = page->next_page_token;
    }
    cr_assert_eq(seen, 5);
}

/* A second lending replica on the same NATS: a change made through one is what GetLoan on
 * the other answers within a second (its index follows the bucket's watch). */
Test(lending_reads, another_replica_sees_a_change_within_a_second) {
    const char *catalog_env = arena_sprintf(mem, "CATALOG_ADDR=%s", fixture_catalog_address());
    const char *nats_env = arena_sprintf(mem, "NATS_URL=%s", fixture_nats_url());
    const char *env[] = {nats_env, catalog_env, FIXTURE_LENDING_ENV, NULL};
    harness_process second;
    cr_assert(harness_replica_start("lending", unique("lending-b"), fixture_dir(), env, &second),
              "a second lending did not start: %s", second.log_path);
    rpc_client *other = NULL;
    cr_assert_eq(rpc_client_create(second.address, 10000, &other, NULL), STATUS_OK);

    Book *book = register_book("Two Replicas", "Index", "978-92", 10);
    const char *reader = unique("replicas");
    int64_t worst_ms = 0;
    for (int round = 0; round < 3; round++) {
        rpc_client *writer = round % 2 ? other : lending, *observer = round % 2 ? lending : other;
        Loan *loan = call(writer, "BorrowBook", reader, NULL, book->book_id);
        int64_t until = harness_now_ms() + 8000;
        while (loan->status == PENDING && harness_now_ms() < until) {
            harness_sleep_ms(20);
            loan = call(writer, "GetLoan", reader, loan->loan_id, NULL);
        }
        cr_assert_eq(loan->status, ACTIVE);
        const char *steps[] = {"RenewLoan", "ReturnBook"};
        for (int s = 0; s < 2; s++) {
            Loan *answered = call(writer, steps[s], reader, loan->loan_id, NULL);
            int64_t start = harness_now_ms();
            Loan *seen = call(observer, "GetLoan", reader, loan->loan_id, NULL);
            while ((seen->status != answered->status || seen->renewal_count != answered->renewal_count) &&
                   harness_now_ms() - start < 1000) {
                harness_sleep_ms(5);
                seen = call(observer, "GetLoan", reader, loan->loan_id, NULL);
            }
            int64_t took = harness_now_ms() - start;
            cr_assert(seen->status == answered->status && seen->renewal_count == answered->renewal_count,
                      "after %s on one replica, the other still says status %d, %d renewals after %lld ms",
                      steps[s], seen->status, seen->renewal_count, (long long)took);
            if (took > worst_ms)
                worst_ms = took;
            loan = answered;
        }
    }
    cr_log_info("the other replica caught up within %lld ms", (long long)worst_ms);
    rpc_client_destroy(other);
    cr_assert_eq(harness_process_stop(&second, SIGTERM, 15000), 0, "the second lending did not exit cleanly: %s",
                 second.log_path);
}
