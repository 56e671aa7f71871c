/* test_fines.c - the account rules over the user record (fines.h): what a late loan accrues,
 * the balance, assessing, fixing at the return, carrying over a renewal, payments and waivers
 * with their replays, the API's view, the block, the reconciler's next visit and the outbox. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fines.h"
#include "library/events/v1/events.pb-c.h"
#include "user_record.h"

#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define PENDING LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING
#define ACCRUING LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_ACCRUING
#define OWED LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_OWED
#define PAID LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_PAID
#define WAIVED LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_WAIVED

enum { KIND_ASSESSED = 28, KIND_PAID = 29, KIND_WAIVED = 30 };
enum { DAY = 86400, DUE = 1700000000, PER = 25, MAX = 1000 };

static arena *a;
static void setup(void) {
    a = arena_create(0);
}
static void teardown(void) {
    arena_destroy(a);
}
TestSuite(fines, .init = setup, .fini = teardown);

static int64_t ms(int64_t seconds) {
    return seconds * 1000;
}

static fine_terms *terms_of(int64_t per, int64_t interval, int64_t max) {
    fine_terms *terms = (void *)arena_new_message(a, &library__lending__internal__fine_terms__descriptor);
    cr_assert_not_null(terms);
    terms->per_interval = per;
    terms->interval_seconds = interval;
    terms->max_per_loan = max;
    return terms;
}

/* The library's default rule: 25 for each started day, at most 1000. */
static fine_terms *daily(void) {
    return terms_of(PER, DAY, MAX);
}

static user_record *empty_record(void) {
    user_record *record = (void *)arena_new_message(a, &library__lending__internal__user_record__descriptor);
    cr_assert_not_null(record);
    return record;
}

/* Appends an open loan of the record (the borrow's slot) due at due_seconds. */
static user_open_loan *lend(user_record *record, const char *loan_id, int loan_status, int64_t due_seconds,
                                 fine_terms *terms) {
    user_open_loan *open = (void *)arena_new_message(a, &library__lending__internal__open_loan__descriptor);
    user_open_loan **loans = arena_alloc(a, (record->n_open_loans + 1) * sizeof *loans);
    cr_assert(open && loans);
    if (record->n_open_loans)
        memcpy(loans, record->open_loans, record->n_open_loans * sizeof *loans);
    open->loan_id = arena_strdup(a, loan_id);
    open->status = loan_status;
    open->due_time = due_seconds;
    open->book_id = "book-1";
    open->book_title = "Dune";
    open->fine_terms = terms;
    loans[record->n_open_loans++] = open;
    record->open_loans = loans;
    return open;
}

static fine_entry *fine_of(const user_record *record, const char *loan_id) {
    for (size_t i = 0; i < record->n_fines; i++)
        if (strcmp(record->fines[i]->loan_id, loan_id) == 0)
            return record->fines[i];
    return NULL;
}

static size_t events_of_kind(const user_record *record, int kind) {
    size_t count = 0;
    for (size_t i = 0; i < record->n_account_outbox; i++)
        count += record->account_outbox[i]->kind == kind;
    return count;
}

static const account_event *last_event(const user_record *record) {
    cr_assert_gt(record->n_account_outbox, 0);
    return record->account_outbox[record->n_account_outbox - 1];
}

