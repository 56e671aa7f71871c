/* test_page.c - the mypage read model's plain functions: events to loan changes, and Redis
 * hash fields to a Mypage. */
#include <criterion/criterion.h>
#include <string.h>

#include "page.h"
#include "retention.h"

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

#define WAITING LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING
#define READY LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY

Test(page, a_renewal_becomes_a_change_with_its_count_and_due_time) {
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    due.seconds = 5000;
    Library__Events__V1__LoanRenewed renewed = LIBRARY__EVENTS__V1__LOAN_RENEWED__INIT;
    renewed.loan_id = "L1";
    renewed.user_id = "alice";
    renewed.book_id = "B1";
    renewed.due_time = &due;
    renewed.renewal_count = 2;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED;
    e.loan_renewed = &renewed;
    loan_change change;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert_eq(change.status, ACTIVE);
    cr_assert_eq(change.rank, PAGE_RANK_ACTIVE);
    cr_assert_eq(change.renewal_count, 2);
    cr_assert_eq(change.due_seconds, 5000);
    cr_assert_not(change.overdue);
    renewed.renewal_count = 0;
    cr_assert_not(page_change_from_event(&e, &change), "a renewal without a count says nothing");

    Library__Events__V1__LoanOverdue overdue = LIBRARY__EVENTS__V1__LOAN_OVERDUE__INIT;
    overdue.loan_id = "L1";
    overdue.user_id = "alice";
    overdue.due_time = &due;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE;
    e.loan_overdue = &overdue;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert_eq(change.overdue_for_seconds, 5000, "the due time the announcement is about");
    due.seconds = INT64_MAX;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert_eq(change.overdue_for_seconds, 0, "a time outside the Timestamp range is none");
}

Test(page, a_renewed_loan_shows_the_newest_due_time_and_is_overdue_only_for_it) {
    const char *fields[] = {"l:renewed", "r:renewed", "l:late-again", "r:late-again", "l:never", "r:never",
                            "l:legacy", "r:broken", "l:broken"};
    const char *values[] = {
        /* announced overdue for its first due time (100), then renewed to 5000 */
        "1|2|2|100|1|B1|Renewed", "1|5000|100",
        /* renewed to 800, and that due time was announced as passed too */
        "2|2|2|100|1|B2|Late again", "1|800|800",
        /* never renewed, announced overdue */
        "3|2|2|100|1|B3|Never", "0|0|100",
        /* overdue from an older release: no "r:" field */
        "4|2|2|100|1|B4|Legacy",
        "garbage", "5|2|2|3000|0|B5|Broken renewal field",
    };
    Library__Mypage__V1__Mypage *page = page_build(a, "alice", fields, values, 9, 1000);
    cr_assert_not_null(page);
    cr_assert_eq(page->n_loans, 5);
    Library__Mypage__V1__MypageLoan *renewed = page->loans[4], *late = page->loans[3], *never = page->loans[2];
    cr_assert_str_eq(renewed->loan_id, "renewed");
    cr_assert_eq(renewed->renewal_count, 1);
    cr_assert_eq(renewed->due_time->seconds, 5000);
    cr_assert_str_eq(late->loan_id, "late-again");
    cr_assert_eq(late->due_time->seconds, 800);
    cr_assert_eq(never->renewal_count, 0);
    cr_assert_eq(never->due_time->seconds, 100);
    cr_assert_eq(page->loans[0]->renewal_count, 0, "an unparsable renewal field is skipped");
    cr_assert_eq(page->borrowed_count, 5);
    /* late-again (800 < now and announced), never, legacy: not the renewed one */
    cr_assert_eq(page->overdue_count, 3);
}

static event hold_event(Library__Events__V1__Event__BodyCase type) {
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = type;
    return e;
}

