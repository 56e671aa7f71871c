/* test_fines.c - fines and accounts over gRPC against real nats-server, catalog and lending
 * processes, with loans of seconds and fines by the second: accrual by started interval up to
 * the cap, the return fixing the amount, the FINES_OWED block on borrowing, renewals and holds
 * and its lifting by payment or waiver, bad payments, idempotent requests, payments racing
 * returns and accrual, a kill -9 of lending in the middle of accrual, and mypage following it
 * all (a watch shown a payment at once). The account's events are read back from the stream:
 * at rest they add up to the balance. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "events.h"
#include "library/lending/v1/lending.pb-c.h"
#include "library/mypage/v1/mypage.pb-c.h"
#include "stack_fixture.h"
#include "text.h"
#include "timestamp.h"

typedef Library__Lending__V1__Loan Loan;
typedef Library__Lending__V1__Account Account;
typedef Library__Lending__V1__Fine Fine;

#define LENDING "/library.lending.v1.LendingService/"
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define ACCRUING LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_ACCRUING
#define OWED LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_OWED
#define PAID LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_PAID
#define WAIVED LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_WAIVED

TestSuite(fines, .init = fixture_setup, .fini = fixture_teardown, .timeout = 150);

/* --- calls ---------------------------------------------------------------------------------- */

/* Bearers signed with the key of the test's own stack. */
static const char *admin_of(test_stack *s) {
    return harness_bearer(mem, s->dir, "librarian", true);
}

static const char *user_of(test_stack *s, const char *user) {
    return harness_bearer(mem, s->dir, user, false);
}


static status_code call(test_stack *s, const char *method, const ProtobufCMessage *request,
                        const ProtobufCMessageDescriptor *type, const char *bearer, ProtobufCMessage **out,
                        status *st) {
    return harness_call(s->lending_client, arena_sprintf(mem, LENDING "%s", method), request, type, mem, bearer,
                        out, st);
}

static status_code try_borrow(test_stack *s, const char *bearer, const char *book_id, status *st) {
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    return call(s, "BorrowBook", &request.base, &library__lending__v1__loan__descriptor, bearer, &response, st);
}

static status_code get_account(test_stack *s, const char *bearer, const char *user_id, Account **out, status *st) {
    Library__Lending__V1__GetAccountRequest request = LIBRARY__LENDING__V1__GET_ACCOUNT_REQUEST__INIT;
    request.user_id = (char *)(user_id ? user_id : "");
    ProtobufCMessage *response = NULL;
    status_code code = call(s, "GetAccount", &request.base, &library__lending__v1__account__descriptor, bearer,
                            &response, st);
    *out = (Account *)response;
    return code;
}

static Account *account(test_stack *s, const char *user) {
    Account *a = NULL;
    status st;
    cr_assert_eq(get_account(s, admin_of(s), user, &a, &st), STATUS_OK, "GetAccount: %s", st.message);
    cr_assert_geq(a->balance, 0, "a balance below zero: %lld", (long long)a->balance);
    return a;
}

static status_code pay(test_stack *s, const char *user, int64_t amount, const char *request_id, Account **out,
                       status *st) {
    Library__Lending__V1__PayFinesRequest request = LIBRARY__LENDING__V1__PAY_FINES_REQUEST__INIT;
    request.user_id = (char *)user;
    request.amount = amount;
    request.request_id = (char *)(request_id ? request_id : "");
    ProtobufCMessage *response = NULL;
    status_code code = call(s, "PayFines", &request.base, &library__lending__v1__account__descriptor, admin_of(s),
                            &response, st);
    if (out)
        *out = (Account *)response;
    return code;
}

static status_code waive(test_stack *s, const char *loan_id, const char *reason, Account **out, status *st) {
    Library__Lending__V1__WaiveFineRequest request = LIBRARY__LENDING__V1__WAIVE_FINE_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    request.reason = (char *)reason;
    ProtobufCMessage *response = NULL;
    status_code code = call(s, "WaiveFine", &request.base, &library__lending__v1__account__descriptor, admin_of(s),
                            &response, st);
    if (out)
        *out = (Account *)response;
    return code;
}

