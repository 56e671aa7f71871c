/* test_open_loans.c - the reconciler's index of open loans: what it keeps, what it forgets,
 * and which loans and user records a round visits. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "open_loans.h"

#define AFTER_MS 10000

typedef struct visits {
    size_t count;
    char ids[64][40];
    size_t loan_counts[64];
} visits;

static void remember(void *arg, const char *id) {
    visits *v = arg;
    if (v->count < 64)
        snprintf(v->ids[v->count++], sizeof v->ids[0], "%s", id);
}

static void remember_user(void *arg, const char *user_key, const char *const *loan_ids, size_t count) {
    visits *v = arg;
    (void)loan_ids;
    if (v->count < 64) {
        v->loan_counts[v->count] = count;
        snprintf(v->ids[v->count++], sizeof v->ids[0], "%s:%s", user_key, count ? loan_ids[0] : "");
    }
}

static open_loans *index_;
static void setup(void) {
    index_ = open_loans_create();
    cr_assert_not_null(index_);
}
static void teardown(void) {
    open_loans_destroy(index_);
}
TestSuite(open_loans, .init = setup, .fini = teardown);

static void set(const char *id, loan_state state, int64_t updated_ms, int64_t due_s, bool overdue, bool released) {
    open_loan_facts facts = {.state = state, .update_time_ms = updated_ms, .due_seconds = due_s,
                             .overdue_published = overdue, .release_confirmed = released};
    cr_assert(open_loans_set_loan(index_, id, &facts));
}

Test(open_loans, settled_loans_leave_the_index_and_open_ones_stay) {
    set("pending", LOAN_PENDING, 0, 0, false, false);
    set("active", LOAN_ACTIVE, 0, 100, false, false);
    set("returning", LOAN_RETURNED, 0, 100, false, false);
    set("canceled", LOAN_CANCELED, 0, 0, false, false);
    set("returned", LOAN_RETURNED, 0, 100, false, true);
    cr_assert_eq(open_loans_loan_count(index_), 3);

    set("pending", LOAN_CANCELED, 1, 0, false, false);    /* out of stock */
    set("returning", LOAN_RETURNED, 1, 100, false, true); /* the catalog confirmed */
    cr_assert(open_loans_set_loan(index_, "active", NULL)); /* deleted */
    cr_assert_eq(open_loans_loan_count(index_), 0);
}

Test(open_loans, a_round_visits_only_loans_with_a_step_to_redo) {
    int64_t now = 1000000000; /* ms */
    set("fresh-pending", LOAN_PENDING, now - 1, 0, false, false);
    set("stale-pending", LOAN_PENDING, now - AFTER_MS, 0, false, false);
    set("fresh-return", LOAN_RETURNED, now - 1, 1, false, false);
    set("stale-return", LOAN_RETURNED, now - AFTER_MS - 1, 1, false, false);
    set("not-due", LOAN_ACTIVE, 0, now / 1000 + 60, false, false);
    set("overdue", LOAN_ACTIVE, 0, now / 1000 - 1, false, false);
    set("overdue-told", LOAN_ACTIVE, 0, now / 1000 - 1, true, false);
    visits v = {0};
    cr_assert_eq(open_loans_due(index_, now, AFTER_MS, remember, &v), 3);
    const char *expected[] = {"stale-pending", "stale-return", "overdue"};
    for (size_t i = 0; i < 3; i++) {
        bool found = false;
        for (size_t j = 0; j < v.count; j++)
            found = found || strcmp(v.ids[j], expected[i]) == 0;
        cr_assert(found, "%s was not visited", expected[i]);
    }
}

Test(open_loans, a_user_record_is_visited_only_after_its_stray_loan_stayed_stray) {
    const char *ids[] = {"L1", "L2"};
    cr_assert(open_loans_set_user(index_, "dXNlcg", ids, 2));
    set("L1", LOAN_ACTIVE, 0, 0, false, false);
    /* L2 is not stored (yet): a borrow in progress, or one a crash cut short */
    visits v = {0};
    cr_assert_eq(open_loans_users_due(index_, 1000, AFTER_MS, remember_user, &v), 0);
    cr_assert_eq(open_loans_users_due(index_, 1000 + AFTER_MS - 1, AFTER_MS, remember_user, &v), 0);
    cr_assert_eq(open_loans_users_due(index_, 1000 + AFTER_MS, AFTER_MS, remember_user, &v), 1);
    cr_assert_str_eq(v.ids[0], "dXNlcg:L2");
    cr_assert_eq(v.loan_counts[0], 1, "only the stray loan is named");
}

Test(open_loans, a_borrow_that_completes_in_the_grace_is_left_alone) {
    const char *ids[] = {"L1"};
    cr_assert(open_loans_set_user(index_, "u", ids, 1));
    visits v = {0};
    cr_assert_eq(open_loans_users_due(index_, 1000, AFTER_MS, remember_user, &v), 0);
    set("L1", LOAN_PENDING, 1000, 0, false, false); /* the loan record lands */
    cr_assert_eq(open_loans_users_due(index_, 2000, AFTER_MS, remember_user, &v), 0);
    /* canceled later: stray again, and the grace starts over */
    set("L1", LOAN_CANCELED, 3000, 0, false, false);
    cr_assert_eq(open_loans_users_due(index_, 4000, AFTER_MS, remember_user, &v), 0);
    cr_assert_eq(open_loans_users_due(index_, 4000 + AFTER_MS, AFTER_MS, remember_user, &v), 1);
}

Test(open_loans, a_rewritten_user_record_keeps_the_stray_time_of_loans_it_still_lists) {
    const char *first[] = {"old"};
    cr_assert(open_loans_set_user(index_, "u", first, 1));
    visits v = {0};
    open_loans_users_due(index_, 1000, AFTER_MS, remember_user, &v);
    const char *second[] = {"new", "old"}; /* the user borrowed again */
    set("new", LOAN_PENDING, 2000, 0, false, false);
    cr_assert(open_loans_set_user(index_, "u", second, 2));
    cr_assert_eq(open_loans_users_due(index_, 1000 + AFTER_MS, AFTER_MS, remember_user, &v), 1);
    cr_assert_str_eq(v.ids[0], "u:old");
    cr_assert(open_loans_set_user(index_, "u", NULL, 0));
    cr_assert_eq(open_loans_user_count(index_), 0);
}

Test(open_loans, many_loans_are_kept_found_and_forgotten) {
    char id[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(id, sizeof id, "loan-%d", i);
        set(id, i % 2 ? LOAN_ACTIVE : LOAN_PENDING, 0, 0, false, false);
    }
    cr_assert_eq(open_loans_loan_count(index_), 100000);
    for (int i = 0; i < 100000; i += 2) {
        snprintf(id, sizeof id, "loan-%d", i);
        set(id, LOAN_CANCELED, 1, 0, false, false);
    }
    cr_assert_eq(open_loans_loan_count(index_), 50000);
    visits v = {0};
    cr_assert_eq(open_loans_due(index_, AFTER_MS, AFTER_MS, remember, &v), 0, "ACTIVE loans without a due time");
    open_loans_clear(index_);
    cr_assert_eq(open_loans_loan_count(index_), 0);
}