Test(page, hold_events_become_changes_with_their_queue_snapshots) {
    Google__Protobuf__Timestamp placed = GOOGLE__PROTOBUF__TIMESTAMP__INIT, expires = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    placed.seconds = 1000;
    expires.seconds = 9000;
    hold_change change;

    Library__Events__V1__HoldPlaced place = LIBRARY__EVENTS__V1__HOLD_PLACED__INIT;
    place.hold_id = "h1";
    place.user_id = "alice";
    place.book_id = "b1";
    place.book_title = "Dune";
    place.place_time = &placed;
    event e = hold_event(LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED);
    e.hold_placed = &place;
    cr_assert(page_hold_change_from_event(a, &e, &change));
    cr_assert_eq(change.status, WAITING);
    cr_assert_eq(change.rank, PAGE_HOLD_RANK_WAITING);
    cr_assert_eq(change.place_seconds, 1000);
    cr_assert_str_eq(change.book_title, "Dune");
    cr_assert_str_eq(change.queue_book_id, "", "HoldPlaced has no snapshot");

    char *ids[] = {"h0", "h1", "h2"};
    Library__Events__V1__HoldQueue queue = LIBRARY__EVENTS__V1__HOLD_QUEUE__INIT;
    queue.book_id = "b1";
    queue.version = 7;
    queue.hold_ids = ids;
    queue.n_hold_ids = 3;
    Library__Events__V1__HoldQueued queued = LIBRARY__EVENTS__V1__HOLD_QUEUED__INIT;
    queued.hold_id = "h1";
    queued.user_id = "alice";
    queued.book_id = "b1";
    queued.queue = &queue;
    e = hold_event(LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED);
    e.hold_queued = &queued;
    cr_assert(page_hold_change_from_event(a, &e, &change));
    cr_assert_eq(change.status, WAITING);
    cr_assert_str_eq(change.queue_book_id, "b1");
    cr_assert_eq(change.queue_version, 7);
    cr_assert_str_eq(change.queue_hold_ids, "h0|h1|h2");

    ids[2] = "h2|h9"; /* not an id: it would forge a place in the snapshot */
    cr_assert(page_hold_change_from_event(a, &e, &change));
    cr_assert_str_eq(change.queue_book_id, "", "a snapshot with a bad id is left out");
    queued.hold_id = "bad:id";
    cr_assert_not(page_hold_change_from_event(a, &e, &change), "a bad hold id is ignored");

    Library__Events__V1__HoldReady ready = LIBRARY__EVENTS__V1__HOLD_READY__INIT;
    ready.hold_id = "h1";
    ready.user_id = "alice";
    ready.book_id = "b1";
    ready.expire_time = &expires;
    e = hold_event(LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY);
    e.hold_ready = &ready;
    cr_assert(page_hold_change_from_event(a, &e, &change));
    cr_assert_eq(change.status, READY);
    cr_assert_eq(change.rank, PAGE_HOLD_RANK_READY);
    cr_assert_eq(change.expire_seconds, 9000);

    Library__Events__V1__HoldReleased released = LIBRARY__EVENTS__V1__HOLD_RELEASED__INIT;
    released.hold_id = "h1";
    released.user_id = "alice";
    e = hold_event(LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED);
    e.hold_released = &released;
    cr_assert(page_hold_change_from_event(a, &e, &change));
    cr_assert_eq(change.rank, PAGE_HOLD_RANK_FINAL);
    cr_assert_str_eq(change.book_id, "", "missing fields are empty, never NULL");

    Library__Events__V1__HoldFulfilled fulfilled = LIBRARY__EVENTS__V1__HOLD_FULFILLED__INIT;
    fulfilled.hold_id = "h1";
    e = hold_event(LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_FULFILLED);
    e.hold_fulfilled = &fulfilled;
    cr_assert_not(page_hold_change_from_event(a, &e, &change), "a hold event without a user is ignored");

    Library__Events__V1__LoanRenewed renewed = LIBRARY__EVENTS__V1__LOAN_RENEWED__INIT;
    e = hold_event(LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED);
    e.loan_renewed = &renewed;
    cr_assert_not(page_hold_change_from_event(a, &e, &change));
}

