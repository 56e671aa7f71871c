/* test_page.c - the mypage read model's plain functions: events to loan changes, and Redis
 * hash fields to a Mypage. */
#include <criterion/criterion.h>
#include <string.h>

#include "page.h"

#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define PENDING LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING
#define RETURNED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED

static arena *a;
static void setup(void) {
    a = arena_create(0);
}
static void teardown(void) {
    arena_destroy(a);
}
TestSuite(page, .init = setup, .fini = teardown);

Test(page, loan_events_become_changes_and_others_do_not) {
    Google__Protobuf__Timestamp when = GOOGLE__PROTOBUF__TIMESTAMP__INIT, due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    when.seconds = 1000;
    when.nanos = 500000000;
    due.seconds = 2000;
    Library__Events__V1__LoanRequested requested = LIBRARY__EVENTS__V1__LOAN_REQUESTED__INIT;
    requested.loan_id = "L1";
    requested.user_id = "alice";
    requested.book_id = "B1";
    requested.book_title = "Dune";
    requested.due_time = &due;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.occur_time = &when;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED;
    e.loan_requested = &requested;
    loan_change change;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert_str_eq(change.user_id, "alice");
    cr_assert_str_eq(change.loan_id, "L1");
    cr_assert_eq(change.status, PENDING);
    cr_assert_eq(change.rank, PAGE_RANK_PENDING);
    cr_assert_eq(change.due_seconds, 2000);
    cr_assert_eq(change.event_time_ms, 1000500);
    cr_assert_str_eq(change.book_title, "Dune");

    Library__Events__V1__LoanOverdue overdue = LIBRARY__EVENTS__V1__LOAN_OVERDUE__INIT;
    overdue.loan_id = "L1";
    overdue.user_id = "alice";
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE;
    e.loan_overdue = &overdue;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert(change.overdue);
    cr_assert_eq(change.rank, PAGE_RANK_ACTIVE);
    cr_assert_str_eq(change.book_title, "", "missing fields are empty, never NULL");

    overdue.user_id = "";
    cr_assert_not(page_change_from_event(&e, &change), "a loan event without a user is ignored");

    Library__Events__V1__CopyReserved reserved = LIBRARY__EVENTS__V1__COPY_RESERVED__INIT;
    reserved.loan_id = "L1";
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RESERVED;
    e.copy_reserved = &reserved;
    cr_assert_not(page_change_from_event(&e, &change), "catalog events are not about a page");
}

Test(page, a_page_is_built_newest_first_with_exact_counts) {
    const char *fields[] = {"t", "l:old", "l:new", "l:late", "l:broken", "l:back"};
    const char *values[] = {
        "1700000000123",
        "5|2|2|99999999999|0|B1|Title | with bars",
        "9|1|1|0|0|B2|",
        "7|2|2|100|0|B3|Late",     /* ACTIVE and past due at now = 1000 */
        "not a loan value",
        "3|3|3|100|1|B4|Returned", /* RETURNED: neither borrowed nor overdue */
    };
    Library__Mypage__V1__Mypage *page = page_build(a, "alice", fields, values, 6, 1000);
    cr_assert_not_null(page);
    cr_assert_str_eq(page->user_id, "alice");
    cr_assert_eq(page->n_loans, 4, "the unparsable value is skipped");
    cr_assert_str_eq(page->loans[0]->loan_id, "new");
    cr_assert_str_eq(page->loans[1]->loan_id, "late");
    cr_assert_str_eq(page->loans[2]->loan_id, "old");
    cr_assert_str_eq(page->loans[3]->loan_id, "back");
    cr_assert_str_eq(page->loans[2]->book_title, "Title | with bars");
    cr_assert_null(page->loans[0]->due_time, "no due time for a PENDING loan without one");
    cr_assert_eq(page->loans[3]->status, RETURNED);
    cr_assert_eq(page->borrowed_count, 2);
    cr_assert_eq(page->overdue_count, 1);
    cr_assert_eq(page->last_event_time->seconds, 1700000000);
    cr_assert_eq(page->last_event_time->nanos, 123000000);
}

Test(page, an_empty_hash_is_an_empty_page) {
    Library__Mypage__V1__Mypage *page = page_build(a, "bob", NULL, NULL, 0, 1000);
    cr_assert_not_null(page);
    cr_assert_eq(page->n_loans, 0);
    cr_assert_null(page->last_event_time);
}