static void assess(user_record *record, int64_t now_seconds, bool expect_changed) {
    bool changed = !expect_changed;
    status st;
    cr_assert_eq(account_assess(a, record, ms(now_seconds), &changed, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(changed, expect_changed, "assess at %lld", (long long)now_seconds);
}

static void fix(user_record *record, const char *loan_id, int64_t return_seconds, int64_t now_seconds,
                bool expect_changed) {
    bool changed = !expect_changed;
    status st;
    cr_assert_eq(account_fix(a, record, loan_id, return_seconds, ms(now_seconds), &changed, &st), STATUS_OK, "%s",
                 st.message);
    cr_assert_eq(changed, expect_changed, "fix of %s", loan_id);
}

static char *key_of(const char *method, const char *request_id) {
    char *key = arena_alloc(a, ACCOUNT_REQUEST_KEY_LENGTH + 1);
    cr_assert_not_null(key);
    account_request_key(method, request_id, key);
    return key;
}

static status_code pay(user_record *record, int64_t amount, const char *request_id, int64_t now_seconds,
                       bool *replay, status *st) {
    return account_pay(a, record, amount, key_of("PayFines", request_id), ms(now_seconds), replay, st);
}

static status_code waive(user_record *record, const char *loan_id, const char *request_id, int64_t now_seconds,
                         bool *replay, status *st) {
    return account_waive(a, record, loan_id, "lost in the flood", key_of("WaiveFine", request_id),
                         ms(now_seconds), replay, st);
}

/* --- fine_accrued ---------------------------------------------------------------------- */

Test(fines, nothing_accrues_before_or_at_the_due_time) {
    fine_terms *terms = daily();
    cr_assert_eq(fine_accrued(terms, DUE, DUE - DAY), 0);
    cr_assert_eq(fine_accrued(terms, DUE, DUE - 1), 0);
    cr_assert_eq(fine_accrued(terms, DUE, DUE), 0, "exactly at the due time is in time");
}

Test(fines, each_started_interval_counts) {
    fine_terms *terms = daily();
    cr_assert_eq(fine_accrued(terms, DUE, DUE + 1), PER, "one second late starts the first interval");
    cr_assert_eq(fine_accrued(terms, DUE, DUE + DAY - 1), PER);
    cr_assert_eq(fine_accrued(terms, DUE, DUE + DAY), PER, "the first interval ends at due + interval");
    cr_assert_eq(fine_accrued(terms, DUE, DUE + DAY + 1), 2 * PER, "one second more starts the second");
    cr_assert_eq(fine_accrued(terms, DUE, DUE + 2 * DAY), 2 * PER);
    cr_assert_eq(fine_accrued(terms, DUE, DUE + 2 * DAY + 1), 3 * PER);
}

Test(fines, the_cap_holds) {
    fine_terms *terms = daily();
    cr_assert_eq(fine_accrued(terms, DUE, DUE + 39 * DAY), 39 * PER);
    cr_assert_eq(fine_accrued(terms, DUE, DUE + 40 * DAY), MAX, "40 started days are exactly the cap");
    cr_assert_eq(fine_accrued(terms, DUE, DUE + 40 * DAY + 1), MAX);
    cr_assert_eq(fine_accrued(terms, DUE, DUE + 1000 * DAY), MAX);
    fine_terms *odd = terms_of(PER, DAY, 990);
    cr_assert_eq(fine_accrued(odd, DUE, DUE + 39 * DAY), 975);
    cr_assert_eq(fine_accrued(odd, DUE, DUE + 39 * DAY + 1), 990, "a step past the cap stops at the cap");
    fine_terms *small = terms_of(PER, DAY, 10);
    cr_assert_eq(fine_accrued(small, DUE, DUE + 1), 10, "a cap below one step");
}

Test(fines, no_terms_zero_or_negative_terms_accrue_nothing) {
    int64_t late = DUE + 10 * DAY;
    cr_assert_eq(fine_accrued(NULL, DUE, late), 0);
    cr_assert_eq(fine_accrued(terms_of(0, 0, 0), DUE, late), 0, "all zero: never fined");
    cr_assert_eq(fine_accrued(terms_of(0, DAY, MAX), DUE, late), 0);
    cr_assert_eq(fine_accrued(terms_of(PER, 0, MAX), DUE, late), 0);
    cr_assert_eq(fine_accrued(terms_of(PER, DAY, 0), DUE, late), 0);
    cr_assert_eq(fine_accrued(terms_of(-PER, DAY, MAX), DUE, late), 0);
    cr_assert_eq(fine_accrued(terms_of(PER, -DAY, MAX), DUE, late), 0);
    cr_assert_eq(fine_accrued(terms_of(PER, DAY, -MAX), DUE, late), 0);
    cr_assert_eq(fine_accrued(terms_of(INT64_MIN, INT64_MIN, INT64_MIN), DUE, late), 0);
    cr_assert_eq(fine_accrued(daily(), 0, late), 0, "no due time");
    cr_assert_eq(fine_accrued(daily(), -5, late), 0);
    cr_assert_eq(fine_accrued(daily(), INT64_MIN, INT64_MAX), 0);
}

Test(fines, huge_values_never_overflow) {
    cr_assert_eq(fine_accrued(daily(), 1, INT64_MAX), MAX);
    cr_assert_eq(fine_accrued(daily(), DUE, INT64_MAX), MAX);
    fine_terms *most = terms_of(INT64_MAX, 1, INT64_MAX);
    cr_assert_eq(fine_accrued(most, DUE, DUE + 1), INT64_MAX);
    cr_assert_eq(fine_accrued(most, DUE, DUE + 2), INT64_MAX);
    cr_assert_eq(fine_accrued(most, 1, INT64_MAX), INT64_MAX);
    fine_terms *by_second = terms_of(1, 1, INT64_MAX);
    cr_assert_eq(fine_accrued(by_second, 1, INT64_MAX), INT64_MAX - 1);
    cr_assert_eq(fine_accrued(terms_of(2, 1, INT64_MAX), 1, INT64_MAX), INT64_MAX);
    cr_assert_eq(fine_accrued(terms_of(3, 2, INT64_MAX), 1, INT64_MAX), INT64_MAX);
    fine_terms *long_interval = terms_of(PER, INT64_MAX, MAX);
    cr_assert_eq(fine_accrued(long_interval, 1, INT64_MAX), PER);
    cr_assert_eq(fine_accrued(long_interval, DUE, DUE + 1), PER);
    fine_terms *half = terms_of(INT64_MAX / 2 + 1, 1, INT64_MAX);
    cr_assert_eq(fine_accrued(half, DUE, DUE + 1), INT64_MAX / 2 + 1);
    cr_assert_eq(fine_accrued(half, DUE, DUE + 2), INT64_MAX, "two steps of more than half stop at the cap");

    /* an entry carried to the cap and accruing more */
    fine_entry fine = LIBRARY__LENDING__INTERNAL__FINE_ENTRY__INIT;
    fine.terms = most;
    fine.due_time = DUE;
    fine.carried = INT64_MAX;
    fine.amount = INT64_MAX;
    cr_assert_eq(fine_amount_at(&fine, INT64_MAX), INT64_MAX);
    cr_assert_eq(fine_owed_at(&fine, INT64_MAX), INT64_MAX);
    fine.carried = INT64_MAX - 1;
    fine.amount = INT64_MAX - 1;
    cr_assert_eq(fine_amount_at(&fine, DUE + 1), INT64_MAX);
}

/* --- the balance ----------------------------------------------------------------------- */

Test(fines, the_balance_counts_late_active_loans_before_any_assessment) {
    user_record *record = empty_record();
    cr_assert_eq(account_balance(record, DUE), 0, "an empty account");
    lend(record, "late", ACTIVE, DUE, daily());
    lend(record, "later", ACTIVE, DUE + DAY, daily());
    lend(record, "pending", PENDING, DUE - 10 * DAY, daily());
    lend(record, "unfined", ACTIVE, DUE - 10 * DAY, NULL);
    lend(record, "free", ACTIVE, DUE - 10 * DAY, terms_of(0, 0, 0));
    cr_assert_eq(account_balance(record, DUE), 0);
    cr_assert_eq(account_balance(record, DUE + 1), PER);
    cr_assert_eq(account_balance(record, DUE + DAY + 1), 2 * PER + PER);
    cr_assert_eq(account_balance(record, DUE + 100 * DAY), 2 * MAX, "each loan at its cap; PENDING never fined");
    cr_assert_eq(record->n_fines, 0, "reading writes nothing");
    cr_assert_eq(record->account_version, 0);
}

Test(fines, the_balance_of_many_capped_loans_does_not_overflow) {
    user_record *record = empty_record();
    fine_terms *most = terms_of(INT64_MAX, 1, INT64_MAX);
    lend(record, "a", ACTIVE, DUE, most);
    lend(record, "b", ACTIVE, DUE, most);
    lend(record, "c", ACTIVE, DUE, most);
    int64_t balance = account_balance(record, DUE + 10);
    cr_assert_eq(balance, INT64_MAX, "the balance stops at the largest amount, it does not wrap");
    assess(record, DUE + 10, true);
    cr_assert_eq(account_balance(record, DUE + 10), INT64_MAX);
    status st;
    cr_assert_eq(account_check_block(record, DUE + 10, MAX, &st), STATUS_FAILED_PRECONDITION);
}

/* --- assess ---------------------------------------------------------------------------- */

Test(fines, assess_creates_entries_and_announces_each_fine_that_grew) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    lend(record, "b", ACTIVE, DUE + 3 * DAY, daily());
    lend(record, "p", PENDING, DUE - DAY, daily());
    assess(record, DUE, false);
    cr_assert_eq(record->n_fines, 0, "nothing is late yet");
    cr_assert_eq(record->n_account_outbox, 0);

    assess(record, DUE + DAY + 1, true);
    cr_assert_eq(record->n_fines, 1);
    fine_entry *fa = fine_of(record, "a");
    cr_assert_not_null(fa);
    cr_assert_eq(fa->amount, 2 * PER);
    cr_assert_eq(fa->due_time, DUE);
    cr_assert_str_eq(fa->book_title, "Dune");
    cr_assert_str_eq(fa->book_id, "book-1");
    cr_assert_not(fa->fixed);
    cr_assert_eq(record->account_version, 1);
    cr_assert_eq(record->account_update_ms, ms(DUE + DAY + 1));
    const account_event *e = last_event(record);
    cr_assert_eq(e->kind, KIND_ASSESSED);
    cr_assert_str_eq(e->loan_id, "a");
    cr_assert_eq(e->amount, 2 * PER);
    cr_assert_eq(e->version, 1);
    cr_assert_not(e->fixed);
    cr_assert_eq(e->time_ms, ms(DUE + DAY + 1));

    assess(record, DUE + DAY + 1, false);
    cr_assert_eq(record->account_version, 1, "the same time again changes nothing");
    assess(record, DUE + 2 * DAY, false);
    cr_assert_eq(record->n_account_outbox, 1, "no step started since");

    assess(record, DUE + 4 * DAY, true);
    cr_assert_eq(record->n_fines, 2);
    cr_assert_eq(fine_of(record, "a")->amount, 4 * PER);
    cr_assert_eq(fine_of(record, "b")->amount, PER);
    cr_assert_null(fine_of(record, "p"), "a PENDING loan is never fined");
    cr_assert_eq(record->n_account_outbox, 3, "one FineAssessed for each fine that grew");
    cr_assert_eq(record->account_version, 3);
    for (size_t i = 0; i < record->n_account_outbox; i++)
        cr_assert_eq(record->account_outbox[i]->version, i + 1, "versions grow one by one");

    assess(record, DUE + 100 * DAY, true);
    assess(record, DUE + 200 * DAY, false);
    cr_assert_eq(fine_of(record, "a")->amount, MAX);
    cr_assert_eq(fine_of(record, "b")->amount, MAX);
    cr_assert_eq(events_of_kind(record, KIND_ASSESSED), 5);
}

Test(fines, assess_is_steady_through_an_interval) {
    user_record *record = empty_record();
    fine_terms *terms = terms_of(10, 60, 100);
    lend(record, "a", ACTIVE, DUE, terms);
    for (int64_t t = DUE - 5; t <= DUE + 20 * 60; t += 7)
        assess(record, t, fine_accrued(terms, DUE, t) != fine_accrued(terms, DUE, t - 7));
    cr_assert_eq(fine_of(record, "a")->amount, 100);
    cr_assert_eq(record->n_account_outbox, 10, "one event for each step up to the cap");
}

/* --- fix at the return ----------------------------------------------------------------- */

Test(fines, the_return_fixes_the_fine_at_the_return_time_not_later) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    assess(record, DUE + 5 * DAY, true);
    cr_assert_eq(fine_of(record, "a")->amount, 5 * PER);
    /* the sweep ran after the return was made but before it was written */
    fix(record, "a", DUE + DAY + 10, DUE + 5 * DAY + 60, true);
    fine_entry *fine = fine_of(record, "a");
    cr_assert(fine->fixed);
    cr_assert_eq(fine->amount, 2 * PER, "what it accrued by the return");
    cr_assert_eq(fine->return_time, DUE + DAY + 10);
    cr_assert_eq(fine_state(fine), OWED);
    const account_event *e = last_event(record);
    cr_assert_eq(e->kind, KIND_ASSESSED);
    cr_assert(e->fixed);
    cr_assert_eq(e->amount, 2 * PER);
    cr_assert_eq(e->version, record->account_version);
    uint64_t version = record->account_version;

    fix(record, "a", DUE + DAY + 10, DUE + 6 * DAY, false);
    fix(record, "a", DUE + 9 * DAY, DUE + 9 * DAY, false);
    cr_assert_eq(record->account_version, version, "a second fix changes nothing");
    cr_assert_eq(fine->amount, 2 * PER);
    assess(record, DUE + 50 * DAY, false);
    cr_assert_eq(account_balance(record, DUE + 50 * DAY), 2 * PER, "a fixed fine grows no more");
}