Test(page, open_holds_show_oldest_first_with_positions_from_the_snapshot) {
    const char *fields[] = {"h:late", "h:first", "h:ready", "h:gone", "h:unqueued", "q:b1", "q:b2"};
    const char *values[] = {
        "9|1|1|1500|0|b1|Dune",
        "4|1|1|1000|0|b2|Foundation | the first",
        "6|2|2|1200|9000|b1|Dune",
        "5|3|4|1100|0|b1|Dune",   /* canceled: not on the page */
        "8|1|1|1400|0|b3|Nobody queued it yet",
        "12|x0|late",             /* late is second in b1's queue */
        "3|first",
    };
    Library__Mypage__V1__Mypage *page = page_build(a, "alice", fields, values, 7, 1000);
    cr_assert_not_null(page);
    cr_assert_eq(page->n_holds, 4);
    cr_assert_str_eq(page->holds[0]->hold_id, "first");
    cr_assert_eq(page->holds[0]->position, 1);
    cr_assert_str_eq(page->holds[0]->book_title, "Foundation | the first");
    cr_assert_eq(page->holds[0]->place_time->seconds, 1000);
    cr_assert_null(page->holds[0]->expire_time);
    cr_assert_str_eq(page->holds[1]->hold_id, "ready");
    cr_assert_eq(page->holds[1]->status, READY);
    cr_assert_eq(page->holds[1]->position, 0, "a READY hold has no place in the queue");
    cr_assert_eq(page->holds[1]->expire_time->seconds, 9000);
    cr_assert_str_eq(page->holds[2]->hold_id, "unqueued");
    cr_assert_eq(page->holds[2]->position, 0, "no snapshot lists it yet");
    cr_assert_str_eq(page->holds[3]->hold_id, "late");
    cr_assert_eq(page->holds[3]->status, WAITING);
    cr_assert_eq(page->holds[3]->position, 2);
    cr_assert_eq(page->n_loans, 0);
}

/* --- the account (lending's fines) ----------------------------------------------------------- */

#define ACCRUING LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_ACCRUING
#define PAID LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_PAID

/* An account of user with the given fines (loan id, amount, paid), balance = what is unpaid. */
static Library__Lending__V1__Account *account_of(const char *user, size_t count, const char *const *loan_ids,
                                                 const int64_t *amounts, const int64_t *paid) {
    Library__Lending__V1__Account *account = (void *)arena_new_message(a, &library__lending__v1__account__descriptor);
    account->user_id = (char *)user;
    account->fines = arena_alloc(a, (count + 1) * sizeof *account->fines);
    account->n_fines = count;
    for (size_t i = 0; i < count; i++) {
        Library__Lending__V1__Fine *fine = (void *)arena_new_message(a, &library__lending__v1__fine__descriptor);
        fine->loan_id = (char *)loan_ids[i];
        fine->book_id = "b1";
        fine->book_title = "Dune";
        fine->amount = amounts[i];
        fine->paid = paid[i];
        fine->state = paid[i] == amounts[i] ? PAID : ACCRUING;
        account->balance += amounts[i] - paid[i];
        account->fines[i] = fine;
    }
    account->block_at = 500;
    return account;
}

static Library__Events__V1__AccountSnapshot *snapshot_of(uint64_t version, Library__Lending__V1__Account *account) {
    Library__Events__V1__AccountSnapshot *snapshot =
        (void *)arena_new_message(a, &library__events__v1__account_snapshot__descriptor);
    snapshot->version = version;
    snapshot->account = account;
    return snapshot;
}