static const Fine *fine_of(const Account *a, const char *loan_id) {
    for (size_t i = 0; i < a->n_fines; i++)
        if (strcmp(a->fines[i]->loan_id, loan_id) == 0)
            return a->fines[i];
    return NULL;
}

static void expect_refused(status_code code, const status *st, status_code expected, const char *reason) {
    cr_assert_eq(code, expected, "expected %s %s, got %s: %s", status_code_name(expected), reason,
                 status_code_name(code), st->message);
    cr_assert_str_eq(st->reason, reason, "reason %s: %s", st->reason, st->message);
}

/* The fine terms' accrual by hand: started intervals of one second past due, capped. */
static int64_t accrued(int64_t due_seconds, int64_t at_seconds, int64_t per, int64_t max) {
    if (at_seconds <= due_seconds)
        return 0;
    int64_t amount = (at_seconds - due_seconds) * per;
    return amount < max ? amount : max;
}

static const char *unique(const char *prefix) {
    char id[13];
    text_random_hex(id, 6);
    return arena_sprintf(mem, "%s-%s", prefix, id);
}

/* --- the account's events, read back from the stream ---------------------------------------- */

typedef struct ledger {
    const char *user;
    /* per loan: the newest FineAssessed (by account version) */
    char loans[16][32];
    int64_t assessed[16];
    uint64_t assessed_version[16];
    bool fixed[16];
    int64_t versions_seen[16]; /* FineAssessed events of each loan */
    bool growing[16];          /* each loan's amounts never went down with the version */
    size_t loan_count;
    int64_t paid, waived;
    int payments, waivers;
    char ids[512][EVENT_ID_MAX];
    size_t id_count;
    bool duplicate_id;
} ledger;

static size_t ledger_loan(ledger *l, const char *loan_id) {
    for (size_t i = 0; i < l->loan_count; i++)
        if (strcmp(l->loans[i], loan_id) == 0)
            return i;
    cr_assert_lt(l->loan_count, 16);
    snprintf(l->loans[l->loan_count], sizeof l->loans[0], "%s", loan_id);
    l->growing[l->loan_count] = true;
    return l->loan_count++;
}

static status_code ledger_add(void *arg, const event *e, uint64_t sequence, status *st) {
    (void)sequence;
    (void)st;
    ledger *l = arg;
    const char *user = e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED ? e->fine_assessed->user_id
                       : e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID  ? e->fine_paid->user_id
                       : e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_WAIVED ? e->fine_waived->user_id
                                                                                      : NULL;
    if (user == NULL || strcmp(user, l->user) != 0)
        return STATUS_OK;
    for (size_t i = 0; i < l->id_count; i++)
        if (strcmp(l->ids[i], e->event_id) == 0)
            l->duplicate_id = true;
    if (l->id_count < 512)
        snprintf(l->ids[l->id_count++], EVENT_ID_MAX, "%s", e->event_id);
    if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED) {
        const Library__Events__V1__FineAssessed *f = e->fine_assessed;
        size_t i = ledger_loan(l, f->loan_id);
        uint64_t version = f->account ? f->account->version : 0;
        if (l->versions_seen[i] > 0 && version > l->assessed_version[i] && f->amount < l->assessed[i])
            l->growing[i] = false;
        if (l->versions_seen[i] == 0 || version > l->assessed_version[i]) {
            l->assessed[i] = f->amount;
            l->assessed_version[i] = version;
            l->fixed[i] = f->fixed;
        }
        l->versions_seen[i]++;
    } else if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID) {
        l->paid += e->fine_paid->amount;
        l->payments++;
    } else {
        l->waived += e->fine_waived->amount;
        l->waivers++;
    }
    return STATUS_OK;
}

static int64_t ledger_balance(const ledger *l) {
    int64_t sum = 0;
    for (size_t i = 0; i < l->loan_count; i++)
        sum += l->assessed[i];
    return sum - l->paid - l->waived;
}

