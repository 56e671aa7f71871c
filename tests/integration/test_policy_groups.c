/* test_policy_groups.c - patron groups and their loan policies against real nats-server,
 * catalog and lending processes: readers of different groups (the token's group claim)
 * borrowing the same book get their group's loan period, loan limit, renewals, hold limit and
 * pickup time, fines and fine block, and their loans keep the group and its fine terms; a
 * changed policy file reaches renewals and new loans, not the loans already out; a token with
 * a bad group is UNAUTHENTICATED; a bad policy file stops lending at start with exit 2, naming
 * the field. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "library/lending/v1/lending.pb-c.h"
#include "loan_record.pb-c.h"
#include "loan_store.h"
#include "stack_fixture.h"
#include "text.h"
#include "timestamp.h"

typedef Library__Lending__V1__Loan Loan;
typedef Library__Lending__V1__Hold Hold;

#define LENDING "/library.lending.v1.LendingService/"
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define READY LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY
#define HOUR 3600
#define DAY (24 * HOUR)

TestSuite(policy_groups, .init = fixture_setup, .fini = fixture_teardown, .timeout = 180);

/* child and staff have rows; a patron (no claim) and any other group lend by the settings. */
static const char policy_text[] =
    "{\"groups\": {\n"
    "  \"child\": {\"loan_period\": \"1h\", \"max_active_loans\": 1, \"max_renewals\": 1, \"max_holds\": 1,\n"
    "             \"hold_pickup\": \"30s\", \"fine_per_interval\": 10, \"fine_interval\": \"1h\",\n"
    "             \"fine_max_per_loan\": 100, \"fine_block_at\": 50},\n"
    "  \"staff\": {\"loan_period\": \"30d\", \"max_active_loans\": 3, \"max_renewals\": 3}\n"
    "}}\n";

/* The same file a librarian changed: children now borrow for 2 h, renew twice, pay 7 an hour. */
static const char changed_policy_text[] =
    "{\"groups\": {\n"
    "  \"child\": {\"loan_period\": \"2h\", \"max_active_loans\": 1, \"max_renewals\": 2, \"max_holds\": 1,\n"
    "             \"fine_per_interval\": 7, \"fine_interval\": \"1h\", \"fine_max_per_loan\": 70}\n"
    "}}\n";

#define SETTINGS "LOAN_PERIOD=7d", "MAX_ACTIVE_LOANS=2", "MAX_HOLDS=5", "FINE_PER_INTERVAL=30", \
                 "FINE_INTERVAL=2h", "FINE_MAX_PER_LOAN=300", "FINE_BLOCK_AT=150"

static const char *write_policy(const char *name, const char *text) {
    const char *path = arena_sprintf(mem, "%s/policy-%s.json", fixture_dir(), name);
    FILE *file = fopen(path, "w");
    cr_assert_not_null(file, "%s", path);
    fputs(text, file);
    fclose(file);
    return path;
}

static void start_with_policy(test_stack *s, const char *name, const char *policy_path) {
    const char *policy_env = arena_sprintf(mem, "POLICY_FILE=%s", policy_path);
    const char *env[] = {FIXTURE_LENDING_ENV, SETTINGS, policy_env, NULL};
    test_stack_start(s, name, env, false, NULL);
}

/* A bearer for user in group (NULL: no group claim) signed with the stack's key. */
static const char *bearer_of(const test_stack *s, const char *user, const char *group) {
    harness_token_options options = {.subject = user, .ttl_seconds = 3600, .group = group};
    char *token = harness_token(mem, s->dir, &options);
    cr_assert_not_null(token);
    return arena_sprintf(mem, "Bearer %s", token);
}

static status_code borrow(rpc_client *lending_client, const char *bearer, const char *book_id, Loan **out,
                          status *st) {
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(lending_client, LENDING "BorrowBook", &request.base,
                                    &library__lending__v1__loan__descriptor, mem, bearer, &response, st);
    *out = (Loan *)response;
    return code;
}