Test(page, account_events_become_changes_with_the_whole_account) {
    Google__Protobuf__Timestamp when = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    when.seconds = 2000;
    Library__Events__V1__FineAssessed assessed = LIBRARY__EVENTS__V1__FINE_ASSESSED__INIT;
    assessed.user_id = "alice";
    assessed.loan_id = "l3";
    assessed.amount = 50;
    assessed.account = snapshot_of(7, account_of("alice", 3, (const char *[]){"l1", "bad|id", "l2"},
                                                 (int64_t[]){25, 40, 75}, (int64_t[]){25, 0, 0}));
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.occur_time = &when;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED;
    e.fine_assessed = &assessed;
    account_change change;
    cr_assert(page_account_change_from_event(a, &e, &change));
    cr_assert_str_eq(change.user_id, "alice");
    cr_assert_eq(change.version, 7);
    cr_assert_eq(change.event_time_ms, 2000000);
    cr_assert_str_eq(change.loan_fines, "l1|25|l2|75|l3|50",
                     "listed loans with server-made ids, then the assessed loan the list lacks");

    /* the account travels whole: "a" built from it gives it back */
    const char *fields[] = {"a"};
    const char *values[] = {arena_sprintf(a, "7|%s", change.account)};
    Library__Mypage__V1__Mypage *page = page_build(a, "alice", fields, values, 1, 1000);
    cr_assert_eq(page->balance, 115);
    cr_assert_eq(page->n_fines, 3, "the fine with a bad loan id is still the account's");
    cr_assert_str_eq(page->fines[2]->loan_id, "l2");
    cr_assert_str_eq(page->fines[2]->book_title, "Dune");
    cr_assert_eq(page->fines[0]->state, PAID);

    assessed.loan_id = "l2";
    cr_assert(page_account_change_from_event(a, &e, &change));
    cr_assert_str_eq(change.loan_fines, "l1|25|l2|75", "the snapshot's amount for a listed loan");

    assessed.account->account->user_id = "bob";
    cr_assert_not(page_account_change_from_event(a, &e, &change), "another user's account is not alice's");
    assessed.user_id = "";
    cr_assert(page_account_change_from_event(a, &e, &change));
    cr_assert_str_eq(change.user_id, "bob", "without a user in the event, the account's");

    Library__Events__V1__FinePaid paid = LIBRARY__EVENTS__V1__FINE_PAID__INIT;
    paid.user_id = "alice";
    paid.amount = 25;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID;
    e.fine_paid = &paid;
    cr_assert_not(page_account_change_from_event(a, &e, &change), "without a snapshot there is no version");
    paid.account = snapshot_of(8, account_of("alice", 0, NULL, NULL, NULL));
    cr_assert(page_account_change_from_event(a, &e, &change));
    cr_assert_eq(change.version, 8);
    cr_assert_str_eq(change.loan_fines, "");

    Library__Events__V1__FineWaived waived = LIBRARY__EVENTS__V1__FINE_WAIVED__INIT;
    waived.user_id = "alice";
    waived.loan_id = "l1";
    waived.account = snapshot_of(9, account_of("", 1, (const char *[]){"l1"}, (int64_t[]){-5}, (int64_t[]){0}));
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_FINE_WAIVED;
    e.fine_waived = &waived;
    cr_assert(page_account_change_from_event(a, &e, &change));
    cr_assert_str_eq(change.user_id, "alice");
    cr_assert_str_eq(change.loan_fines, "l1|0", "a negative amount is none");

    loan_change loan;
    hold_change hold;
    cr_assert_not(page_change_from_event(&e, &loan), "an account event is not a loan's");
    cr_assert_not(page_hold_change_from_event(a, &e, &hold), "nor a hold's");
    Library__Events__V1__LoanReturned returned = LIBRARY__EVENTS__V1__LOAN_RETURNED__INIT;
    returned.loan_id = "l1";
    returned.user_id = "alice";
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED;
    e.loan_returned = &returned;
    cr_assert_not(page_account_change_from_event(a, &e, &change), "a loan event is not an account's");
}

/* The "a" value of an account at a version, as the apply script stores it. */
static const char *account_value(uint64_t version, Library__Lending__V1__Account *account) {
    Library__Events__V1__FinePaid paid = LIBRARY__EVENTS__V1__FINE_PAID__INIT;
    paid.user_id = account->user_id;
    paid.account = snapshot_of(version, account);
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID;
    e.fine_paid = &paid;
    account_change change;
    cr_assert(page_account_change_from_event(a, &e, &change));
    return arena_sprintf(a, "%llu|%s", (unsigned long long)version, change.account);
}