static ledger *read_ledger(test_stack *s, const char *user) {
    nats_connection_options options = harness_nats_options(s->nats.url, "fines-test");
    options.connect_timeout_ms = 5000;
    nats_connection *connection = NULL;
    status st;
    cr_assert_eq(nats_connection_open(&options, &connection, &st), STATUS_OK, "%s", st.message);
    ledger *l = arena_alloc(mem, sizeof *l);
    memset(l, 0, sizeof *l);
    l->user = user;
    cr_assert_eq(events_replay(connection, EVENTS_LOAN_SUBJECTS, ledger_add, l, NULL, &st), STATUS_OK, "%s",
                 st.message);
    nats_connection_close(connection);
    return l;
}

/* Reads the stream until its events add up to the account's balance (an event left in the
 * outbox by a failed publish is published by the reconciler), and returns the ledger. */
static ledger *ledger_at_rest(test_stack *s, const char *user, int64_t balance) {
    int64_t deadline = harness_now_ms() + 10000;
    for (;;) {
        ledger *l = read_ledger(s, user);
        if (ledger_balance(l) == balance || harness_now_ms() > deadline)
            return l;
        harness_sleep_ms(300);
    }
}

/* --- the tests ---------------------------------------------------------------------------------- */

#define PER 10
#define CAP 40

Test(fines, a_late_loan_accrues_by_started_interval_up_to_the_cap_and_the_return_fixes_it) {
    const char *env[] = {"LOAN_PERIOD=2s", "FINE_INTERVAL=1s", "FINE_PER_INTERVAL=10", "FINE_MAX_PER_LOAN=40",
                         "FINE_BLOCK_AT=1000", "RECONCILE_INTERVAL=300ms", "RECONCILE_AFTER=1s", NULL};
    test_stack s;
    test_stack_start(&s, "accrual", env, false, NULL);
    const char *user = unique("late");
    const char *bearer = user_of(&s, user);
    Loan *first = test_stack_borrow_as(&s, bearer, test_stack_register(&s, "Returned Late", 1)->book_id);
    Loan *second = test_stack_borrow_as(&s, bearer, test_stack_register(&s, "Kept Out", 1)->book_id);
    Account *a = NULL;
    status st;
    cr_assert_eq(get_account(&s, bearer, NULL, &a, &st), STATUS_OK, "the reader's own account: %s", st.message);
    cr_assert_eq(a->balance, 0);
    cr_assert_eq(a->n_fines, 0);
    cr_assert_eq(a->block_at, 1000);

    /* late by 1.5 s: every GetAccount answers the fine at its own time */
    int64_t due = first->due_time->seconds;
    while (timestamp_now_ms() < due * 1000 + 1500)
        harness_sleep_ms(50);
    int64_t before = timestamp_now_ms() / 1000;
    a = account(&s, user);
    int64_t after = timestamp_now_ms() / 1000;
    const Fine *f = fine_of(a, first->loan_id);
    cr_assert_not_null(f, "a late loan has no fine in the account");
    cr_assert_eq(f->state, ACCRUING);
    cr_assert(f->amount >= accrued(due, before, PER, CAP) && f->amount <= accrued(due, after, PER, CAP),
              "1.5 s late: fine %lld, expected %lld..%lld", (long long)f->amount,
              (long long)accrued(due, before, PER, CAP), (long long)accrued(due, after, PER, CAP));
    cr_assert_eq(a->balance, f->amount + fine_of(a, second->loan_id)->amount, "the balance is the sum of the fines");

    /* the return fixes the first at what it accrued by the return time */
    Loan *back = test_stack_return_as(&s, bearer, first->loan_id);
    int64_t fixed = accrued(due, back->return_time->seconds, PER, CAP);
    cr_assert_gt(fixed, 0);
    a = account(&s, user);
    f = fine_of(a, first->loan_id);
    cr_assert_eq(f->state, OWED);
    cr_assert_eq(f->amount, fixed, "fixed at %lld, expected %lld", (long long)f->amount, (long long)fixed);
    cr_assert_not_null(f->return_time);

    /* the second goes on to the cap, and stays there */
    int64_t deadline = harness_now_ms() + 10000;
    while ((f = fine_of(account(&s, user), second->loan_id))->amount < CAP) {
        cr_assert_lt(harness_now_ms(), deadline, "the fine did not reach the cap: %lld", (long long)f->amount);
        harness_sleep_ms(200);
    }
    harness_sleep_ms(1500);
    a = account(&s, user);
    cr_assert_eq(fine_of(a, second->loan_id)->amount, CAP, "past the cap");
    cr_assert_eq(fine_of(a, first->loan_id)->amount, fixed, "a fixed fine moved");
    test_stack_return_as(&s, bearer, second->loan_id);
    a = account(&s, user);
    cr_assert_eq(fine_of(a, second->loan_id)->state, OWED);
    cr_assert_eq(a->balance, fixed + CAP);

    /* the stream: the sweeper announced the second's growth step by step, the returns fixed
     * both, and the events add up to the balance */
    ledger *l = ledger_at_rest(&s, user, a->balance);
    cr_assert_eq(ledger_balance(l), a->balance, "the events add up to %lld, the balance is %lld",
                 (long long)ledger_balance(l), (long long)a->balance);
    cr_assert_not(l->duplicate_id);
    for (size_t i = 0; i < l->loan_count; i++) {
        cr_assert(l->fixed[i], "the newest FineAssessed of %s is not the fixed one", l->loans[i]);
        cr_assert(l->growing[i], "the FineAssessed amounts of %s went down", l->loans[i]);
    }
    size_t second_index = ledger_loan(l, second->loan_id);
    cr_assert_geq(l->versions_seen[second_index], 2, "the sweeper announced no growth of the fine (%lld events)",
                  (long long)l->versions_seen[second_index]);
    test_stack_stop(&s);
}