/* BorrowBook, asserted ACTIVE (the saga has the whole BORROW_WAIT to decide); its due time is
 * checked against now + period_seconds around the call. */
static Loan *borrow_active(test_stack *s, const char *bearer, const char *book_id, int64_t period_seconds) {
    int64_t before = timestamp_now_ms();
    Loan *loan = NULL;
    status st;
    status_code code = borrow(s->lending_client, bearer, book_id, &loan, &st);
    int64_t after = timestamp_now_ms();
    cr_assert_eq(code, STATUS_OK, "BorrowBook: %s %s", status_code_name(code), st.message);
    cr_assert_eq(loan->status, ACTIVE, "loan %s is %d", loan->loan_id, (int)loan->status);
    int64_t due = loan->due_time->seconds;
    cr_assert(due >= (before / 1000) + period_seconds && due <= (after / 1000) + period_seconds + 1,
              "due %lld is not now + %lld s (now %lld)", (long long)due, (long long)period_seconds,
              (long long)(before / 1000));
    return loan;
}

static void borrow_refused(test_stack *s, const char *bearer, const char *book_id, const char *reason) {
    Loan *loan = NULL;
    status st;
    status_code code = borrow(s->lending_client, bearer, book_id, &loan, &st);
    cr_assert_eq(code, STATUS_FAILED_PRECONDITION, "BorrowBook: %s %s, expected %s", status_code_name(code),
                 st.message, reason);
    cr_assert_str_eq(st.reason, reason, "%s", st.message);
}

static status_code renew(test_stack *s, const char *bearer, const char *loan_id, Loan **out, status *st) {
    Library__Lending__V1__RenewLoanRequest request = LIBRARY__LENDING__V1__RENEW_LOAN_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(s->lending_client, LENDING "RenewLoan", &request.base,
                                    &library__lending__v1__loan__descriptor, mem, bearer, &response, st);
    *out = (Loan *)response;
    return code;
}

static Loan *get_loan(test_stack *s, const char *bearer, const char *loan_id) {
    Library__Lending__V1__GetLoanRequest request = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(s->lending_client, LENDING "GetLoan", &request.base,
                              &library__lending__v1__loan__descriptor, mem, bearer, &response, &st),
                 STATUS_OK, "GetLoan: %s", st.message);
    return (Loan *)response;
}

/* lending's own records in the stack's "loans" bucket. */
typedef struct records {
    nats_connection *connection;
    loan_store *store;
} records;