Test(page, a_page_shows_the_balance_the_fines_and_each_loans_fine) {
    const char *fields[] = {"l:late", "l:paid", "l:clean", "a", "f:late", "f:paid", "f:gone", "f:broken", "l:broken"};
    const char *values[] = {
        "3|3|3|100|0|b1|Late",
        "2|3|3|100|0|b2|Paid",
        "1|2|2|99999999999|0|b3|Clean",
        account_value(4, account_of("alice", 2, (const char *[]){"late", "paid"}, (int64_t[]){75, 25},
                                    (int64_t[]){0, 25})),
        "4|75",
        "2|25",  /* an older snapshot listed it; the newest does not need to */
        "3|500", /* a fine of a loan the page does not show */
        "4|-5",
        "4|2|2|99999999999|0|b4|Broken fine field",
    };
    Library__Mypage__V1__Mypage *page = page_build(a, "alice", fields, values, 9, 1000);
    cr_assert_not_null(page);
    cr_assert_eq(page->balance, 75);
    cr_assert_eq(page->n_fines, 2);
    cr_assert_str_eq(page->fines[0]->loan_id, "late");
    cr_assert_eq(page->fines[0]->amount, 75);
    cr_assert_eq(page->fines[1]->state, PAID);
    cr_assert_eq(page->n_loans, 4);
    cr_assert_str_eq(page->loans[0]->loan_id, "broken");
    cr_assert_eq(page->loans[0]->fine, 0, "an unparsable fine field is skipped");
    cr_assert_str_eq(page->loans[1]->loan_id, "late");
    cr_assert_eq(page->loans[1]->fine, 75);
    cr_assert_eq(page->loans[2]->fine, 25);
    cr_assert_eq(page->loans[3]->fine, 0, "no fine: 0");

    const char *broken_fields[] = {"a", "l:late", "f:late"};
    const char *broken_values[] = {"4|not base64 !", "3|3|3|100|0|b1|Late", "1|30"};
    page = page_build(a, "alice", broken_fields, broken_values, 3, 1000);
    cr_assert_not_null(page);
    cr_assert_eq(page->balance, 0, "an unparsable account is none");
    cr_assert_eq(page->n_fines, 0);
    cr_assert_eq(page->loans[0]->fine, 30, "the loan's own fine field still counts");

    Library__Lending__V1__Account *negative = account_of("alice", 0, NULL, NULL, NULL);
    negative->balance = -10;
    const char *negative_fields[] = {"a"};
    const char *negative_values[] = {account_value(1, negative)};
    cr_assert_eq(page_build(a, "alice", negative_fields, negative_values, 1, 1000)->balance, 0,
                 "a balance is never negative");
}

/* --- retention: a settled loan's final event alone makes its page entry ---------------------- */

#define CANCELED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED

static Google__Protobuf__Timestamp *at_seconds(int64_t seconds) {
    Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof *t);
    google__protobuf__timestamp__init(t);
    t->seconds = seconds;
    return t;
}

/* A loan borrowed with due time 1000, renewed twice (to 2000, then 3000), then returned. */
static event story_event(int step, const char *returned_title, Google__Protobuf__Timestamp *returned_due,
                         int32_t returned_renewals) {
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.occur_time = at_seconds(100 + step);
    if (step == 0) {
        Library__Events__V1__LoanRequested *b = arena_alloc(a, sizeof *b);
        library__events__v1__loan_requested__init(b);
        *b = (Library__Events__V1__LoanRequested){.base = b->base, .loan_id = "L1", .user_id = "alice",
                                                  .book_id = "B1", .book_title = "Dune", .due_time = at_seconds(1000)};
        e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED;
        e.loan_requested = b;
    } else if (step == 1) {
        Library__Events__V1__LoanActivated *b = arena_alloc(a, sizeof *b);
        library__events__v1__loan_activated__init(b);
        *b = (Library__Events__V1__LoanActivated){.base = b->base, .loan_id = "L1", .user_id = "alice",
                                                  .book_id = "B1", .book_title = "Dune", .due_time = at_seconds(1000)};
        e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED;
        e.loan_activated = b;
    } else if (step == 2 || step == 3) {
        Library__Events__V1__LoanRenewed *b = arena_alloc(a, sizeof *b);
        library__events__v1__loan_renewed__init(b);
        *b = (Library__Events__V1__LoanRenewed){.base = b->base, .loan_id = "L1", .user_id = "alice",
                                                .book_id = "B1", .due_time = at_seconds(1000 * step),
                                                .renewal_count = step - 1};
        e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED;
        e.loan_renewed = b;
    } else {
        Library__Events__V1__LoanReturned *b = arena_alloc(a, sizeof *b);
        library__events__v1__loan_returned__init(b);
        *b = (Library__Events__V1__LoanReturned){.base = b->base, .loan_id = "L1", .user_id = "alice",
                                                 .book_id = "B1", .return_time = at_seconds(104),
                                                 .book_title = (char *)returned_title, .due_time = returned_due,
                                                 .renewal_count = returned_renewals};
        e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED;
        e.loan_returned = b;
    }
    return e;
}

/* What the page shows of a loan after the changes, folded by page.h's rules: the furthest rank's
 * status, the first title and book id, the due time of the furthest rank that has one, and the
 * highest renewal count with its due time (the same rules page_store.c's scripts follow). */
typedef struct shown_loan {
    int rank, status;
    const char *book_id, *title;
    int64_t due, renewed_due;
    int32_t renewals;
} shown_loan;