Test(fines, a_fix_without_an_assessment_makes_the_entry) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    fix(record, "a", DUE + 1, DUE + 1, true);
    cr_assert_eq(record->n_fines, 1);
    cr_assert_eq(fine_of(record, "a")->amount, PER);
    cr_assert(fine_of(record, "a")->fixed);
    cr_assert_eq(record->n_account_outbox, 1);
}

Test(fines, a_loan_returned_in_time_gets_no_fine) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    lend(record, "p", PENDING, DUE - DAY, daily());
    fix(record, "a", DUE, DUE + 3 * DAY, false);
    fix(record, "a", DUE - DAY, DUE - DAY, false);
    fix(record, "p", DUE, DUE, false);
    fix(record, "unknown", DUE + DAY, DUE + DAY, false);
    cr_assert_eq(record->n_fines, 0);
    cr_assert_eq(record->account_version, 0);
    cr_assert_eq(record->n_account_outbox, 0);
}

Test(fines, a_return_in_time_written_after_a_sweep_fixes_the_fine_at_zero) {
    /* returned one second before the due time; a sweep fined it before the return was written */
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    assess(record, DUE + 1, true);
    cr_assert_eq(account_balance(record, DUE + 1), PER);
    fix(record, "a", DUE - 1, DUE + 2, true);
    fine_entry *fine = fine_of(record, "a");
    cr_assert_eq(fine->amount, 0);
    cr_assert(last_event(record)->fixed);
    cr_assert_eq(last_event(record)->amount, 0, "the sweep's FineAssessed is corrected");
    cr_assert_eq(account_balance(record, DUE + 10 * DAY), 0);
}

Test(fines, a_fix_never_goes_below_what_was_paid_or_waived) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    bool replay;
    status st;
    cr_assert_eq(pay(record, 3 * PER, "p-1", DUE + 3 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    fix(record, "a", DUE + 1, DUE + 3 * DAY + 5, true);
    fine_entry *fine = fine_of(record, "a");
    cr_assert_eq(fine->amount, 3 * PER, "paid 75 before the late-written return: the fine stays 75");
    cr_assert_eq(fine->paid, 3 * PER);
    cr_assert_eq(fine_owed_at(fine, DUE + 10 * DAY), 0);
    cr_assert_eq(fine_state(fine), PAID);
    cr_assert_eq(account_balance(record, DUE + 10 * DAY), 0);
}

/* --- carry over a renewal -------------------------------------------------------------- */

Test(fines, a_late_renewal_keeps_what_it_accrued_and_runs_from_the_new_due_time) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    int64_t renewed = DUE + 2 * DAY + 1, new_due = renewed + 14 * DAY;
    bool changed = false;
    status st;
    cr_assert_eq(account_carry(a, record, "a", renewed, new_due, NULL, ms(renewed), &changed, &st), STATUS_OK);
    cr_assert(changed);
    fine_entry *fine = fine_of(record, "a");
    cr_assert_not_null(fine);
    cr_assert_eq(fine->carried, 3 * PER);
    cr_assert_eq(fine->amount, 3 * PER);
    cr_assert_eq(fine->due_time, new_due);
    cr_assert_eq(last_event(record)->kind, KIND_ASSESSED);
    cr_assert_eq(last_event(record)->amount, 3 * PER);
    cr_assert(user_record_extend_due(record, "a", new_due, NULL));
    uint64_t version = record->account_version;

    cr_assert_eq(account_carry(a, record, "a", renewed, new_due, NULL, ms(renewed), &changed, &st), STATUS_OK);
    cr_assert_not(changed, "carried once");
    cr_assert_eq(record->account_version, version);
    cr_assert_eq(fine->carried, 3 * PER);

    cr_assert_eq(account_balance(record, renewed + DAY), 3 * PER, "in time under the new due time");
    cr_assert_eq(account_balance(record, new_due), 3 * PER);
    cr_assert_eq(account_balance(record, new_due + 1), 4 * PER);
    assess(record, new_due, false);
    assess(record, new_due + DAY + 1, true);
    cr_assert_eq(fine->amount, 5 * PER);
    fix(record, "a", new_due + 1, new_due + DAY + 2, true);
    cr_assert_eq(fine->amount, 4 * PER, "fixed at the return: carried plus one step");
}

Test(fines, a_renewal_carries_what_accrued_by_the_renewal_not_by_a_later_sweep) {
    /* the sweep ran after the renewal was made but before the user record followed it */
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    int64_t renewed = DUE + 1, new_due = renewed + 14 * DAY;
    assess(record, DUE + DAY + 1, true);
    cr_assert_eq(fine_of(record, "a")->amount, 2 * PER);
    bool changed;
    status st;
    cr_assert_eq(account_carry(a, record, "a", renewed, new_due, NULL, ms(DUE + DAY + 2), &changed, &st),
                 STATUS_OK);
    cr_assert(changed);
    fine_entry *fine = fine_of(record, "a");
    cr_assert_eq(fine->carried, PER, "one second late at the renewal: one step");
    cr_assert_eq(fine->amount, PER);
    cr_assert_eq(last_event(record)->kind, KIND_ASSESSED);
    cr_assert_eq(last_event(record)->amount, PER, "the correction is announced");
    user_record_extend_due(record, "a", new_due, NULL);
    cr_assert_eq(account_balance(record, new_due), PER);
}

Test(fines, a_renewal_never_carries_less_than_was_paid) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    bool replay, changed;
    status st;
    cr_assert_eq(pay(record, 2 * PER, "", DUE + DAY + 1, &replay, &st), STATUS_OK, "%s", st.message);
    int64_t renewed = DUE + 1, new_due = renewed + 14 * DAY;
    cr_assert_eq(account_carry(a, record, "a", renewed, new_due, NULL, ms(DUE + DAY + 2), &changed, &st),
                 STATUS_OK);
    user_record_extend_due(record, "a", new_due, NULL);
    cr_assert_eq(fine_of(record, "a")->carried, 2 * PER);
    cr_assert_eq(account_balance(record, new_due), 0);
    cr_assert_eq(account_balance(record, new_due + 1), PER);
}