Test(fines, fines_block_borrowing_renewals_and_holds_until_paid_or_waived) {
    const char *env[] = {"LOAN_PERIOD=2s", "FINE_INTERVAL=1s", "FINE_PER_INTERVAL=10", "FINE_MAX_PER_LOAN=30",
                         "FINE_BLOCK_AT=50", "RECONCILE_INTERVAL=300ms", "RECONCILE_AFTER=1s", NULL};
    test_stack s;
    test_stack_start(&s, "block", env, false, NULL);
    const char *user = unique("owes");
    const char *bearer = user_of(&s, user);
    Book *wanted = test_stack_register(&s, "Wanted Next", 3);
    Loan *first = test_stack_borrow_as(&s, bearer, test_stack_register(&s, "Late One", 1)->book_id);
    Loan *second = test_stack_borrow_as(&s, bearer, test_stack_register(&s, "Late Two", 1)->book_id);
    while (timestamp_now_ms() < (second->due_time->seconds + 4) * 1000) /* both at the cap of 30 */
        harness_sleep_ms(100);
    status st;
    ProtobufCMessage *response = NULL;
    Library__Lending__V1__RenewLoanRequest renew = LIBRARY__LENDING__V1__RENEW_LOAN_REQUEST__INIT;
    renew.loan_id = second->loan_id;
    expect_refused(call(&s, "RenewLoan", &renew.base, &library__lending__v1__loan__descriptor, bearer, &response, &st),
                   &st, STATUS_FAILED_PRECONDITION, "FINES_OWED");
    cr_assert(strstr(st.message, "owe 60") != NULL, "the refusal says what is owed: %s", st.message);
    test_stack_return_as(&s, bearer, first->loan_id);
    test_stack_return_as(&s, bearer, second->loan_id);
    cr_assert_eq(account(&s, user)->balance, 60);
    expect_refused(try_borrow(&s, bearer, wanted->book_id, &st), &st, STATUS_FAILED_PRECONDITION, "FINES_OWED");
    Library__Lending__V1__PlaceHoldRequest place = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
    place.book_id = wanted->book_id;
    expect_refused(call(&s, "PlaceHold", &place.base, &library__lending__v1__hold__descriptor, bearer, &response, &st),
                   &st, STATUS_FAILED_PRECONDITION, "FINES_OWED");

    /* whose account: the reader's own, or anyone's for an administrator */
    Account *a = NULL;
    cr_assert_eq(get_account(&s, user_of(&s, unique("nosy")), user, &a, &st), STATUS_PERMISSION_DENIED);
    cr_assert_eq(pay(&s, user, 0, NULL, NULL, &st), STATUS_INVALID_ARGUMENT, "a payment of 0: %s", st.message);
    cr_assert_eq(pay(&s, user, -5, NULL, NULL, &st), STATUS_INVALID_ARGUMENT, "a payment of -5: %s", st.message);
    expect_refused(pay(&s, user, 61, NULL, NULL, &st), &st, STATUS_FAILED_PRECONDITION, "OVERPAYMENT");

    /* a payment, retried: taken once */
    cr_assert_eq(pay(&s, user, 5, "desk-1", &a, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(a->balance, 55);
    cr_assert_eq(pay(&s, user, 5, "desk-1", &a, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(a->balance, 55, "a retried payment was taken twice");
    expect_refused(pay(&s, user, 7, "desk-1", NULL, &st), &st, STATUS_INVALID_ARGUMENT, "REQUEST_ID_REUSED");
    expect_refused(try_borrow(&s, bearer, wanted->book_id, &st), &st, STATUS_FAILED_PRECONDITION, "FINES_OWED");

    /* 45 owed: under the line; the oldest fine was paid first */
    cr_assert_eq(pay(&s, user, 10, "desk-2", &a, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(a->balance, 45);
    cr_assert_eq(fine_of(a, first->loan_id)->paid, 15);
    cr_assert_eq(fine_of(a, second->loan_id)->paid, 0);
    Loan *third = test_stack_borrow_as(&s, bearer, wanted->book_id);

    /* the librarian waives the second; a waived fine is not waived again, a loan without a
     * fine has none to waive, an unknown loan is not found */
    cr_assert_eq(waive(&s, second->loan_id, "the return slot was jammed", &a, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(a->balance, 15);
    cr_assert_eq(fine_of(a, second->loan_id)->state, WAIVED);
    cr_assert_eq(fine_of(a, second->loan_id)->waived, 30);
    expect_refused(waive(&s, second->loan_id, "again", NULL, &st), &st, STATUS_FAILED_PRECONDITION, "FINE_NOT_OWED");
    expect_refused(waive(&s, third->loan_id, "nothing", NULL, &st), &st, STATUS_FAILED_PRECONDITION, "NO_FINE");
    cr_assert_eq(waive(&s, "00000000000000000000", "nobody", NULL, &st), STATUS_NOT_FOUND, "%s", st.message);

    cr_assert_eq(pay(&s, user, 15, "desk-3", &a, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(a->balance, 0);
    cr_assert_eq(fine_of(a, first->loan_id)->state, PAID);
    test_stack_return_as(&s, bearer, third->loan_id);

    ledger *l = ledger_at_rest(&s, user, 0);
    cr_assert_eq(ledger_balance(l), 0, "the events add up to %lld", (long long)ledger_balance(l));
    cr_assert_eq(l->payments, 3, "payments announced: %d (a retried one counted twice?)", l->payments);
    cr_assert_eq(l->paid, 30);
    cr_assert_eq(l->waivers, 1);
    cr_assert_eq(l->waived, 30);
    test_stack_stop(&s);
}

/* --- payments racing returns and accrual ------------------------------------------------------- */

typedef struct payer {
    test_stack *s;
    const char *user;
    const char *admin;
    int index;
    atomic_bool *stop;
    int64_t paid;
    int ok, refused, negative;
    char failure[256];
} payer;

static void *pay_loop(void *arg) {
    payer *p = arg;
    arena *a = arena_create(0);
    const char *admin = p->admin;
    for (int round = 0; !atomic_load(p->stop) && p->failure[0] == '\0'; round++) {
        Library__Lending__V1__PayFinesRequest request = LIBRARY__LENDING__V1__PAY_FINES_REQUEST__INIT;
        request.user_id = (char *)p->user;
        request.amount = 1 + (round * 7 + p->index * 3) % 13;
        char request_id[64];
        snprintf(request_id, sizeof request_id, "payer-%d-%d", p->index, round);
        request.request_id = request_id;
        ProtobufCMessage *response = NULL;
        status st;
        status_code code = harness_call(p->s->lending_client, LENDING "PayFines", &request.base,
                                        &library__lending__v1__account__descriptor, a, admin, &response, &st);
        if (code == STATUS_OK) {
            p->ok++;
            p->paid += request.amount;
            if (((Account *)response)->balance < 0)
                p->negative++;
        } else if (code == STATUS_FAILED_PRECONDITION && strcmp(st.reason, "OVERPAYMENT") == 0) {
            p->refused++;
        } else {
            snprintf(p->failure, sizeof p->failure, "PayFines: %s %.200s", status_code_name(code), st.message);
        }
        arena_reset(a);
        harness_sleep_ms(20);
    }
    arena_destroy(a);
    return NULL;
}

Test(fines, payments_racing_returns_and_accrual_keep_the_balance_equal_to_the_events) {
    const char *env[] = {"LOAN_PERIOD=1s", "FINE_INTERVAL=1s", "FINE_PER_INTERVAL=7", "FINE_MAX_PER_LOAN=1000",
                         "FINE_BLOCK_AT=0", "RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=1s", NULL};
    test_stack s;
    test_stack_start(&s, "race", env, false, NULL);
    const char *user = unique("racer");
    const char *bearer = user_of(&s, user);
    enum { LOANS = 4, PAYERS = 3 };
    Loan *loans[LOANS];
    for (int i = 0; i < LOANS; i++)
        loans[i] = test_stack_borrow_as(&s, bearer, test_stack_register(&s, arena_sprintf(mem, "Race %d", i), 1)->book_id);
    harness_sleep_ms(2500); /* every loan late */

    atomic_bool stop;
    atomic_init(&stop, false);
    payer payers[PAYERS];
    pthread_t threads[PAYERS];
    for (int i = 0; i < PAYERS; i++) {
        payers[i] = (payer){.s = &s, .user = user, .admin = admin_of(&s), .index = i, .stop = &stop};
        pthread_create(&threads[i], NULL, pay_loop, &payers[i]);
    }
    for (int i = 0; i < LOANS; i++) { /* returns, while the payers pay and the sweeper assesses */
        harness_sleep_ms(700);
        test_stack_return_as(&s, bearer, loans[i]->loan_id);
    }
    harness_sleep_ms(700);
    atomic_store(&stop, true);
    int64_t paid = 0;
    int ok = 0, refused = 0;
    for (int i = 0; i < PAYERS; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_str_empty(payers[i].failure, "%s", payers[i].failure);
        cr_assert_eq(payers[i].negative, 0, "a payment answered a negative balance");
        paid += payers[i].paid;
        ok += payers[i].ok;
        refused += payers[i].refused;
    }
    cr_assert_gt(ok, 10, "the payers barely paid (%d payments)", ok);

    Account *a = account(&s, user);
    int64_t fixed = 0;
    for (int i = 0; i < LOANS; i++) {
        const Fine *f = fine_of(a, loans[i]->loan_id);
        cr_assert_not_null(f, "loan %d has no fine", i);
        cr_assert_neq(f->state, ACCRUING, "a returned loan's fine still accrues");
        if (f->state == PAID)
            cr_assert_eq(f->amount, f->paid, "a PAID fine of %lld was paid %lld", (long long)f->amount,
                         (long long)f->paid);
        fixed += f->amount;
    }
    cr_assert_eq(a->balance, fixed - paid, "balance %lld, fixed %lld, paid %lld", (long long)a->balance,
                 (long long)fixed, (long long)paid);
    ledger *l = ledger_at_rest(&s, user, a->balance);
    cr_log_info("%d payments (%lld) and %d refused as overpayments; fines fixed at %lld; balance %lld",
                ok, (long long)paid, refused, (long long)fixed, (long long)a->balance);
    cr_assert_eq(l->payments, ok, "%d payments announced, %d taken", l->payments, ok);
    cr_assert_eq(l->paid, paid);
    cr_assert_eq(ledger_balance(l), a->balance, "the events add up to %lld, the balance is %lld",
                 (long long)ledger_balance(l), (long long)a->balance);
    cr_assert_not(l->duplicate_id);
    test_stack_stop(&s);
}

Test(fines, a_kill_9_of_lending_in_the_middle_of_accrual_loses_and_doubles_nothing) {
    const char *env[] = {"LOAN_PERIOD=1s", "FINE_INTERVAL=1s", "FINE_PER_INTERVAL=10", "FINE_MAX_PER_LOAN=1000",
                         "FINE_BLOCK_AT=0", "RECONCILE_INTERVAL=200ms", "RECONCILE_AFTER=1s", NULL};
    test_stack s;
    test_stack_start(&s, "restart", env, false, NULL);
    const char *user = unique("restart");
    const char *bearer = user_of(&s, user);
    Loan *loan = test_stack_borrow_as(&s, bearer, test_stack_register(&s, "Accruing Through A Crash", 1)->book_id);
    int64_t due = loan->due_time->seconds;
    while (timestamp_now_ms() < (due + 2) * 1000 + 500) /* two steps assessed */
        harness_sleep_ms(50);
    status st;
    status_code code = pay(&s, user, 5, "before-crash", NULL, &st);
    cr_assert_eq(code, STATUS_OK, "%s", st.message);

    int port = s.lending.port;
    cr_assert_eq(harness_process_stop(&s.lending, SIGKILL, 5000), 128 + SIGKILL);
    harness_sleep_ms(2000); /* two intervals pass with nobody assessing */
    char port_env[32];
    snprintf(port_env, sizeof port_env, "GRPC_PORT=%d", port);
    const char *restart_env[] = {"LOAN_PERIOD=1s", "FINE_INTERVAL=1s", "FINE_PER_INTERVAL=10",
                                 "FINE_MAX_PER_LOAN=1000", "FINE_BLOCK_AT=0", "RECONCILE_INTERVAL=200ms",
                                 "RECONCILE_AFTER=1s", port_env, NULL};
    cr_assert(fixture_start_lending(s.dir, s.nats.url, s.catalog.address, restart_env, &s.lending),
              "lending did not restart");
    wait_serving(s.lending_client, "lending", 10000);

    /* the payment before the crash, retried after it: taken once */
    Account *a = NULL;
    cr_assert_eq(pay(&s, user, 5, "before-crash", &a, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(fine_of(a, loan->loan_id)->paid, 5, "a payment retried across the crash was taken twice");
    harness_sleep_ms(1200); /* the restarted sweeper assesses the steps it missed */
    Loan *back = test_stack_return_as(&s, bearer, loan->loan_id);
    int64_t fixed = accrued(due, back->return_time->seconds, 10, 1000);
    a = account(&s, user);
    cr_assert_eq(fine_of(a, loan->loan_id)->amount, fixed, "fixed at %lld, expected %lld",
                 (long long)fine_of(a, loan->loan_id)->amount, (long long)fixed);
    cr_assert_eq(a->balance, fixed - 5);
    ledger *l = ledger_at_rest(&s, user, a->balance);
    cr_assert_eq(ledger_balance(l), a->balance, "the events add up to %lld, the balance is %lld",
                 (long long)ledger_balance(l), (long long)a->balance);
    cr_assert_eq(l->payments, 1);
    cr_assert_not(l->duplicate_id);
    size_t i = ledger_loan(l, loan->loan_id);
    cr_assert(l->growing[i], "the FineAssessed amounts went down");
    cr_assert(l->fixed[i]);
    test_stack_stop(&s);
}

/* --- mypage follows the account ---------------------------------------------------------------- */

typedef Library__Mypage__V1__Mypage Mypage;

static status_code next_page(rpc_client_stream *stream, int64_t wait_ms, Mypage **out, status *st) {
    ProtobufCMessage *message = NULL;
    status_code code = rpc_client_stream_next(stream, &library__mypage__v1__mypage__descriptor, mem, wait_ms,
                                              &message, st);
    *out = (Mypage *)message;
    return code;
}

/* Reads pushed pages until one shows balance with its first fine in state (asserts it comes
 * within wait_ms). */
static Mypage *page_with(rpc_client_stream *stream, int64_t balance, Library__Lending__V1__FineState state,
                         int64_t wait_ms) {
    int64_t deadline = harness_now_ms() + wait_ms;
    for (;;) {
        int64_t left = deadline - harness_now_ms();
        cr_assert_gt(left, 0, "no page with balance %lld was pushed within %lld ms", (long long)balance,
                     (long long)wait_ms);
        Mypage *page = NULL;
        status st;
        cr_assert_eq(next_page(stream, left, &page, &st), STATUS_OK, "WatchMypage: %s", st.message);
        cr_assert_not_null(page, "the watch ended");
        if (page->balance == balance && page->n_fines > 0 && page->fines[0]->state == state)
            return page;
    }
}

Test(fines, a_late_return_shows_on_mypage_and_a_payment_is_pushed_to_a_watch) {
    const char *env[] = {"LOAN_PERIOD=1s", "FINE_INTERVAL=1s", "FINE_PER_INTERVAL=10", "FINE_MAX_PER_LOAN=1000",
                         "FINE_BLOCK_AT=0", "RECONCILE_INTERVAL=300ms", "RECONCILE_AFTER=1s", NULL};
    test_stack s;
    test_stack_start(&s, "mypage", env, true, NULL);
    const char *user = unique("page");
    const char *bearer = user_of(&s, user);
    Loan *loan = test_stack_borrow_as(&s, bearer, test_stack_register(&s, "Shown Late", 1)->book_id);
    Library__Mypage__V1__WatchMypageRequest request = LIBRARY__MYPAGE__V1__WATCH_MYPAGE_REQUEST__INIT;
    rpc_call_options options = {.timeout_ms = 60000, .authorization = bearer};
    rpc_client_stream *stream = NULL;
    status st;
    cr_assert_eq(rpc_client_stream_open(s.mypage_client, "/library.mypage.v1.MypageService/WatchMypage",
                                        &request.base, &options, &stream, &st),
                 STATUS_OK, "WatchMypage: %s", st.message);
    while (timestamp_now_ms() < (loan->due_time->seconds + 2) * 1000 + 300)
        harness_sleep_ms(50);

    /* the sweeper's assessments reach the page while the loan is out; the return fixes it */
    Loan *back = test_stack_return_as(&s, bearer, loan->loan_id);
    int64_t fixed = accrued(loan->due_time->seconds, back->return_time->seconds, 10, 1000);
    Mypage *page = page_with(stream, fixed, OWED, harness_latency_bound_ms(3000));
    cr_assert_eq(page->n_fines, 1);
    cr_assert_eq(page->fines[0]->amount, fixed);
    bool found = false;
    for (size_t i = 0; i < page->n_loans; i++)
        if (strcmp(page->loans[i]->loan_id, loan->loan_id) == 0) {
            found = true;
            cr_assert_eq(page->loans[i]->fine, fixed, "the loan's fine on the page: %lld",
                         (long long)page->loans[i]->fine);
        }
    cr_assert(found, "the returned loan is not on the page");

    /* the librarian takes the payment: the watch shows it at once */
    int64_t paid_at = harness_now_ms();
    cr_assert_eq(pay(&s, user, fixed, "desk", NULL, &st), STATUS_OK, "%s", st.message);
    page = page_with(stream, 0, PAID, harness_latency_bound_ms(1000));
    cr_log_info("the payment reached the watch %lld ms after PayFines was called",
                (long long)(harness_now_ms() - paid_at));
    rpc_client_stream_close(stream);
    test_stack_stop(&s);
}