static void fold(shown_loan *shown, const loan_change *c) {
    if (c->rank > shown->rank) {
        shown->rank = c->rank;
        shown->status = c->status;
        if (c->due_seconds > 0 && c->renewal_count == 0)
            shown->due = c->due_seconds;
    }
    if (shown->due == 0 && c->due_seconds > 0 && c->renewal_count == 0)
        shown->due = c->due_seconds;
    if (shown->book_id[0] == '\0')
        shown->book_id = c->book_id;
    if (shown->title[0] == '\0')
        shown->title = c->book_title;
    if (c->renewal_count > shown->renewals) {
        shown->renewals = c->renewal_count;
        shown->renewed_due = c->due_seconds;
    }
}

static int64_t shown_due(const shown_loan *shown) {
    return shown->renewals > 0 ? shown->renewed_due : shown->due;
}

Test(page, a_loan_returned_alone_shows_what_the_whole_loan_shows) {
    shown_loan whole = {.book_id = "", .title = ""}, alone = {.book_id = "", .title = ""};
    loan_change change;
    for (int step = 0; step <= 4; step++) {
        event e = story_event(step, "Dune", at_seconds(3000), 2);
        cr_assert(page_change_from_event(&e, &change), "step %d", step);
        fold(&whole, &change);
    }
    event returned = story_event(4, "Dune", at_seconds(3000), 2);
    cr_assert(page_change_from_event(&returned, &change));
    cr_assert_eq(change.status, RETURNED);
    cr_assert_eq(change.rank, PAGE_RANK_FINAL);
    cr_assert_str_eq(change.book_title, "Dune");
    cr_assert_eq(change.due_seconds, 3000, "the due time after the renewals");
    cr_assert_eq(change.renewal_count, 2);
    cr_assert_eq(change.event_time_ms, 104000, "the settle time retention counts from");
    fold(&alone, &change);
    cr_assert_eq(alone.status, whole.status);
    cr_assert_str_eq(alone.book_id, whole.book_id);
    cr_assert_str_eq(alone.title, whole.title);
    cr_assert_eq(alone.renewals, whole.renewals);
    cr_assert_eq(shown_due(&alone), shown_due(&whole));
    cr_assert_eq(shown_due(&whole), 3000);

    /* the page's own fields, as the scripts write them, build the same MypageLoan */
    const char *whole_fields[] = {"l:L1", "r:L1"}, *whole_values[] = {"7|3|3|3000|0|B1|Dune", "2|3000|0"};
    const char *alone_fields[] = {"l:L1", "r:L1"}, *alone_values[] = {"11|3|3|3000|0|B1|Dune", "2|3000|0"};
    Library__Mypage__V1__Mypage *from_whole = page_build(a, "alice", whole_fields, whole_values, 2, 5000);
    Library__Mypage__V1__Mypage *from_alone = page_build(a, "alice", alone_fields, alone_values, 2, 5000);
    cr_assert_eq(from_whole->n_loans, 1);
    cr_assert_eq(from_alone->n_loans, 1);
    size_t size = library__mypage__v1__mypage__get_packed_size(from_whole);
    cr_assert_eq(size, library__mypage__v1__mypage__get_packed_size(from_alone));
    uint8_t *x = arena_alloc(a, size), *y = arena_alloc(a, size);
    library__mypage__v1__mypage__pack(from_whole, x);
    library__mypage__v1__mypage__pack(from_alone, y);
    cr_assert_eq(memcmp(x, y, size), 0, "the same page, byte for byte");
}