Test(fines, the_cap_holds_across_renewals) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, terms_of(PER, DAY, 100));
    int64_t renewed = DUE + 3 * DAY, new_due = renewed + 14 * DAY;
    bool changed;
    status st;
    cr_assert_eq(account_carry(a, record, "a", renewed, new_due, NULL, ms(renewed), &changed, &st), STATUS_OK);
    user_record_extend_due(record, "a", new_due, NULL);
    cr_assert_eq(account_balance(record, new_due + 1), 100);
    cr_assert_eq(account_balance(record, new_due + 30 * DAY), 100, "75 carried + 25 reaches the cap");
    int64_t again = new_due + 5 * DAY, last_due = again + 14 * DAY;
    cr_assert_eq(account_carry(a, record, "a", again, last_due, NULL, ms(again), &changed, &st), STATUS_OK);
    user_record_extend_due(record, "a", last_due, NULL);
    cr_assert_eq(fine_of(record, "a")->carried, 100);
    cr_assert_eq(account_balance(record, last_due + 10 * DAY), 100);
    assess(record, last_due + 10 * DAY, false);
    account_outbox_done(record, record->account_version);
    cr_assert_eq(account_next_visit_ms(record, 0), 0, "nothing more to assess");
    fix(record, "a", last_due + 10 * DAY, last_due + 10 * DAY, true);
    cr_assert_eq(fine_of(record, "a")->amount, 100);
}

Test(fines, a_renewal_in_time_carries_nothing) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    bool changed = true;
    status st;
    cr_assert_eq(account_carry(a, record, "a", DUE, DUE + 14 * DAY, NULL, ms(DUE), &changed, &st), STATUS_OK);
    cr_assert_not(changed);
    cr_assert_eq(record->n_fines, 0);
    cr_assert_eq(record->account_version, 0);
    cr_assert_eq(account_carry(a, record, "unknown", DUE + DAY, DUE + 14 * DAY, NULL, ms(DUE), &changed, &st),
                 STATUS_OK);
    cr_assert_not(changed);
}

Test(fines, a_renewal_runs_under_its_own_terms) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    int64_t renewed = DUE + 1, new_due = renewed + 7 * DAY;
    bool changed;
    status st;
    cr_assert_eq(account_carry(a, record, "a", renewed, new_due, terms_of(100, 3600, 500), ms(renewed), &changed,
                               &st),
                 STATUS_OK);
    user_record_extend_due(record, "a", new_due, NULL);
    cr_assert_eq(account_balance(record, new_due + 1), PER + 100);
    cr_assert_eq(account_balance(record, new_due + 3600 + 1), PER + 200);
    cr_assert_eq(account_balance(record, new_due + DAY), 500);
}

/* --- payments -------------------------------------------------------------------------- */

/* Two returned loans with fixed fines of 50 and 75, "a" the older. */
static user_record *two_fixed_fines(void) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    lend(record, "b", ACTIVE, DUE + DAY, daily());
    fix(record, "a", DUE + DAY + 1, DUE + 4 * DAY, true);
    fix(record, "b", DUE + 3 * DAY + 1, DUE + 4 * DAY, true);
    user_record_follow(record, "a", LOAN_RETURNED);
    user_record_follow(record, "b", LOAN_RETURNED);
    cr_assert_eq(account_balance(record, DUE + 4 * DAY), 2 * PER + 3 * PER);
    return record;
}

Test(fines, a_payment_must_be_more_than_zero) {
    user_record *record = two_fixed_fines();
    uint64_t version = record->account_version;
    int64_t amounts[] = {0, -1, INT64_MIN};
    for (size_t i = 0; i < sizeof amounts / sizeof amounts[0]; i++) {
        bool replay = true;
        status st;
        cr_assert_eq(pay(record, amounts[i], "", DUE + 5 * DAY, &replay, &st), STATUS_INVALID_ARGUMENT);
        cr_assert_not(replay);
    }
    cr_assert_eq(record->account_version, version);
    cr_assert_eq(account_balance(record, DUE + 5 * DAY), 5 * PER);
}