static records records_open(test_stack *s) {
    records r = {0};
    status st;
    nats_connection_options options = harness_nats_options(s->nats.url, "test");
    cr_assert_eq(nats_connection_open(&options, &r.connection, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(loan_store_open(r.connection, 1, &r.store, &st), STATUS_OK, "%s", st.message);
    return r;
}

static void records_close(records *r) {
    loan_store_close(r->store);
    nats_connection_close(r->connection);
}

static void expect_terms(const Library__Lending__Internal__FineTerms *terms, int64_t per_interval,
                         int64_t interval_seconds, int64_t max_per_loan, const char *what) {
    cr_assert_not_null(terms, "%s: no fine terms", what);
    cr_assert(terms->per_interval == per_interval && terms->interval_seconds == interval_seconds &&
                  terms->max_per_loan == max_per_loan,
              "%s: fine terms %lld per %lld s, at most %lld; expected %lld per %lld s, at most %lld", what,
              (long long)terms->per_interval, (long long)terms->interval_seconds, (long long)terms->max_per_loan,
              (long long)per_interval, (long long)interval_seconds, (long long)max_per_loan);
}

/* The loan record keeps the group and the fine terms; the user record's open entry the terms
 * and the title. */
static void expect_recorded(records *r, const Loan *loan, const char *group, int64_t per_interval,
                            int64_t interval_seconds, int64_t max_per_loan) {
    loan_record *record = NULL;
    status st;
    cr_assert_eq(loan_store_get(r->store, loan->loan_id, mem, &record, &st), STATUS_OK, "%s", st.message);
    cr_assert_str_eq(record->patron_group, group);
    expect_terms(record->fine_terms, per_interval, interval_seconds, max_per_loan, "the loan record");
    user_record *user = NULL;
    cr_assert_eq(loan_store_get_user(r->store, loan->user_id, mem, &user, &st), STATUS_OK, "%s", st.message);
    const Library__Lending__Internal__OpenLoan *open = NULL;
    for (size_t i = 0; i < user->n_open_loans; i++)
        if (strcmp(user->open_loans[i]->loan_id, loan->loan_id) == 0)
            open = user->open_loans[i];
    cr_assert_not_null(open, "the user record of %s has no open entry for %s", loan->user_id, loan->loan_id);
    cr_assert_str_eq(open->book_title, loan->book_title);
    expect_terms(open->fine_terms, per_interval, interval_seconds, max_per_loan, "the open entry");
}

Test(policy_groups, groups_borrowing_the_same_book_get_their_own_period_limit_and_terms) {
    test_stack s;
    start_with_policy(&s, "borrow", write_policy("borrow", policy_text));
    Book *dune = test_stack_register(&s, "Dune", 6);
    Book *emma = test_stack_register(&s, "Emma", 6);
    const char *child = bearer_of(&s, "dora", "child");
    const char *staff = bearer_of(&s, "sam", "staff");
    const char *patron = bearer_of(&s, "pat", NULL);
    const char *visitor = bearer_of(&s, "vic", "visitor");

    Loan *child_loan = borrow_active(&s, child, dune->book_id, HOUR);
    Loan *staff_loan = borrow_active(&s, staff, dune->book_id, 30 * DAY);
    Loan *patron_loan = borrow_active(&s, patron, dune->book_id, 7 * DAY);
    Loan *visitor_loan = borrow_active(&s, visitor, dune->book_id, 7 * DAY);
    cr_assert_gt(staff_loan->due_time->seconds, child_loan->due_time->seconds + 29 * DAY);

    borrow_refused(&s, child, emma->book_id, "LOAN_LIMIT"); /* child: 1 */
    borrow_active(&s, staff, emma->book_id, 30 * DAY);     /* staff: 3 */
    borrow_active(&s, patron, emma->book_id, 7 * DAY);     /* the setting: 2 */
    Book *odes = test_stack_register(&s, "Odes", 2);
    borrow_active(&s, staff, odes->book_id, 30 * DAY);
    Book *iliad = test_stack_register(&s, "Iliad", 2);
    borrow_refused(&s, staff, iliad->book_id, "LOAN_LIMIT");
    borrow_refused(&s, patron, iliad->book_id, "LOAN_LIMIT");

    records r = records_open(&s);
    expect_recorded(&r, child_loan, "child", 10, HOUR, 100);
    expect_recorded(&r, staff_loan, "staff", 30, 2 * HOUR, 300); /* fields staff leaves out: the settings */
    expect_recorded(&r, patron_loan, "patron", 30, 2 * HOUR, 300);
    expect_recorded(&r, visitor_loan, "visitor", 30, 2 * HOUR, 300);
    records_close(&r);
    test_stack_stop(&s);
}

Test(policy_groups, renewals_follow_the_loans_group_and_a_changed_file_reaches_renewals_and_new_loans) {
    test_stack s;
    const char *path = write_policy("renew", policy_text);
    start_with_policy(&s, "renew", path);
    Book *dune = test_stack_register(&s, "Dune", 3);
    const char *child = bearer_of(&s, "dora", "child");
    const char *staff = bearer_of(&s, "sam", "staff");
    Loan *child_loan = borrow_active(&s, child, dune->book_id, HOUR);
    Loan *staff_loan = borrow_active(&s, staff, dune->book_id, 30 * DAY);

    Loan *renewed = NULL;
    status st;
    cr_assert_eq(renew(&s, child, child_loan->loan_id, &renewed, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(renewed->due_time->seconds, child_loan->due_time->seconds + HOUR, "a child's renewal adds 1 h");
    int64_t child_due = renewed->due_time->seconds;
    cr_assert_eq(renew(&s, child, child_loan->loan_id, &renewed, &st), STATUS_FAILED_PRECONDITION,
                 "a child renews once");
    cr_assert_str_eq(st.reason, "RENEWAL_LIMIT", "%s", st.message);
    for (int i = 1; i <= 3; i++) {
        cr_assert_eq(renew(&s, staff, staff_loan->loan_id, &renewed, &st), STATUS_OK, "staff renewal %d: %s", i,
                     st.message);
        cr_assert_eq(renewed->due_time->seconds, staff_loan->due_time->seconds + i * 30 * DAY);
    }
    cr_assert_eq(renew(&s, staff, staff_loan->loan_id, &renewed, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "RENEWAL_LIMIT", "%s", st.message);

    /* The librarian changes the file; lending reads it at its next start. */
    cr_assert_eq(harness_process_stop(&s.lending, SIGTERM, 10000), 0, "lending did not stop cleanly");
    write_policy("renew", changed_policy_text);
    const char *policy_env = arena_sprintf(mem, "POLICY_FILE=%s", path);
    const char *env[] = {FIXTURE_LENDING_ENV, SETTINGS, policy_env, NULL};
    cr_assert(fixture_start_lending(s.dir, s.nats.url, s.catalog.address, env, &s.lending),
              "lending did not start again: %s", s.lending.log_path);
    rpc_client_destroy(s.lending_client);
    cr_assert_eq(rpc_client_create(s.lending.address, 10000, &s.lending_client, NULL), STATUS_OK);

    Loan *out = get_loan(&s, child, child_loan->loan_id);
    cr_assert_eq(out->due_time->seconds, child_due, "a loan already out keeps its due time");
    records r = records_open(&s);
    expect_recorded(&r, out, "child", 10, HOUR, 100); /* and its fine terms */
    cr_assert_eq(renew(&s, child, child_loan->loan_id, &renewed, &st), STATUS_OK,
                 "children may now renew twice: %s", st.message);
    cr_assert_eq(renewed->due_time->seconds, child_due + 2 * HOUR, "the renewal adds the new 2 h");
    expect_recorded(&r, renewed, "child", 7, HOUR, 70);
    Library__Lending__V1__ReturnBookRequest give_back = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    give_back.loan_id = child_loan->loan_id;
    ProtobufCMessage *response = NULL;
    cr_assert_eq(harness_call(s.lending_client, LENDING "ReturnBook", &give_back.base,
                              &library__lending__v1__loan__descriptor, mem, child, &response, &st),
                 STATUS_OK, "%s", st.message);
    Book *emma = test_stack_register(&s, "Emma", 1);
    int64_t until = harness_now_ms() + 10000; /* the returned loan's slot frees with the return */
    Loan *fresh = NULL;
    while (borrow(s.lending_client, child, emma->book_id, &fresh, &st) == STATUS_FAILED_PRECONDITION &&
           strcmp(st.reason, "LOAN_LIMIT") == 0 && harness_now_ms() < until)
        harness_sleep_ms(100);
    cr_assert_eq(st.code, STATUS_OK, "a new child loan: %s %s", status_code_name(st.code), st.message);
    int64_t now = timestamp_now_ms() / 1000;
    cr_assert(fresh->due_time->seconds >= now + 2 * HOUR - 2 && fresh->due_time->seconds <= now + 2 * HOUR,
              "a new loan lends by the changed file: due %lld, now %lld", (long long)fresh->due_time->seconds,
              (long long)now);
    expect_recorded(&r, fresh, "child", 7, HOUR, 70);
    records_close(&r);
    test_stack_stop(&s);
}

static status_code place_hold(test_stack *s, const char *bearer, const char *book_id, Hold **out, status *st) {
    Library__Lending__V1__PlaceHoldRequest request = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status_code code = harness_call(s->lending_client, LENDING "PlaceHold", &request.base,
                                    &library__lending__v1__hold__descriptor, mem, bearer, &response, st);
    *out = (Hold *)response;
    return code;
}

/* PlaceHold on a book with a free copy: READY at once (GetHold until lending has heard). */
static Hold *hold_ready(test_stack *s, const char *bearer, const char *book_id) {
    Hold *hold = NULL;
    status st;
    cr_assert_eq(place_hold(s, bearer, book_id, &hold, &st), STATUS_OK, "PlaceHold: %s", st.message);
    Library__Lending__V1__GetHoldRequest get = LIBRARY__LENDING__V1__GET_HOLD_REQUEST__INIT;
    get.hold_id = hold->hold_id;
    int64_t until = harness_now_ms() + 10000;
    while (hold->status != READY) {
        cr_assert_lt(harness_now_ms(), until, "hold %s not READY after 10 s", get.hold_id);
        harness_sleep_ms(50);
        ProtobufCMessage *response = NULL;
        cr_assert_eq(harness_call(s->lending_client, LENDING "GetHold", &get.base,
                                  &library__lending__v1__hold__descriptor, mem, bearer, &response, &st),
                     STATUS_OK, "GetHold: %s", st.message);
        hold = (Hold *)response;
    }
    return hold;
}

Test(policy_groups, holds_follow_the_holders_group) {
    test_stack s;
    start_with_policy(&s, "holds", write_policy("holds", policy_text));
    Book *dune = test_stack_register(&s, "Dune", 2);
    Book *emma = test_stack_register(&s, "Emma", 2);
    const char *child = bearer_of(&s, "dora", "child");
    const char *patron = bearer_of(&s, "pat", NULL);

    Hold *held = hold_ready(&s, child, dune->book_id);
    int64_t waits = held->expire_time->seconds - held->ready_time->seconds;
    cr_assert(waits >= 29 && waits <= 31, "a child's copy waits %lld s; the child row says 30 s", (long long)waits);
    Hold *refused = NULL;
    status st;
    cr_assert_eq(place_hold(&s, child, emma->book_id, &refused, &st), STATUS_FAILED_PRECONDITION,
                 "a child holds one book at a time");
    cr_assert_str_eq(st.reason, "HOLD_LIMIT", "%s", st.message);

    held = hold_ready(&s, patron, emma->book_id);
    waits = held->expire_time->seconds - held->ready_time->seconds;
    cr_assert(waits >= 72 * HOUR - 1 && waits <= 72 * HOUR + 1,
              "a patron's copy waits %lld s; without a row it is the catalog's HOLD_PICKUP, 72 h", (long long)waits);
    test_stack_stop(&s);
}

static Library__Lending__V1__Account *get_account(test_stack *s, const char *bearer) {
    Library__Lending__V1__GetAccountRequest request = LIBRARY__LENDING__V1__GET_ACCOUNT_REQUEST__INIT;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(s->lending_client, LENDING "GetAccount", &request.base,
                              &library__lending__v1__account__descriptor, mem, bearer, &response, &st),
                 STATUS_OK, "GetAccount: %s", st.message);
    return (Library__Lending__V1__Account *)response;
}

static void give_back(test_stack *s, const char *bearer, const char *loan_id) {
    Library__Lending__V1__ReturnBookRequest request = LIBRARY__LENDING__V1__RETURN_BOOK_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(s->lending_client, LENDING "ReturnBook", &request.base,
                              &library__lending__v1__loan__descriptor, mem, bearer, &response, &st),
                 STATUS_OK, "ReturnBook: %s", st.message);
}

/* Both groups' loans of the same book are 2 s long and go late together: the child's fine runs
 * at 10 a second up to 30 and blocks from 20; staff pay 1 a second and are never blocked. */
Test(policy_groups, late_loans_are_fined_and_blocked_by_their_groups_terms) {
    static const char fines_policy[] =
        "{\"groups\": {\n"
        "  \"child\": {\"loan_period\": \"2s\", \"fine_per_interval\": 10, \"fine_interval\": \"1s\",\n"
        "             \"fine_max_per_loan\": 30, \"fine_block_at\": 20},\n"
        "  \"staff\": {\"loan_period\": \"2s\", \"fine_per_interval\": 1, \"fine_interval\": \"1s\",\n"
        "             \"fine_max_per_loan\": 1000, \"fine_block_at\": 0}\n"
        "}}\n";
    test_stack s;
    start_with_policy(&s, "fines", write_policy("fines", fines_policy));
    Book *dune = test_stack_register(&s, "Dune", 2);
    Book *emma = test_stack_register(&s, "Emma", 2);
    const char *child = bearer_of(&s, "dora", "child");
    const char *staff = bearer_of(&s, "sam", "staff");
    Loan *child_loan = borrow_active(&s, child, dune->book_id, 2);
    Loan *staff_loan = borrow_active(&s, staff, dune->book_id, 2);

    /* 4 s past due at least: the child's fine is at its cap, staff's 1 a second so far */
    int64_t late_enough = (child_loan->due_time->seconds + 4) * 1000;
    while (timestamp_now_ms() < late_enough)
        harness_sleep_ms(100);
    Library__Lending__V1__Account *account = get_account(&s, child);
    cr_assert_eq(account->balance, 30, "the child's fine is capped at 30, not %lld", (long long)account->balance);
    cr_assert_eq(account->block_at, 20, "the child's block is the child row's");
    account = get_account(&s, staff);
    cr_assert(account->balance >= 4 && account->balance <= 12,
              "staff pay 1 a started second: %lld after about 4-6 s late", (long long)account->balance);
    cr_assert_eq(account->block_at, 0);

    /* returned, the fines are fixed; the child's blocks, staff's never does */
    give_back(&s, child, child_loan->loan_id);
    give_back(&s, staff, staff_loan->loan_id);
    cr_assert_eq(get_account(&s, child)->balance, 30);
    int64_t until = harness_now_ms() + 10000; /* the returns free the slots */
    Loan *loan = NULL;
    status st;
    status_code code;
    while ((code = borrow(s.lending_client, child, emma->book_id, &loan, &st)) == STATUS_FAILED_PRECONDITION &&
           strcmp(st.reason, "FINES_OWED") != 0 && harness_now_ms() < until)
        harness_sleep_ms(100);
    cr_assert_eq(code, STATUS_FAILED_PRECONDITION, "the child owes 30 of a 20 block: %s %s", status_code_name(code),
                 st.message);
    cr_assert_str_eq(st.reason, "FINES_OWED", "%s", st.message);
    while ((code = borrow(s.lending_client, staff, emma->book_id, &loan, &st)) == STATUS_FAILED_PRECONDITION &&
           harness_now_ms() < until)
        harness_sleep_ms(100);
    cr_assert_eq(code, STATUS_OK, "staff are never blocked by fines: %s %s", status_code_name(code), st.message);
    test_stack_stop(&s);
}

/* The shared stack: a group no policy file could name refuses the token itself. */
Test(policy_groups, a_token_with_a_bad_group_is_unauthenticated) {
    Book *book = register_book("Group Test", "A", "", 2);
    const char *bad_groups[] = {"child care", "", "kind/child",
                                "g234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad_groups / sizeof bad_groups[0]; i++) {
        harness_token_options options = {.subject = "dora", .ttl_seconds = 3600, .group = bad_groups[i]};
        const char *bearer = arena_sprintf(mem, "Bearer %s", harness_token(mem, fixture_dir(), &options));
        Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
        request.book_id = book->book_id;
        ProtobufCMessage *response = NULL;
        status st;
        status_code code = harness_call(lending, LENDING "BorrowBook", &request.base,
                                        &library__lending__v1__loan__descriptor, mem, bearer, &response, &st);
        cr_assert_eq(code, STATUS_UNAUTHENTICATED, "group \"%s\": %s %s", bad_groups[i], status_code_name(code),
                     st.message);
        cr_assert_str_eq(st.reason, "INVALID_TOKEN");
        cr_assert_not_null(strstr(st.message, "group"), "the message names the claim: %s", st.message);
    }
    /* a good group the shared stack has no file for lends by its settings */
    harness_token_options options = {.subject = "dora", .ttl_seconds = 3600, .group = "child"};
    const char *bearer = arena_sprintf(mem, "Bearer %s", harness_token(mem, fixture_dir(), &options));
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = book->book_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(lending, LENDING "BorrowBook", &request.base, &library__lending__v1__loan__descriptor,
                              mem, bearer, &response, &st),
                 STATUS_OK, "%s", st.message);
}

/* lending run as a command with the policy file; its exit status, its output in *log. */
static int run_lending(const char *name, const char *policy_path, char **log) {
    const char *dir = arena_sprintf(mem, "%s/%s", fixture_dir(), name);
    mkdir(dir, 0755);
    cr_assert(harness_keys_create(dir));
    const char *env[] = {arena_sprintf(mem, "NATS_URL=%s", fixture_nats_url()),
                         arena_sprintf(mem, "CATALOG_ADDR=%s", fixture_catalog_address()),
                         arena_sprintf(mem, "POLICY_FILE=%s", policy_path), NULL};
    int64_t started = harness_now_ms();
    int exit_status = harness_service_run("lending", "", dir, env, 20000);
    int64_t took = harness_now_ms() - started;
    cr_assert_lt(took, harness_latency_bound_ms(2000), "a bad file stops lending at once, not after %lld ms",
                 (long long)took);
    int ignored = 0;
    *log = harness_command_output(mem, arena_sprintf(mem, "cat '%s/lending.log'", dir), &ignored);
    return exit_status;
}

Test(policy_groups, a_bad_policy_file_stops_lending_at_start_with_exit_2_naming_the_field) {
    static const struct {
        const char *name, *text, *expected;
    } cases[] = {
        {"bad-field", "{\"groups\": {\"child\": {\"loan_period\": \"2s\", \"max_active_loans\": 0}}}",
         "groups.child.max_active_loans: must be an integer from 1 to 1000"},
        {"typo", "{\"groups\": {\"staff\": {\"loan_periods\": \"60s\"}}}", "groups.staff.loan_periods: unknown field"},
        {"duration", "{\"groups\": {\"child\": {\"hold_pickup\": 72}}}",
         "groups.child.hold_pickup: must be a duration"},
        {"malformed", "{\"groups\": {\"child\": {\"max_holds\": 1,}}}", "line 1, column"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_policy(cases[i].name, cases[i].text);
        char *log = NULL;
        int exit_status = run_lending(cases[i].name, path, &log);
        cr_assert_eq(exit_status, 2, "%s: lending exited with %d: %s", cases[i].name, exit_status, log);
        cr_assert_not_null(strstr(log, "lending: configuration error: "), "%s", log);
        cr_assert_not_null(strstr(log, path), "the message names the file: %s", log);
        cr_assert_not_null(strstr(log, cases[i].expected), "%s: \"%s\" does not say \"%s\"", cases[i].name, log,
                           cases[i].expected);
    }
    char *log = NULL;
    cr_assert_eq(run_lending("missing", "/nonexistent/policy.json", &log), 2, "%s", log);
    cr_assert_not_null(strstr(log, "/nonexistent/policy.json"), "%s", log);
}