Test(page, an_old_final_event_without_the_new_fields_keeps_what_earlier_events_said) {
    shown_loan shown = {.book_id = "", .title = ""};
    loan_change change;
    for (int step = 0; step <= 3; step++) {
        event e = story_event(step, "", NULL, 0);
        cr_assert(page_change_from_event(&e, &change));
        fold(&shown, &change);
    }
    event returned = story_event(4, "", NULL, 0); /* as lending published it before 8846abf */
    cr_assert(page_change_from_event(&returned, &change));
    cr_assert_str_eq(change.book_title, "", "nothing to say, so nothing to wipe");
    cr_assert_eq(change.due_seconds, 0);
    cr_assert_eq(change.renewal_count, 0);
    fold(&shown, &change);
    cr_assert_eq(shown.status, RETURNED);
    cr_assert_str_eq(shown.title, "Dune");
    cr_assert_eq(shown_due(&shown), 3000);
    cr_assert_eq(shown.renewals, 2);

    /* a count without a due time is not a renewal a page could show */
    event odd = story_event(4, "Dune", NULL, 2);
    cr_assert(page_change_from_event(&odd, &change));
    cr_assert_eq(change.renewal_count, 0);

    Library__Events__V1__LoanCanceled canceled = LIBRARY__EVENTS__V1__LOAN_CANCELED__INIT;
    canceled.loan_id = "L2";
    canceled.user_id = "alice";
    canceled.book_id = "B2";
    canceled.book_title = "Emma";
    canceled.due_time = at_seconds(1500);
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED;
    e.loan_canceled = &canceled;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert_eq(change.status, CANCELED);
    cr_assert_eq(change.due_seconds, 1500, "a canceled loan's due time comes with it");
    cr_assert_str_eq(change.book_title, "Emma");
}

Test(page, the_sweep_runs_every_tenth_of_the_retention_between_one_second_and_one_minute) {
    cr_assert_eq(retention_sweep_interval_ms(3000), 1000, "RETENTION=3s: every second");
    cr_assert_eq(retention_sweep_interval_ms(5 * 60 * 1000), 30000);
    cr_assert_eq(retention_sweep_interval_ms(365LL * 24 * 60 * 60 * 1000), 60000, "the default: every minute");
    cr_assert_eq(retention_sweep_interval_ms(1), 1000);
}

/* --- the page's own order, and its time -------------------------------------------------------- */

Test(page, every_loan_and_hold_event_carries_the_items_own_order_time) {
    Google__Protobuf__Timestamp borrowed = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Google__Protobuf__Timestamp placed = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    borrowed.seconds = 1700000000;
    borrowed.nanos = 250000000;
    placed.seconds = 1700000100;
    placed.nanos = 7000000;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    loan_change change;
    Library__Events__V1__LoanActivated activated = LIBRARY__EVENTS__V1__LOAN_ACTIVATED__INIT;
    activated.loan_id = "L1";
    activated.user_id = "alice";
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED;
    e.loan_activated = &activated;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert_eq(change.order_ms, 0, "an event from before the borrow time was carried has none");
    activated.borrow_time = &borrowed;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert_eq(change.order_ms, 1700000000250LL);
    Library__Events__V1__LoanReturned returned = LIBRARY__EVENTS__V1__LOAN_RETURNED__INIT;
    returned.loan_id = "L1";
    returned.user_id = "alice";
    returned.borrow_time = &borrowed;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED;
    e.loan_returned = &returned;
    cr_assert(page_change_from_event(&e, &change));
    cr_assert_eq(change.order_ms, 1700000000250LL, "the final event carries it too");

    hold_change hold;
    Library__Events__V1__HoldQueued queued = LIBRARY__EVENTS__V1__HOLD_QUEUED__INIT;
    queued.hold_id = "h1";
    queued.user_id = "alice";
    queued.book_id = "b1";
    queued.place_time = &placed;
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED;
    e.hold_queued = &queued;
    cr_assert(page_hold_change_from_event(a, &e, &hold));
    cr_assert_eq(hold.order_ms, 1700000100007LL, "the catalog's answer carries the place time");
    Library__Events__V1__HoldReady ready = LIBRARY__EVENTS__V1__HOLD_READY__INIT;
    ready.hold_id = "h1";
    ready.user_id = "alice";
    ready.book_id = "b1";
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY;
    e.hold_ready = &ready;
    cr_assert(page_hold_change_from_event(a, &e, &hold));
    cr_assert_eq(hold.order_ms, 0);
}

/* What a live page holds, and what a rebuild from a trimmed stream holds for the same loans: the
 * first stream sequences differ (the rebuild saw the old loan's announcement, after the newer
 * loan's first event), the borrow times do not. Both give the same list. */