Test(fines, a_payment_above_the_balance_is_an_overpayment) {
    user_record *record = two_fixed_fines();
    bool replay;
    status st;
    cr_assert_eq(pay(record, 5 * PER + 1, "p-1", DUE + 5 * DAY, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERPAYMENT");
    cr_assert_eq(pay(record, INT64_MAX, "p-1", DUE + 5 * DAY, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERPAYMENT");
    cr_assert_eq(record->n_account_requests, 0, "a refused request is not remembered");
    cr_assert_eq(pay(record, 5 * PER, "p-1", DUE + 5 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_not(replay, "the refused request did not take the key");
    cr_assert_eq(account_balance(record, DUE + 5 * DAY), 0);
    cr_assert_eq(pay(record, 1, "p-2", DUE + 5 * DAY, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERPAYMENT");

    user_record *clean = empty_record();
    cr_assert_eq(pay(clean, 1, "", DUE, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERPAYMENT");
}

Test(fines, a_payment_settles_the_oldest_fines_first) {
    user_record *record = two_fixed_fines();
    bool replay = true;
    status st;
    cr_assert_eq(pay(record, 60, "p-1", DUE + 5 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_not(replay);
    fine_entry *fa = fine_of(record, "a"), *fb = fine_of(record, "b");
    cr_assert_eq(fa->paid, 50);
    cr_assert_eq(fine_state(fa), PAID);
    cr_assert_eq(fb->paid, 10, "the rest goes to the next");
    cr_assert_eq(fine_state(fb), OWED);
    cr_assert_eq(account_balance(record, DUE + 5 * DAY), 65);
    const account_event *e = last_event(record);
    cr_assert_eq(e->kind, KIND_PAID);
    cr_assert_eq(e->amount, 60);
    cr_assert_eq(e->version, record->account_version);
    cr_assert_str_eq(e->loan_id, "");

    cr_assert_eq(pay(record, 65, "p-2", DUE + 6 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(fb->paid, 75);
    cr_assert_eq(fine_state(fb), PAID);
    cr_assert_eq(account_balance(record, DUE + 6 * DAY), 0);
}

Test(fines, a_payment_of_an_accruing_fine_counts_against_what_accrued_so_far) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    bool replay;
    status st;
    cr_assert_eq(pay(record, 2 * PER, "", DUE + 2 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(fine_of(record, "a")->amount, 2 * PER, "the payment assessed the fine first");
    cr_assert_eq(account_balance(record, DUE + 2 * DAY), 0);
    cr_assert_eq(account_balance(record, DUE + 2 * DAY + 1), PER, "and it keeps accruing");
    cr_assert_eq(fine_state(fine_of(record, "a")), ACCRUING);
}

Test(fines, a_retried_payment_is_a_replay_and_a_reused_id_is_refused) {
    user_record *record = two_fixed_fines();
    bool replay = true;
    status st;
    cr_assert_eq(pay(record, 20, "p-1", DUE + 5 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_not(replay);
    uint64_t version = record->account_version;
    size_t outbox = record->n_account_outbox;
    cr_assert_eq(pay(record, 20, "p-1", DUE + 6 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert(replay);
    cr_assert_eq(record->account_version, version, "nothing changes on a replay");
    cr_assert_eq(record->n_account_outbox, outbox);
    cr_assert_eq(fine_of(record, "a")->paid, 20);
    cr_assert_eq(account_balance(record, DUE + 6 * DAY), 5 * PER - 20);

    replay = true;
    cr_assert_eq(pay(record, 21, "p-1", DUE + 6 * DAY, &replay, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.reason, "REQUEST_ID_REUSED");
    cr_assert_not(replay);
    cr_assert_eq(record->account_version, version);

    cr_assert_eq(pay(record, 20, "", DUE + 6 * DAY, &replay, &st), STATUS_OK);
    cr_assert_not(replay, "no request id: every call is a new payment");
    cr_assert_eq(pay(record, 20, "", DUE + 6 * DAY, &replay, &st), STATUS_OK);
    cr_assert_not(replay);
    cr_assert_eq(account_balance(record, DUE + 6 * DAY), 5 * PER - 60);
}

Test(fines, request_keys_name_the_method_and_the_id) {
    char pay_key[ACCOUNT_REQUEST_KEY_LENGTH + 1], waive_key[ACCOUNT_REQUEST_KEY_LENGTH + 1];
    account_request_key("PayFines", "r-1", pay_key);
    account_request_key("WaiveFine", "r-1", waive_key);
    cr_assert_eq(strlen(pay_key), ACCOUNT_REQUEST_KEY_LENGTH);
    cr_assert_str_neq(pay_key, waive_key);
    char again[ACCOUNT_REQUEST_KEY_LENGTH + 1];
    account_request_key("PayFines", "r-1", again);
    cr_assert_str_eq(pay_key, again);
    account_request_key("PayFines", "", again);
    cr_assert_str_eq(again, "");
    account_request_key("PayFines", NULL, again);
    cr_assert_str_eq(again, "");
}

Test(fines, only_the_newest_requests_are_remembered) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, terms_of(1, 1, 1000000));
    bool replay;
    status st;
    char id[32];
    for (int i = 0; i < ACCOUNT_REQUESTS_KEPT + 5; i++) {
        snprintf(id, sizeof id, "p-%d", i);
        cr_assert_eq(pay(record, 1, id, DUE + 1000, &replay, &st), STATUS_OK, "%s", st.message);
    }
    cr_assert_eq(record->n_account_requests, ACCOUNT_REQUESTS_KEPT);
    snprintf(id, sizeof id, "p-%d", ACCOUNT_REQUESTS_KEPT + 4);
    cr_assert_eq(pay(record, 1, id, DUE + 1000, &replay, &st), STATUS_OK);
    cr_assert(replay, "the newest is still known");
}

/* --- waivers --------------------------------------------------------------------------- */

Test(fines, a_waiver_needs_a_fine_that_is_owed) {
    user_record *record = two_fixed_fines();
    lend(record, "c", ACTIVE, DUE + 100 * DAY, daily());
    bool replay;
    status st;
    cr_assert_eq(waive(record, "unknown", "w-1", DUE + 5 * DAY, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "NO_FINE");
    cr_assert_eq(waive(record, "c", "w-1", DUE + 5 * DAY, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "NO_FINE", "a loan in time has no fine");
    cr_assert_eq(pay(record, 2 * PER, "", DUE + 5 * DAY, &replay, &st), STATUS_OK);
    cr_assert_eq(waive(record, "a", "w-1", DUE + 5 * DAY, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "FINE_NOT_OWED", "paid in full");
    cr_assert_eq(record->n_account_requests, 0);

    uint64_t version = record->account_version;
    cr_assert_eq(waive(record, "b", "w-1", DUE + 5 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_not(replay);
    fine_entry *fb = fine_of(record, "b");
    cr_assert_eq(fb->waived, 3 * PER);
    cr_assert(fb->waived_all);
    cr_assert_str_eq(fb->waive_reason, "lost in the flood");
    cr_assert_eq(fine_state(fb), WAIVED);
    cr_assert_eq(record->account_version, version + 1);
    const account_event *e = last_event(record);
    cr_assert_eq(e->kind, KIND_WAIVED);
    cr_assert_str_eq(e->loan_id, "b");
    cr_assert_eq(e->amount, 3 * PER);
    cr_assert_str_eq(e->reason, "lost in the flood");
    cr_assert_eq(account_balance(record, DUE + 5 * DAY), 0);
    cr_assert_eq(waive(record, "b", "w-2", DUE + 5 * DAY, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "FINE_NOT_OWED", "waived already");
}

Test(fines, a_waiver_waives_only_what_was_not_paid) {
    user_record *record = two_fixed_fines();
    bool replay;
    status st;
    cr_assert_eq(pay(record, 60, "", DUE + 5 * DAY, &replay, &st), STATUS_OK);
    cr_assert_eq(waive(record, "b", "", DUE + 5 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    fine_entry *fb = fine_of(record, "b");
    cr_assert_eq(fb->paid, 10);
    cr_assert_eq(fb->waived, 65);
    cr_assert_eq(fb->amount, 75);
    cr_assert_eq(last_event(record)->amount, 65);
}

Test(fines, a_waived_accruing_fine_accrues_no_more) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    bool replay;
    status st;
    cr_assert_eq(pay(record, 10, "", DUE + DAY + 1, &replay, &st), STATUS_OK);
    cr_assert_eq(waive(record, "a", "w-1", DUE + DAY + 1, &replay, &st), STATUS_OK, "%s", st.message);
    fine_entry *fine = fine_of(record, "a");
    cr_assert_eq(fine->amount, 2 * PER);
    cr_assert_eq(fine->waived, 2 * PER - 10);
    cr_assert_eq(fine_state(fine), WAIVED);
    cr_assert_eq(account_balance(record, DUE + 30 * DAY), 0);
    assess(record, DUE + 30 * DAY, false);
    cr_assert_eq(account_next_visit_ms(record, 1000) - ms(DUE + DAY + 1), 1000,
                 "only the outbox is left to visit for");
    account_outbox_done(record, record->account_version);
    cr_assert_eq(account_next_visit_ms(record, 1000), 0);
    fix(record, "a", DUE + 30 * DAY, DUE + 30 * DAY, true);
    cr_assert_eq(fine->amount, 2 * PER, "the return keeps the waived amount");
    cr_assert_eq(fine_state(fine), WAIVED);
    cr_assert_eq(account_balance(record, DUE + 30 * DAY), 0);
}

Test(fines, a_retried_waiver_is_a_replay_and_a_reused_id_is_refused) {
    user_record *record = two_fixed_fines();
    bool replay = true;
    status st;
    cr_assert_eq(waive(record, "a", "w-1", DUE + 5 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_not(replay);
    uint64_t version = record->account_version;
    cr_assert_eq(waive(record, "a", "w-1", DUE + 6 * DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert(replay, "answered, not refused as FINE_NOT_OWED");
    cr_assert_eq(record->account_version, version);
    replay = true;
    cr_assert_eq(waive(record, "b", "w-1", DUE + 6 * DAY, &replay, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.reason, "REQUEST_ID_REUSED");
    cr_assert_not(replay);
    cr_assert_eq(fine_state(fine_of(record, "b")), OWED);
    cr_assert_eq(record->account_version, version);
}

/* --- the view, the block --------------------------------------------------------------- */

Test(fines, the_view_shows_the_balance_and_each_fine_state) {
    user_record *record = empty_record();
    lend(record, "owed", ACTIVE, DUE, daily());
    lend(record, "paid", ACTIVE, DUE, daily());
    lend(record, "waived", ACTIVE, DUE, daily());
    lend(record, "out", ACTIVE, DUE, daily());
    fix(record, "paid", DUE + 1, DUE + 1, true);
    bool replay;
    status st;
    cr_assert_eq(pay(record, PER, "", DUE + 1, &replay, &st), STATUS_OK, "%s", st.message);
    fix(record, "owed", DUE + DAY + 1, DUE + DAY + 1, true);
    fix(record, "waived", DUE + 1, DUE + DAY + 1, true);
    cr_assert_eq(waive(record, "waived", "", DUE + DAY + 1, &replay, &st), STATUS_OK, "%s", st.message);
    int64_t now = DUE + 3 * DAY + 1;
    assess(record, now - DAY, true);
    account_message *view = account_view(a, record, "alice", 500, ms(now));
    cr_assert_not_null(view);
    cr_assert_str_eq(view->user_id, "alice");
    cr_assert_eq(view->block_at, 500);
    cr_assert_eq(view->balance, 2 * PER + 4 * PER, "owed 50 and the loan still out at 100 now");
    cr_assert_eq(view->balance, account_balance(record, now));
    cr_assert_eq(view->n_fines, 4);
    cr_assert_not_null(view->update_time);
    cr_assert_eq(view->update_time->seconds, now - DAY);
    int seen = 0;
    for (size_t i = 0; i < view->n_fines; i++) {
        Library__Lending__V1__Fine *fine = view->fines[i];
        cr_assert_str_eq(fine->book_title, "Dune");
        cr_assert_eq(fine->due_time->seconds, DUE);
        if (strcmp(fine->loan_id, "owed") == 0) {
            seen |= 1;
            cr_assert_eq(fine->state, OWED);
            cr_assert_eq(fine->amount, 2 * PER);
            cr_assert_eq(fine->return_time->seconds, DUE + DAY + 1);
        } else if (strcmp(fine->loan_id, "paid") == 0) {
            seen |= 2;
            cr_assert_eq(fine->state, PAID);
            cr_assert_eq(fine->amount, PER);
            cr_assert_eq(fine->paid, PER);
        } else if (strcmp(fine->loan_id, "waived") == 0) {
            seen |= 4;
            cr_assert_eq(fine->state, WAIVED);
            cr_assert_eq(fine->waived, PER);
        } else {
            seen |= 8;
            cr_assert_str_eq(fine->loan_id, "out");
            cr_assert_eq(fine->state, ACCRUING);
            cr_assert_eq(fine->amount, 4 * PER, "at the view's time, not the last assessment's");
            cr_assert_null(fine->return_time, "unset while accruing");
        }
    }
    cr_assert_eq(seen, 15);
}

Test(fines, the_view_lists_owed_fines_before_settled_ones) {
    user_record *record = empty_record();
    lend(record, "settled", ACTIVE, DUE, daily());
    lend(record, "owed", ACTIVE, DUE, daily());
    fix(record, "settled", DUE + 1, DUE + 1, true);
    bool replay;
    status st;
    cr_assert_eq(pay(record, PER, "", DUE + 1, &replay, &st), STATUS_OK, "%s", st.message);
    fix(record, "owed", DUE + 1, DUE + 1, true);
    account_message *view = account_view(a, record, "alice", 0, ms(DUE + 2));
    cr_assert_eq(view->n_fines, 2);
    cr_assert_str_eq(view->fines[0]->loan_id, "owed", "Account.fines: fines still owed, then settled ones");
    cr_assert_str_eq(view->fines[1]->loan_id, "settled");
}

Test(fines, an_empty_account_views_as_zero) {
    account_message *view = account_view(a, empty_record(), "bob", 0, ms(DUE));
    cr_assert_not_null(view);
    cr_assert_eq(view->balance, 0);
    cr_assert_eq(view->n_fines, 0);
    cr_assert_null(view->update_time);
}

Test(fines, the_block_starts_at_exactly_block_at) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    status st;
    int64_t at_500 = DUE + 19 * DAY + 1; /* 20 started days: 500 */
    cr_assert_eq(account_balance(record, at_500), 500);
    cr_assert_eq(account_check_block(record, at_500 - 1, 500, &st), STATUS_OK, "475 is one step below");
    cr_assert_eq(account_check_block(record, at_500, 500, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "FINES_OWED");
    cr_assert_eq(account_check_block(record, at_500, 501, &st), STATUS_OK, "one below block_at");
    cr_assert_eq(account_check_block(record, at_500, 0, &st), STATUS_OK, "0: never");
    cr_assert_eq(account_check_block(record, at_500, -1, &st), STATUS_OK);
    cr_assert_eq(account_check_block(record, DUE + 1000 * DAY, 0, &st), STATUS_OK);
    cr_assert_eq(account_check_block(empty_record(), DUE, 1, &st), STATUS_OK);
    bool replay;
    cr_assert_eq(pay(record, 1, "", at_500, &replay, &st), STATUS_OK);
    cr_assert_eq(account_check_block(record, at_500, 500, &st), STATUS_OK, "paying one unit lifts it");
}

/* --- the reconciler's visits, the outbox, pruning --------------------------------------- */

Test(fines, the_next_visit_is_the_next_step_boundary) {
    user_record *record = empty_record();
    cr_assert_eq(account_next_visit_ms(record, 1000), 0, "an empty account is never visited");
    lend(record, "p", PENDING, DUE - DAY, daily());
    lend(record, "free", ACTIVE, DUE - DAY, terms_of(0, 0, 0));
    cr_assert_eq(account_next_visit_ms(record, 1000), 0, "PENDING and unfined loans need no visit");
    lend(record, "a", ACTIVE, DUE, daily());
    cr_assert_eq(account_next_visit_ms(record, 1000), ms(DUE + 1), "one second late is the first step");
    assess(record, DUE + 1, true);
    account_outbox_done(record, record->account_version);
    cr_assert_eq(account_next_visit_ms(record, 1000), ms(DUE + DAY + 1));
    assess(record, DUE + DAY, false);
    assess(record, DUE + DAY + 1, true);
    account_outbox_done(record, record->account_version);
    cr_assert_eq(account_next_visit_ms(record, 1000), ms(DUE + 2 * DAY + 1));
    assess(record, DUE + 100 * DAY, true);
    account_outbox_done(record, record->account_version);
    cr_assert_eq(account_next_visit_ms(record, 1000), 0, "capped: nothing more to assess");

    user_record *fixed = empty_record();
    lend(fixed, "a", ACTIVE, DUE, daily());
    fix(fixed, "a", DUE + 1, DUE + 1, true);
    cr_assert_eq(account_next_visit_ms(fixed, 500), ms(DUE + 1) + 500, "the outbox entry, after_ms after it");
    cr_assert(account_outbox_done(fixed, fixed->account_version));
    cr_assert_eq(account_next_visit_ms(fixed, 500), 0, "fixed: nothing more to assess");
}

Test(fines, the_next_visit_takes_the_sooner_of_outbox_and_growth) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    assess(record, DUE + 1, true);
    cr_assert_eq(account_next_visit_ms(record, 1000), ms(DUE + 1) + 1000);
    cr_assert_eq(account_next_visit_ms(record, 2 * DAY * 1000LL), ms(DUE + DAY + 1), "the step comes first");
    lend(record, "b", ACTIVE, DUE + 10, terms_of(1, 1, 5));
    cr_assert_eq(account_next_visit_ms(record, 60 * 1000), ms(DUE + 11), "b's first step comes first");
}

Test(fines, the_next_visit_of_far_away_times_does_not_overflow) {
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, terms_of(1, INT64_MAX / 2, 10));
    assess(record, DUE + 1, true);
    account_outbox_done(record, record->account_version);
    int64_t next = account_next_visit_ms(record, 1000);
    cr_assert(next == 0 || next > ms(DUE), "the next step is out of reach: %lld", (long long)next);
    user_record *quarter = empty_record();
    lend(quarter, "a", ACTIVE, DUE, terms_of(1, INT64_MAX / 4, 10));
    assess(quarter, DUE + 1, true);
    account_outbox_done(quarter, quarter->account_version);
    next = account_next_visit_ms(quarter, 1000);
    cr_assert(next == 0 || next > ms(DUE), "a step beyond what unix ms can say: %lld", (long long)next);
    user_record *late = empty_record();
    lend(late, "a", ACTIVE, INT64_MAX - 10, daily());
    next = account_next_visit_ms(late, 1000);
    cr_assert(next >= 0, "%lld", (long long)next);
    user_record *most = empty_record();
    lend(most, "a", ACTIVE, DUE, terms_of(1, 1, INT64_MAX));
    assess(most, DUE + 10, true);
    next = account_next_visit_ms(most, INT64_MAX);
    cr_assert_eq(next, ms(DUE + 11), "an outbox time out of reach does not hide the next step");
}

Test(fines, a_published_outbox_leaves) {
    user_record *record = two_fixed_fines();
    cr_assert_eq(record->n_account_outbox, 2);
    cr_assert_not(account_outbox_done(record, 0));
    cr_assert(account_outbox_done(record, 1));
    cr_assert_eq(record->n_account_outbox, 1);
    cr_assert_eq(record->account_outbox[0]->version, 2);
    cr_assert_not(account_outbox_done(record, 1));
    cr_assert(account_outbox_done(record, 99));
    cr_assert_eq(record->n_account_outbox, 0);
    cr_assert_eq(record->account_version, 2, "publishing is not a change of the account");
}

Test(fines, settled_fines_beyond_the_kept_number_go_owed_ones_stay) {
    user_record *record = empty_record();
    char id[32];
    bool replay;
    status st;
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "owed-%d", i);
        lend(record, id, ACTIVE, DUE, daily());
        fix(record, id, DUE + 1, DUE + 1, true);
        user_record_follow(record, id, LOAN_RETURNED);
    }
    for (int i = 0; i < FINES_SETTLED_KEPT + 10; i++) {
        snprintf(id, sizeof id, "settled-%d", i);
        lend(record, id, ACTIVE, DUE, daily());
        fix(record, id, DUE + 1, DUE + 1, true);
        user_record_follow(record, id, LOAN_RETURNED);
        cr_assert_eq(waive(record, id, "", DUE + 1, &replay, &st), STATUS_OK, "%s", st.message);
    }
    cr_assert_eq(record->n_fines, 3 + FINES_SETTLED_KEPT);
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "owed-%d", i);
        cr_assert_not_null(fine_of(record, id), "every owed fine is kept");
    }
    cr_assert_null(fine_of(record, "settled-9"), "the oldest settled ones go");
    cr_assert_not_null(fine_of(record, "settled-10"));
    snprintf(id, sizeof id, "settled-%d", FINES_SETTLED_KEPT + 9);
    cr_assert_not_null(fine_of(record, id));
    cr_assert_eq(account_balance(record, DUE + DAY), 3 * PER);
    cr_assert_eq(pay(record, 3 * PER, "", DUE + DAY, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(record->n_fines, FINES_SETTLED_KEPT);
    cr_assert_null(fine_of(record, "owed-0"), "paid now, and older than the settled ones kept");
    cr_assert_not_null(fine_of(record, id));
}

Test(fines, a_fine_settled_while_its_loan_is_open_is_not_charged_again) {
    /* 50 settled fines, then a late loan paid off before its return: the fix settles it, and
     * however it is pruned, a second fix or a sweep before the open entry leaves must not fine
     * the loan anew. */
    user_record *record = empty_record();
    char id[32];
    bool replay;
    status st;
    lend(record, "first", ACTIVE, DUE, daily());
    cr_assert_eq(pay(record, PER, "", DUE + 1, &replay, &st), STATUS_OK, "%s", st.message);
    for (int i = 0; i < FINES_SETTLED_KEPT; i++) {
        snprintf(id, sizeof id, "settled-%d", i);
        lend(record, id, ACTIVE, DUE, daily());
        fix(record, id, DUE + 1, DUE + 1, true);
        user_record_follow(record, id, LOAN_RETURNED);
        cr_assert_eq(waive(record, id, "", DUE + 1, &replay, &st), STATUS_OK, "%s", st.message);
    }
    uint64_t version = record->account_version;
    fix(record, "first", DUE + 1, DUE + 1, true);
    cr_assert_eq(record->account_version, version + 1);
    fix(record, "first", DUE + 1, DUE + 2, false);
    assess(record, DUE + DAY + 1, false);
    cr_assert_eq(account_balance(record, DUE + DAY + 1), 0, "paid is paid");
    cr_assert_eq(record->account_version, version + 1);
}

/* --- the property: whatever happens, the books balance --------------------------------- */

static int64_t sum_owed(const user_record *record, int64_t now) {
    int64_t sum = 0;
    for (size_t i = 0; i < record->n_fines; i++) {
        const fine_entry *fine = record->fines[i];
        cr_assert_geq(fine->paid, 0);
        cr_assert_geq(fine->waived, 0);
        cr_assert_leq(fine->paid + fine->waived, fine_amount_at(fine, now));
        sum += fine_amount_at(fine, now) - fine->paid - fine->waived;
    }
    return sum;
}

/* Σ last FineAssessed per loan − Σ FinePaid − Σ FineWaived over the whole outbox. */
static int64_t outbox_balance(const user_record *record) {
    int64_t sum = 0;
    for (size_t i = 0; i < record->n_account_outbox; i++) {
        const account_event *e = record->account_outbox[i];
        if (e->kind == KIND_PAID)
            sum -= e->amount;
        else if (e->kind == KIND_WAIVED)
            sum -= e->amount;
        else {
            cr_assert_eq(e->kind, KIND_ASSESSED);
            bool last = true;
            for (size_t j = i + 1; j < record->n_account_outbox; j++)
                if (record->account_outbox[j]->kind == KIND_ASSESSED &&
                    strcmp(record->account_outbox[j]->loan_id, e->loan_id) == 0)
                    last = false;
            if (last)
                sum += e->amount;
        }
        if (i > 0)
            cr_assert_gt(e->version, record->account_outbox[i - 1]->version);
    }
    return sum;
}

Test(fines, the_books_balance_whatever_happens) {
    unsigned seed = 20261202;
    for (int round = 0; round < 200; round++) {
        srand(seed + (unsigned)round);
        user_record *record = empty_record();
        int loans = 1 + rand() % 4;
        char ids[4][8];
        for (int i = 0; i < loans; i++) {
            snprintf(ids[i], sizeof ids[i], "l%d", i);
            fine_terms *terms = terms_of(1 + rand() % 50, 1 + rand() % 3600, 1 + rand() % 500);
            lend(record, ids[i], i == 3 ? PENDING : ACTIVE, DUE + rand() % 7200, terms);
        }
        int64_t now = DUE - 100;
        int64_t since[4] = {0, 0, 0, 0}; /* each loan's last renewal: a return or renewal is later */
        for (int step = 0; step < 40; step++) {
            now += rand() % 2000;
            bool replay, changed;
            status st;
            int loan_index = rand() % loans;
            const char *loan = ids[loan_index];
            char request[16];
            snprintf(request, sizeof request, "r%d", rand() % 20);
            switch (rand() % 6) {
            case 0:
            case 1:
                cr_assert_eq(account_assess(a, record, ms(now), &changed, &st), STATUS_OK);
                break;
            case 2: {
                int64_t balance = account_balance(record, now);
                int64_t amount = rand() % 3 == 0 ? balance + 1 - rand() % 3 : 1 + rand() % 200;
                status_code code = pay(record, amount, rand() % 2 ? request : "", now, &replay, &st);
                if (amount <= 0)
                    cr_assert_eq(code, STATUS_INVALID_ARGUMENT);
                else if (code == STATUS_FAILED_PRECONDITION)
                    cr_assert(amount > balance && strcmp(st.reason, "OVERPAYMENT") == 0);
                else if (code == STATUS_INVALID_ARGUMENT)
                    cr_assert_str_eq(st.reason, "REQUEST_ID_REUSED");
                else
                    cr_assert_eq(code, STATUS_OK);
                if (code == STATUS_OK && !replay)
                    cr_assert_eq(account_balance(record, now), balance - amount);
                break;
            }
            case 3: /* a return made a little earlier than it is written (a sweep may be between) */
                if (user_record_open_entry(record, loan) != NULL) {
                    int64_t returned = now - rand() % 3000;
                    if (returned < since[loan_index])
                        returned = since[loan_index];
                    cr_assert_eq(account_fix(a, record, loan, returned, ms(now), &changed, &st), STATUS_OK);
                    user_record_follow(record, loan, LOAN_RETURNED);
                }
                break;
            case 4: {
                status_code code = waive(record, loan, rand() % 2 ? request : "", now, &replay, &st);
                cr_assert(code == STATUS_OK || code == STATUS_FAILED_PRECONDITION || code == STATUS_INVALID_ARGUMENT);
                break;
            }
            case 5: /* a renewal, also written a little after it was made */
                if (user_record_open_entry(record, loan) != NULL && rand() % 2) {
                    const user_open_loan *open = user_record_open_entry(record, loan);
                    int64_t renewed = now - rand() % 3000;
                    if (renewed < since[loan_index])
                        renewed = since[loan_index];
                    int64_t due = (open->due_time > renewed ? open->due_time : renewed) + 1 + rand() % 5000;
                    cr_assert_eq(account_carry(a, record, loan, renewed, due, NULL, ms(now), &changed, &st),
                                 STATUS_OK);
                    user_record_extend_due(record, loan, due, NULL);
                    since[loan_index] = renewed;
                }
                break;
            }
            int64_t balance = account_balance(record, now);
            cr_assert_geq(balance, 0, "round %d step %d", round, step);
            bool all_assessed = true;
            for (size_t i = 0; i < record->n_open_loans; i++)
                if (record->open_loans[i]->status == ACTIVE &&
                    fine_accrued(record->open_loans[i]->fine_terms, record->open_loans[i]->due_time, now) > 0 &&
                    fine_of(record, record->open_loans[i]->loan_id) == NULL)
                    all_assessed = false;
            if (all_assessed)
                cr_assert_eq(balance, sum_owed(record, now), "round %d step %d", round, step);
        }
        /* every loan back: each fine fixed */
        for (int i = 0; i < loans; i++) {
            bool changed;
            status st;
            cr_assert_eq(account_fix(a, record, ids[i], now, ms(now), &changed, &st), STATUS_OK);
            user_record_follow(record, ids[i], LOAN_RETURNED);
        }
        int64_t balance = account_balance(record, now + 100 * DAY);
        cr_assert_eq(balance, account_balance(record, now), "fixed fines grow no more");
        cr_assert_eq(balance, sum_owed(record, now), "round %d", round);
        cr_assert_eq(outbox_balance(record), balance, "round %d: the events tell the balance", round);
    }
}

/* --- retention: settled fines leave, the account is announced again -------------------------- */

static bool refresh(user_record *record, int64_t now_seconds, int64_t retention_ms) {
    bool changed = false;
    status st;
    cr_assert_eq(account_refresh(a, record, ms(now_seconds), retention_ms, &changed, &st), STATUS_OK, "%s",
                 st.message);
    return changed;
}

Test(fines, a_settled_fine_leaves_after_the_retention_and_an_owed_one_is_restated_at_half_of_it) {
    const int64_t retention = 10LL * DAY * 1000, back = DUE + 2 * DAY;
    user_record *record = empty_record();
    lend(record, "paid", ACTIVE, DUE, daily());
    lend(record, "owed", ACTIVE, DUE, daily());
    fix(record, "paid", back, back, true);
    fix(record, "owed", back, back, true);
    cr_assert(user_record_follow(record, "paid", LOAN_RETURNED));
    cr_assert(user_record_follow(record, "owed", LOAN_RETURNED));
    bool replay = false;
    status st;
    cr_assert_eq(pay(record, fine_of(record, "paid")->amount, "all-of-paid", back, &replay, &st), STATUS_OK, "%s",
                 st.message);
    account_outbox_done(record, record->account_version);
    cr_assert_eq(fine_owed_at(fine_of(record, "paid"), back), 0, "the payment went to the older fine first");

    cr_assert_not(refresh(record, back + DAY, 0), "no retention: nothing ever happens");
    cr_assert_eq(account_refresh_visit_ms(record, 0), 0);
    cr_assert_not(refresh(record, back + DAY, retention), "a fresh account, nothing settled long ago");
    cr_assert_eq(account_refresh_visit_ms(record, retention), ms(back) + retention / 2,
                 "half the retention after the last change comes before the settled fine's end");

    uint64_t version = record->account_version;
    cr_assert(refresh(record, back + 5 * DAY, retention), "unchanged for half the retention: announced again");
    cr_assert_eq(record->account_version, version + 1);
    cr_assert_eq(record->n_account_outbox, 1);
    cr_assert_eq(record->account_outbox[0]->kind, KIND_ASSESSED);
    cr_assert_str_eq(record->account_outbox[0]->loan_id, "owed", "the newest fine is restated");
    cr_assert_eq(record->account_outbox[0]->amount, fine_of(record, "owed")->amount);
    cr_assert(record->account_outbox[0]->fixed);
    cr_assert_not_null(fine_of(record, "paid"), "settled 5 days ago: still kept");
    account_outbox_done(record, record->account_version);
    cr_assert_not(refresh(record, back + 6 * DAY, retention));
    cr_assert_eq(account_refresh_visit_ms(record, retention), ms(back) + retention, "the settled fine's end next");

    int64_t balance = account_balance(record, back + 10 * DAY);
    cr_assert(refresh(record, back + 10 * DAY, retention), "the settled fine's retention is over");
    cr_assert_null(fine_of(record, "paid"), "the settled fine is still in the account");
    cr_assert_not_null(fine_of(record, "owed"), "a fine still owed never leaves");
    cr_assert_eq(account_balance(record, back + 10 * DAY), balance, "forgetting a settled fine moved the balance");
    cr_assert_eq(record->n_account_outbox, 1, "the change is announced");
}

Test(fines, the_last_settled_fine_leaving_is_announced_and_then_nothing_more) {
    const int64_t retention = 10LL * DAY * 1000, back = DUE + DAY;
    user_record *record = empty_record();
    lend(record, "a", ACTIVE, DUE, daily());
    fix(record, "a", back, back, true);
    cr_assert(user_record_follow(record, "a", LOAN_RETURNED));
    bool replay = false;
    status st;
    cr_assert_eq(pay(record, fine_of(record, "a")->amount, "all", back, &replay, &st), STATUS_OK, "%s", st.message);
    account_outbox_done(record, record->account_version);
    cr_assert(refresh(record, back + 10 * DAY, retention));
    cr_assert_eq(record->n_fines, 0);
    cr_assert_eq(record->n_account_outbox, 1, "the empty account is announced, so pages drop the fine");
    cr_assert_str_eq(record->account_outbox[0]->loan_id, "a");
    account_outbox_done(record, record->account_version);
    cr_assert_eq(account_refresh_visit_ms(record, retention), 0, "an empty account needs no more visits");
    cr_assert_not(refresh(record, back + 100 * DAY, retention));
}
