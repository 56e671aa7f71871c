/* test_renewals.c - RenewLoan's rule over a loan record (renewal_apply), the user record
 * following a renewal's due time, and the reconciler's index visiting a renewal left
 * unannounced. */
#include <criterion/criterion.h>
#include <string.h>

#include "open_loans.h"
#include "renewals.h"
#include "user_record.h"

#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define RETURNED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED

enum { DAY_MS = 86400000, NOW_MS = 1000000000 };

static arena *a;
static void setup(void) {
    a = arena_create(0);
}
static void teardown(void) {
    arena_destroy(a);
}
TestSuite(renewals, .init = setup, .fini = teardown);

/* An ACTIVE loan of alice due at due_seconds, renewed `renewals` times. */
static loan_record *loan_of(int64_t due_seconds, int renewals) {
    loan_record *record = (void *)arena_new_message(a, &library__lending__internal__loan_record__descriptor);
    loan_message *loan = (void *)arena_new_message(a, &library__lending__v1__loan__descriptor);
    cr_assert(record && loan);
    loan->loan_id = "0123456789abcdef0123";
    loan->user_id = "alice";
    loan->status = ACTIVE;
    loan->due_time = timestamp_from_ms(a, due_seconds * 1000);
    loan->renewal_count = renewals;
    record->loan = loan;
    record->overdue_published = true;
    return record;
}

static renewal rule_for(const char *caller, bool admin, const char *request_id) {
    char *key = arena_alloc(a, RENEWAL_REQUEST_KEY_LENGTH + 1);
    renewal_request_key(caller, request_id, key);
    return (renewal){.caller = caller, .caller_admin = admin, .request_key = key, .now_ms = NOW_MS,
                     .loan_period_ms = 14LL * DAY_MS, .max_renewals = 2};
}

Test(renewals, the_period_counts_from_the_due_time_or_from_now_whichever_is_later) {
    renewal rule = rule_for("alice", false, "");
    bool replay = true, changed = false;
    status st;
    loan_record *ahead = loan_of(NOW_MS / 1000 + 100, 0);
    cr_assert_eq(renewal_apply(&rule, a, ahead, &replay, &changed, &st), STATUS_OK, "%s", st.message);
    cr_assert(changed && !replay);
    cr_assert_eq(ahead->loan->due_time->seconds, NOW_MS / 1000 + 100 + 14 * 86400);
    cr_assert_eq(ahead->loan->renewal_count, 1);
    cr_assert(ahead->renewal_unpublished, "the announcement is owed");
    cr_assert_not(ahead->overdue_published, "the new due time will be announced when it passes");
    cr_assert_eq(ahead->update_time_ms, NOW_MS);
    cr_assert_eq(ahead->n_renewal_requests, 0, "no request id, nothing to remember");

    loan_record *late = loan_of(NOW_MS / 1000 - 5000, 1);
    cr_assert_eq(renewal_apply(&rule, a, late, &replay, &changed, &st), STATUS_OK);
    cr_assert_eq(late->loan->due_time->seconds, NOW_MS / 1000 + 14 * 86400);
    cr_assert_eq(late->loan->renewal_count, 2);
}