Test(page, loans_and_holds_go_by_their_own_times_not_the_stream_sequence) {
    const char *live_fields[] = {"t", "l:kept", "b:kept", "l:newer", "b:newer", "h:h-old", "p:h-old", "h:h-new",
                                 "p:h-new"};
    const char *live_values[] = {"1700000009000", "3|2|2|99999999999|0|B1|Kept", "1700000000000",
                                 "20|2|2|99999999999|0|B2|Newer", "1700000005000", "4|1|1|1700000001|0|B3|Old hold",
                                 "1700000001000", "21|1|1|1700000006|0|B4|New hold", "1700000006000"};
    const char *rebuilt_values[] = {"1700000009000", "90|2|2|99999999999|0|B1|Kept", "1700000000000",
                                    "20|2|2|99999999999|0|B2|Newer", "1700000005000",
                                    "91|1|1|1700000001|0|B3|Old hold", "1700000001000",
                                    "21|1|1|1700000006|0|B4|New hold", "1700000006000"};
    for (int pass = 0; pass < 2; pass++) {
        Library__Mypage__V1__Mypage *page = page_build(a, "alice", live_fields, pass ? rebuilt_values : live_values,
                                                       9, 1000);
        cr_assert_eq(page->n_loans, 2);
        cr_assert_str_eq(page->loans[0]->loan_id, "newer", "pass %d: the loan borrowed last comes first", pass);
        cr_assert_str_eq(page->loans[1]->loan_id, "kept");
        cr_assert_eq(page->n_holds, 2);
        cr_assert_str_eq(page->holds[0]->hold_id, "h-old", "pass %d: the hold placed first comes first", pass);
        cr_assert_str_eq(page->holds[1]->hold_id, "h-new");
    }
}

Test(page, without_an_order_time_the_old_rule_holds_and_a_tie_goes_by_id) {
    /* "ancient" and "older" have no borrow time (events from before it was carried): after
     * every loan with one, by sequence; "a" and "b" were borrowed in the same ms: by id (newest
     * first is oldest first reversed, ties included) */
    const char *fields[] = {"l:ancient", "l:older", "l:b", "b:b", "l:a", "b:a", "b:gone", "b:bad", "l:bad"};
    const char *values[] = {"1|2|2|0|0|B|T", "2|2|2|0|0|B|T", "3|2|2|0|0|B|T", "1700000000000",
                            "4|2|2|0|0|B|T", "1700000000000", "1600000000000", "not a time", "5|2|2|0|0|B|T"};
    Library__Mypage__V1__Mypage *page = page_build(a, "alice", fields, values, 9, 1000);
    cr_assert_eq(page->n_loans, 5);
    const char *want[] = {"b", "a", "bad", "older", "ancient"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(page->loans[i]->loan_id, want[i], "loan %zu", i);

    const char *hold_fields[] = {"h:new", "p:new", "h:legacy", "h:z", "p:z", "h:y", "p:y"};
    const char *hold_values[] = {"1|1|1|0|0|B|T", "1700000002000", "9|1|1|0|0|B|T", "2|1|1|0|0|B|T",
                                 "1700000001000", "3|1|1|0|0|B|T", "1700000001000"};
    page = page_build(a, "alice", hold_fields, hold_values, 7, 1000);
    cr_assert_eq(page->n_holds, 4);
    const char *holds[] = {"legacy", "y", "z", "new"};
    for (size_t i = 0; i < 4; i++)
        cr_assert_str_eq(page->holds[i]->hold_id, holds[i], "hold %zu", i);
}

Test(page, a_page_that_shows_nothing_has_no_time_as_a_user_without_a_page) {
    /* every loan left by retention (marks stay), a settled hold, an account with nothing owed */
    const char *fields[] = {"t", "x:L1", "h:H1", "p:H1"};
    const char *values[] = {"1700000000123", "1700000000000", "1|3|4|1700000000|0|B|T", "1700000000000"};
    Library__Mypage__V1__Mypage *page = page_build(a, "alice", fields, values, 4, 1000);
    cr_assert_eq(page->n_loans, 0);
    cr_assert_eq(page->n_holds, 0);
    cr_assert_null(page->last_event_time, "a page that shows nothing told when its user last did something");

    /* an open hold alone is something: the time shows */
    const char *open_fields[] = {"t", "h:H2"};
    const char *open_values[] = {"1700000000123", "2|1|1|1700000000|0|B|T"};
    page = page_build(a, "alice", open_fields, open_values, 2, 1000);
    cr_assert_eq(page->n_holds, 1);
    cr_assert_not_null(page->last_event_time);
    cr_assert_eq(page->last_event_time->seconds, 1700000000);
}