Test(renewals, refusals_name_their_reason_and_change_nothing) {
    bool replay = false, changed = true;
    status st;
    renewal rule = rule_for("alice", false, "r-1");
    loan_record *full = loan_of(NOW_MS / 1000, 2);
    cr_assert_eq(renewal_apply(&rule, a, full, &replay, &changed, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "RENEWAL_LIMIT");
    cr_assert_not(changed);
    cr_assert_eq(full->loan->renewal_count, 2);
    cr_assert_eq(full->n_renewal_requests, 0);

    loan_record *returned = loan_of(NOW_MS / 1000, 0);
    returned->loan->status = RETURNED;
    cr_assert_eq(renewal_apply(&rule, a, returned, &replay, &changed, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "LOAN_NOT_ACTIVE");

    renewal stranger = rule_for("mallory", false, "r-1");
    loan_record *theirs = loan_of(NOW_MS / 1000, 0);
    cr_assert_eq(renewal_apply(&stranger, a, theirs, &replay, &changed, &st), STATUS_NOT_FOUND);
    cr_assert_str_eq(st.reason, "LOAN_NOT_FOUND");
    cr_assert_eq(theirs->loan->renewal_count, 0);

    renewal librarian = rule_for("librarian", true, "r-1");
    cr_assert_eq(renewal_apply(&librarian, a, theirs, &replay, &changed, &st), STATUS_OK);
    cr_assert_eq(theirs->loan->renewal_count, 1, "an administrator renews anyone's loan");
}

Test(renewals, a_retried_request_is_answered_with_its_renewal_not_renewed_again) {
    bool replay = false, changed = false;
    status st;
    renewal first = rule_for("alice", false, "r-1");
    loan_record *record = loan_of(NOW_MS / 1000 + 100, 0);
    cr_assert_eq(renewal_apply(&first, a, record, &replay, &changed, &st), STATUS_OK);
    int64_t due = record->loan->due_time->seconds;
    cr_assert_eq(record->n_renewal_requests, 1);
    cr_assert_eq(record->renewal_requests[0]->renewal_count, 1);

    cr_assert_eq(renewal_apply(&first, a, record, &replay, &changed, &st), STATUS_OK);
    cr_assert(replay && !changed);
    cr_assert_eq(record->loan->renewal_count, 1);
    cr_assert_eq(record->loan->due_time->seconds, due);

    renewal second = rule_for("alice", false, "r-2");
    cr_assert_eq(renewal_apply(&second, a, record, &replay, &changed, &st), STATUS_OK);
    cr_assert(changed && !replay);
    /* at the limit now, a retry of either is still its answer, not a refusal */
    cr_assert_eq(renewal_apply(&first, a, record, &replay, &changed, &st), STATUS_OK);
    cr_assert(replay);
    /* the same request id from someone else is another request */
    renewal other = rule_for("librarian", true, "r-1");
    cr_assert_eq(renewal_apply(&other, a, record, &replay, &changed, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "RENEWAL_LIMIT");
}

Test(renewals, a_record_remembers_the_newest_sixteen_requests) {
    bool replay = false, changed = false;
    status st;
    loan_record *record = loan_of(NOW_MS / 1000, 0);
    for (int i = 0; i < 20; i++) {
        renewal rule = rule_for("alice", false, arena_sprintf(a, "r-%d", i));
        rule.max_renewals = 100;
        cr_assert_eq(renewal_apply(&rule, a, record, &replay, &changed, &st), STATUS_OK, "%s", st.message);
    }
    cr_assert_eq(record->n_renewal_requests, RENEWAL_REQUESTS_KEPT);
    cr_assert_eq(record->renewal_requests[RENEWAL_REQUESTS_KEPT - 1]->renewal_count, 20);
    renewal newest = rule_for("alice", false, "r-19"), oldest = rule_for("alice", false, "r-0");
    newest.max_renewals = oldest.max_renewals = 100;
    cr_assert_eq(renewal_apply(&newest, a, record, &replay, &changed, &st), STATUS_OK);
    cr_assert(replay);
    cr_assert_eq(renewal_apply(&oldest, a, record, &replay, &changed, &st), STATUS_OK);
    cr_assert_not(replay, "the oldest fell off");
    cr_assert_eq(record->loan->renewal_count, 21);
}

Test(renewals, the_user_record_takes_a_later_due_time_only) {
    user_record record = LIBRARY__LENDING__INTERNAL__USER_RECORD__INIT;
    Library__Lending__Internal__OpenLoan open = LIBRARY__LENDING__INTERNAL__OPEN_LOAN__INIT;
    open.loan_id = "L1";
    open.status = ACTIVE;
    open.due_time = 1000;
    Library__Lending__Internal__OpenLoan *loans[] = {&open};
    record.open_loans = loans;
    record.n_open_loans = 1;
    cr_assert(user_record_extend_due(&record, "L1", 5000, NULL));
    cr_assert_eq(open.due_time, 5000);
    cr_assert_not(user_record_extend_due(&record, "L1", 3000, NULL), "a stale sync does not undo a renewal");
    cr_assert_eq(open.due_time, 5000);
    cr_assert_not(user_record_extend_due(&record, "L2", 9000, NULL));

    /* the overdue block reads it: overdue at 2000 before, not after */
    open_loan before = {LOAN_ACTIVE, 1000}, after = {LOAN_ACTIVE, open.due_time};
    status st;
    cr_assert_eq(lending_may_borrow(&before, 1, 2000, 5, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_eq(lending_may_borrow(&after, 1, 2000, 5, &st), STATUS_OK);
}

static void count_visit(void *arg, const char *id) {
    (void)id;
    (*(int *)arg)++;
}

Test(renewals, the_reconciler_visits_a_renewal_left_unannounced_once_it_is_stale) {
    open_loans *index = open_loans_create();
    cr_assert_not_null(index);
    open_loan_facts facts = {.state = LOAN_ACTIVE, .update_time_ms = NOW_MS, .due_seconds = NOW_MS / 1000 + 86400,
                             .renewal_unpublished = true};
    cr_assert(open_loans_set_loan(index, "L1", &facts));
    int visited = 0;
    open_loans_due(index, NOW_MS + 1000, 10000, count_visit, &visited);
    cr_assert_eq(visited, 0, "a renewal in progress is the handler's");
    open_loans_due(index, NOW_MS + 10000, 10000, count_visit, &visited);
    cr_assert_eq(visited, 1);
    facts.renewal_unpublished = false;
    cr_assert(open_loans_set_loan(index, "L1", &facts));
    visited = 0;
    open_loans_due(index, NOW_MS + 60000, 10000, count_visit, &visited);
    cr_assert_eq(visited, 0, "announced: nothing to do until it is overdue");
    open_loans_destroy(index);
}
