/* test_user_record.c - the rules of a user's record: slots for open loans (the limit and the
 * overdue block), replays of a retried borrow, loans settling, and the history kept. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "fines.h"
#include "id_filter.h"
#include "user_record.h"

static arena *a;

static void setup(void) {
    a = arena_create(0);
}

static void teardown(void) {
    arena_destroy(a);
}

TestSuite(user_record, .init = setup, .fini = teardown);

static user_record *empty_record(void) {
    return (user_record *)arena_new_message(a, &library__lending__internal__user_record__descriptor);
}

static status_code add(user_record *record, const char *loan_id, int64_t due, int max_active, bool *replay,
                       status *st) {
    user_borrow borrow = {.loan_id = arena_strdup(a, loan_id), .book_id = "book-1", .due_seconds = due,
                          .now_seconds = 1000, .max_active = max_active};
    bool changed = false, need_archive = false;
    status_code code = user_record_add_borrow(a, record, &borrow, replay, &need_archive, &changed, st);
    cr_assert_not(need_archive, "a record without an older history never asks for it");
    cr_assert_eq(changed, code == STATUS_OK && !*replay, "changed says whether the record must be stored");
    return code;
}

Test(user_record, a_borrow_takes_a_pending_slot_and_enters_the_history) {
    user_record *record = empty_record();
    bool replay = true;
    status st;
    cr_assert_eq(add(record, "loan-a", 5000, 5, &replay, &st), STATUS_OK, "%s", st.message);
    cr_assert_not(replay);
    const user_open_loan *open = user_record_open_entry(record, "loan-a");
    cr_assert_not_null(open);
    cr_assert_eq(open->status, LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING);
    cr_assert_eq(open->due_time, 5000);
    cr_assert_str_eq(open->book_id, "book-1");
    cr_assert_str_eq(user_record_history_from_newest(record, 0), "loan-a");
    cr_assert_null(user_record_history_from_newest(record, 1));
}

Test(user_record, the_open_entry_carries_the_title_and_the_loans_fine_terms) {
    user_record *record = empty_record();
    Library__Lending__Internal__FineTerms terms = LIBRARY__LENDING__INTERNAL__FINE_TERMS__INIT;
    terms.per_interval = 25, terms.interval_seconds = 86400, terms.max_per_loan = 1000;
    user_borrow borrow = {.loan_id = "loan-a", .book_id = "book-1", .book_title = "Dune", .fine_terms = &terms,
                          .due_seconds = 5000, .now_seconds = 1000, .max_active = 5};
    bool replay = false, changed = false, need_archive = false;
    status st;
    cr_assert_eq(user_record_add_borrow(a, record, &borrow, &replay, &need_archive, &changed, &st), STATUS_OK, "%s",
                 st.message);
    const user_open_loan *open = user_record_open_entry(record, "loan-a");
    cr_assert_str_eq(open->book_title, "Dune");
    cr_assert_eq(open->fine_terms->per_interval, 25);
    cr_assert_eq(open->fine_terms->interval_seconds, 86400);
    cr_assert_eq(open->fine_terms->max_per_loan, 1000);
    /* as stored and read back */
    size_t size = protobuf_c_message_get_packed_size(&record->base);
    uint8_t *packed = arena_alloc(a, size);
    protobuf_c_message_pack(&record->base, packed);
    user_record *read = (user_record *)arena_unpack(a, &library__lending__internal__user_record__descriptor,
                                                    packed, size);
    cr_assert_not_null(read);
    cr_assert_str_eq(read->open_loans[0]->book_title, "Dune");
    cr_assert_eq(read->open_loans[0]->fine_terms->max_per_loan, 1000);
}

Test(user_record, a_retried_borrow_is_a_replay_whether_open_or_settled) {
    user_record *record = empty_record();
    bool replay = false;
    status st;
    add(record, "loan-a", 5000, 1, &replay, &st);
    cr_assert_eq(add(record, "loan-a", 5000, 1, &replay, &st), STATUS_OK, "a replay is not checked against the limit");
    cr_assert(replay);
    cr_assert_eq(record->n_open_loans, 1, "no second slot");
    cr_assert(user_record_follow(record, "loan-a", LOAN_RETURNED));
    cr_assert_eq(add(record, "loan-a", 5000, 1, &replay, &st), STATUS_OK);
    cr_assert(replay, "a settled loan still in the history is a replay, not a new borrow");
    cr_assert_eq(record->n_open_loans, 0);
    cr_assert_eq(record->n_history, 1);
}

Test(user_record, every_open_loan_counts_against_the_limit) {
    user_record *record = empty_record();
    bool replay;
    status st;
    cr_assert_eq(add(record, "loan-a", 5000, 2, &replay, &st), STATUS_OK);
    cr_assert_eq(add(record, "loan-b", 5000, 2, &replay, &st), STATUS_OK);
    user_record_follow(record, "loan-a", LOAN_ACTIVE); /* PENDING and ACTIVE both hold a slot */
    cr_assert_eq(add(record, "loan-c", 5000, 2, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "LOAN_LIMIT");
    cr_assert_null(user_record_open_entry(record, "loan-c"), "a refused borrow leaves no trace");
    cr_assert_eq(record->n_history, 2);
    user_record_follow(record, "loan-b", LOAN_CANCELED);
    cr_assert_eq(add(record, "loan-c", 5000, 2, &replay, &st), STATUS_OK, "a canceled loan frees its slot");
}

Test(user_record, an_overdue_active_loan_blocks_borrowing) {
    user_record *record = empty_record();
    bool replay;
    status st;
    cr_assert_eq(add(record, "late", 999, 5, &replay, &st), STATUS_OK, "PENDING past due does not block");
    user_record_follow(record, "late", LOAN_ACTIVE);
    cr_assert_eq(add(record, "next", 5000, 5, &replay, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "OVERDUE_LOANS");
    user_record_follow(record, "late", LOAN_RETURNED);
    cr_assert_eq(add(record, "next", 5000, 5, &replay, &st), STATUS_OK, "returning the late loan lifts the block");
}

Test(user_record, following_a_loan_changes_only_what_differs) {
    user_record *record = empty_record();
    bool replay;
    status st;
    add(record, "loan-a", 5000, 5, &replay, &st);
    add(record, "loan-b", 5000, 5, &replay, &st);
    cr_assert(user_record_follow(record, "loan-a", LOAN_ACTIVE));
    cr_assert_not(user_record_follow(record, "loan-a", LOAN_ACTIVE), "the same state again changes nothing");
    cr_assert_not(user_record_follow(record, "unknown", LOAN_RETURNED), "a loan the record does not hold");
    cr_assert(user_record_follow(record, "loan-a", LOAN_RETURNED));
    cr_assert_null(user_record_open_entry(record, "loan-a"));
    cr_assert_not_null(user_record_open_entry(record, "loan-b"), "the other loan keeps its slot");
    cr_assert_eq(record->n_history, 2, "settling leaves the history alone");
}

Test(user_record, the_history_keeps_the_newest_thousand) {
    user_record *record = empty_record();
    bool replay;
    status st;
    char id[32];
    for (int i = 0; i < USER_HISTORY_KEPT + 5; i++) {
        snprintf(id, sizeof id, "loan-%04d", i);
        cr_assert_eq(add(record, id, 5000, 5, &replay, &st), STATUS_OK, "borrow %d: %s", i, st.message);
        user_record_follow(record, id, LOAN_RETURNED);
    }
    cr_assert_eq(record->n_history, USER_HISTORY_KEPT);
    snprintf(id, sizeof id, "loan-%04d", USER_HISTORY_KEPT + 4);
    cr_assert_str_eq(user_record_history_from_newest(record, 0), id);
    cr_assert_str_eq(user_record_history_from_newest(record, USER_HISTORY_KEPT - 1), "loan-0005",
                     "the five oldest fell off");
    cr_assert_null(user_record_history_from_newest(record, USER_HISTORY_KEPT));
    cr_assert_eq(add(record, "loan-0000", 5000, 5, &replay, &st), STATUS_OK);
    cr_assert_not(replay, "a loan id that fell off the history is no longer recognised as a replay");
}

/* --- the older history (UserHistory) -------------------------------------------------------- */

/* A borrow as BorrowBook takes it: again with the older history when the record asks. */
static status_code borrow_with_archive(user_record *record, const user_history *archive, uint64_t revision,
                                       const char *loan_id, bool *replay, status *st) {
    user_borrow borrow = {.loan_id = arena_strdup(a, loan_id), .book_id = "book-1", .due_seconds = 5000,
                          .now_seconds = 1000, .max_active = 5};
    bool changed = false, need_archive = false;
    status_code code = user_record_add_borrow(a, record, &borrow, replay, &need_archive, &changed, st);
    if (code == STATUS_OK && need_archive) {
        cr_assert_not(changed, "nothing changes before the older history is read");
        borrow.archive = archive;
        borrow.archive_revision = revision;
        code = user_record_add_borrow(a, record, &borrow, replay, &need_archive, &changed, st);
        cr_assert_not(need_archive);
    }
    return code;
}

/* The record's window of the list: its loan history or its hold history. */
static char *const *window_of(const user_record *record, user_list list, size_t *count) {
    *count = list == USER_LOANS ? record->n_history : record->n_hold_history;
    return list == USER_LOANS ? record->history : record->hold_history;
}

/* What BorrowBook (USER_LOANS) or PlaceHold (USER_HOLDS) does once the window is full: the
 * archive first, then the record drops. */
static void move_older_of(user_record *record, user_list list, user_history *archive, uint64_t *revision) {
    bool changed = false;
    size_t count = 0;
    char *const *window = window_of(record, list, &count);
    cr_assert(user_history_merge(a, archive, list, window, count, &changed));
    if (changed)
        (*revision)++;
    cr_assert(user_record_drop_archived(a, record, list, archive, *revision, &changed));
}

static char **whole_list(const user_record *record, user_list list, const user_history *archive, size_t *count) {
    size_t window_count = 0;
    char *const *window = window_of(record, list, &window_count);
    char **all = NULL;
    cr_assert(user_history_join(a, archive, list, window, window_count, &all, count));
    return all;
}

static void move_older(user_record *record, user_history *archive, uint64_t *revision) {
    move_older_of(record, USER_LOANS, archive, revision);
}

static char **whole_history(const user_record *record, const user_history *archive, size_t *count) {
    return whole_list(record, USER_LOANS, archive, count);
}

Test(user_record, the_history_split_in_two_keeps_the_newest_thousand_and_knows_every_replay) {
    user_record *record = empty_record();
    user_history *archive = (void *)arena_new_message(a, &library__lending__internal__user_history__descriptor);
    uint64_t revision = 0;
    bool replay;
    status st;
    char id[32];
    enum { BORROWS = USER_HISTORY_KEPT + USER_HISTORY_HOT_MAX + 5 };
    for (int i = 0; i < BORROWS; i++) {
        snprintf(id, sizeof id, "loan-%04d", i);
        cr_assert_eq(borrow_with_archive(record, archive, revision, id, &replay, &st), STATUS_OK, "%s", st.message);
        cr_assert_not(replay, "borrow %d", i);
        user_record_follow(record, id, LOAN_RETURNED);
        if (user_record_history_full(record, USER_LOANS))
            move_older(record, archive, &revision);
        cr_assert_leq(record->n_history, USER_HISTORY_HOT_MAX);
    }
    cr_assert_geq(record->n_history, USER_HISTORY_HOT);
    cr_assert_eq(record->history_filter.len, ID_FILTER_MAX_BYTES);
    size_t count = 0;
    char **all = whole_history(record, archive, &count);
    cr_assert_eq(count, USER_HISTORY_KEPT);
    for (size_t i = 0; i < count; i++) {
        snprintf(id, sizeof id, "loan-%04zu", i + BORROWS - USER_HISTORY_KEPT);
        cr_assert_str_eq(all[i], id, "oldest first, the oldest fell off");
    }
    for (size_t i = 0; i < count; i++) {
        cr_assert_eq(borrow_with_archive(record, archive, revision, all[i], &replay, &st), STATUS_OK);
        cr_assert(replay, "%s is in the history: a retried request", all[i]);
    }
    cr_assert_eq(borrow_with_archive(record, archive, revision, "loan-0000", &replay, &st), STATUS_OK);
    cr_assert_not(replay, "a loan id that fell off both parts is no longer recognised as a replay");
}

Test(user_record, a_new_borrow_reads_the_older_history_only_when_the_filter_names_it) {
    user_record *record = empty_record();
    user_history *archive = (void *)arena_new_message(a, &library__lending__internal__user_history__descriptor);
    uint64_t revision = 0;
    bool replay;
    status st;
    char id[32];
    for (int i = 0; i < USER_HISTORY_KEPT; i++) {
        snprintf(id, sizeof id, "loan-%04d", i);
        cr_assert_eq(borrow_with_archive(record, archive, revision, id, &replay, &st), STATUS_OK);
        user_record_follow(record, id, LOAN_RETURNED);
        if (user_record_history_full(record, USER_LOANS))
            move_older(record, archive, &revision);
    }
    int asked = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "new-%d", i);
        user_record copy = *record; /* only whether it asks matters */
        user_borrow borrow = {.loan_id = id, .book_id = "book-1", .due_seconds = 5000, .now_seconds = 1000,
                              .max_active = 5};
        bool changed = false, need_archive = false;
        cr_assert_eq(user_record_add_borrow(a, &copy, &borrow, &replay, &need_archive, &changed, &st), STATUS_OK);
        asked += need_archive;
    }
    cr_assert_lt(asked, 500, "the filter named %d of 10000 new loans", asked);
    /* An archive read older than the filter may lack what moved since: read again. */
    user_borrow stale = {.loan_id = "loan-0003", .book_id = "book-1", .due_seconds = 5000, .now_seconds = 1000,
                         .max_active = 5, .archive = archive, .archive_revision = record->history_revision - 1};
    bool changed = false, need_archive = false;
    cr_assert_eq(user_record_add_borrow(a, record, &stale, &replay, &need_archive, &changed, &st), STATUS_OK);
    cr_assert(need_archive);
    cr_assert_not(changed);
}

Test(user_record, a_record_of_the_old_layout_keeps_its_history_and_moves_it) {
    user_record *record = empty_record();
    bool replay;
    status st;
    char id[32];
    for (int i = 0; i < USER_HISTORY_KEPT; i++) { /* the old layout: every id in the record */
        snprintf(id, sizeof id, "loan-%04d", i);
        cr_assert_eq(add(record, id, 5000, 5, &replay, &st), STATUS_OK);
        user_record_follow(record, id, LOAN_RETURNED);
    }
    cr_assert_eq(borrow_with_archive(record, NULL, 0, "loan-0007", &replay, &st), STATUS_OK);
    cr_assert(replay);
    user_history *archive = (void *)arena_new_message(a, &library__lending__internal__user_history__descriptor);
    uint64_t revision = 0;
    cr_assert(user_record_history_full(record, USER_LOANS));
    move_older(record, archive, &revision);
    cr_assert_eq(record->n_history, USER_HISTORY_HOT);
    cr_assert_eq(archive->n_loan_ids, USER_HISTORY_KEPT - USER_HISTORY_HOT);
    size_t count = 0;
    char **all = whole_history(record, archive, &count);
    cr_assert_eq(count, USER_HISTORY_KEPT);
    cr_assert_str_eq(all[0], "loan-0000");
    cr_assert_str_eq(all[count - 1], "loan-0999");
    cr_assert_eq(borrow_with_archive(record, archive, revision, "loan-0007", &replay, &st), STATUS_OK);
    cr_assert(replay, "found in the older history");
}

Test(user_record, a_moved_id_in_both_parts_is_listed_once_and_a_forgotten_one_not_at_all) {
    user_record *record = empty_record();
    user_history *archive = (void *)arena_new_message(a, &library__lending__internal__user_history__descriptor);
    bool replay, changed = false;
    status st;
    char id[32];
    for (int i = 0; i < USER_HISTORY_HOT_MAX + 1; i++) {
        snprintf(id, sizeof id, "loan-%04d", i);
        cr_assert_eq(add(record, id, 5000, 5, &replay, &st), STATUS_OK);
        user_record_follow(record, id, LOAN_RETURNED);
    }
    /* A crash between the two writes: the archive holds the older ids, the record still too. */
    cr_assert(user_history_merge(a, archive, USER_LOANS, record->history, record->n_history, &changed));
    cr_assert(changed);
    size_t count = 0;
    char **all = whole_history(record, archive, &count);
    cr_assert_eq(count, USER_HISTORY_HOT_MAX + 1, "each id once");
    for (size_t i = 0; i < count; i++) {
        snprintf(id, sizeof id, "loan-%04zu", i);
        cr_assert_str_eq(all[i], id);
    }
    cr_assert(user_history_forget(archive, USER_LOANS, "loan-0001"));
    cr_assert_eq(user_record_forget_loan(record, "loan-0001", 1000, &changed, &st), STATUS_OK);
    all = whole_history(record, archive, &count);
    cr_assert_eq(count, USER_HISTORY_HOT_MAX);
    cr_assert_str_eq(all[1], "loan-0002");
    cr_assert_not(user_history_forget(archive, USER_LOANS, "loan-0001"), "forgotten twice");
}

/* --- the older hold history (the same UserHistory) ------------------------------------------ */

/* A hold as PlaceHold places it (and closes it, so the next one on the book may come): again
 * with the older history when the record asks. */
static status_code hold_with_archive(user_record *record, const user_history *archive, uint64_t revision,
                                     const char *hold_id, bool *replay, status *st) {
    user_hold hold = {.hold_id = arena_strdup(a, hold_id), .book_id = "book-1", .now_seconds = 1000,
                      .max_holds = 5};
    bool changed = false, need_archive = false;
    status_code code = user_record_add_hold(a, record, &hold, replay, &need_archive, &changed, st);
    if (code == STATUS_OK && need_archive) {
        cr_assert_not(changed, "nothing changes before the older history is read");
        hold.archive = archive;
        hold.archive_revision = revision;
        code = user_record_add_hold(a, record, &hold, replay, &need_archive, &changed, st);
        cr_assert_not(need_archive);
    }
    if (code == STATUS_OK)
        user_record_close_hold(record, hold_id);
    return code;
}

static void move_older_holds(user_record *record, user_history *archive, uint64_t *revision) {
    move_older_of(record, USER_HOLDS, archive, revision);
}

static char **whole_holds(const user_record *record, const user_history *archive, size_t *count) {
    return whole_list(record, USER_HOLDS, archive, count);
}

Test(user_record, the_hold_history_split_in_two_keeps_the_newest_thousand_and_knows_every_replay) {
    user_record *record = empty_record();
    user_history *archive = (void *)arena_new_message(a, &library__lending__internal__user_history__descriptor);
    uint64_t revision = 0;
    bool replay;
    status st;
    char id[32];
    enum { HOLDS = USER_HISTORY_KEPT + USER_HISTORY_HOT_MAX + 5 };
    for (int i = 0; i < HOLDS; i++) {
        snprintf(id, sizeof id, "hold-%04d", i);
        cr_assert_eq(hold_with_archive(record, archive, revision, id, &replay, &st), STATUS_OK, "%s", st.message);
        cr_assert_not(replay, "hold %d", i);
        if (user_record_history_full(record, USER_HOLDS))
            move_older_holds(record, archive, &revision);
        cr_assert_leq(record->n_hold_history, USER_HISTORY_HOT_MAX);
    }
    cr_assert_geq(record->n_hold_history, USER_HISTORY_HOT);
    cr_assert_eq(record->hold_filter.len, ID_FILTER_MAX_BYTES);
    cr_assert_eq(record->history_filter.len, 0, "the loan filter is the loans' alone");
    cr_assert_eq(record->history_revision, 0);
    cr_assert_eq(archive->n_loan_ids, 0, "holds move to hold_ids only");
    size_t count = 0;
    char **all = whole_holds(record, archive, &count);
    cr_assert_eq(count, USER_HISTORY_KEPT);
    for (size_t i = 0; i < count; i++) {
        snprintf(id, sizeof id, "hold-%04zu", i + HOLDS - USER_HISTORY_KEPT);
        cr_assert_str_eq(all[i], id, "oldest first, the oldest fell off");
    }
    for (size_t i = 0; i < count; i++) {
        cr_assert_eq(hold_with_archive(record, archive, revision, all[i], &replay, &st), STATUS_OK);
        cr_assert(replay, "%s is in the hold history: a retried request", all[i]);
    }
    cr_assert_eq(hold_with_archive(record, archive, revision, "hold-0000", &replay, &st), STATUS_OK);
    cr_assert_not(replay, "a hold id that fell off both parts is no longer recognised as a replay");
}

Test(user_record, a_hold_the_filter_does_not_name_is_new_without_reading_the_archive) {
    user_record *record = empty_record();
    user_history *archive = (void *)arena_new_message(a, &library__lending__internal__user_history__descriptor);
    uint64_t revision = 0;
    bool replay;
    status st;
    char id[32];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "hold-%04d", i);
        cr_assert_eq(hold_with_archive(record, archive, revision, id, &replay, &st), STATUS_OK);
        if (user_record_history_full(record, USER_HOLDS))
            move_older_holds(record, archive, &revision);
    }
    int asked = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "new-%d", i);
        user_record copy = *record; /* only whether it asks matters */
        user_hold hold = {.hold_id = id, .book_id = "book-2", .now_seconds = 1000, .max_holds = 5};
        bool changed = false, need_archive = false;
        cr_assert_eq(user_record_add_hold(a, &copy, &hold, &replay, &need_archive, &changed, &st), STATUS_OK);
        asked += need_archive;
    }
    cr_assert_lt(asked, 500, "the hold filter named %d of 10000 new holds", asked);
    /* the oldest hold is only in the archive: the filter names it, the archive says replay */
    user_hold first = {.hold_id = "hold-0000", .book_id = "book-1", .now_seconds = 1000, .max_holds = 5};
    bool changed = false, need_archive = false;
    cr_assert_eq(user_record_add_hold(a, record, &first, &replay, &need_archive, &changed, &st), STATUS_OK);
    cr_assert(need_archive, "the filter names a hold of the archive");
    cr_assert_not(changed);
    first.archive = archive;
    first.archive_revision = revision - 1; /* older than the filter: read again */
    cr_assert_eq(user_record_add_hold(a, record, &first, &replay, &need_archive, &changed, &st), STATUS_OK);
    cr_assert(need_archive);
    first.archive_revision = revision;
    cr_assert_eq(user_record_add_hold(a, record, &first, &replay, &need_archive, &changed, &st), STATUS_OK);
    cr_assert(replay);
    cr_assert_not(need_archive);
    cr_assert_not(changed);
}

Test(user_record, loans_and_holds_share_one_archive_and_keep_their_own_filters) {
    user_record *record = empty_record();
    user_history *archive = (void *)arena_new_message(a, &library__lending__internal__user_history__descriptor);
    uint64_t revision = 0;
    bool replay, changed = false;
    status st;
    char id[32];
    for (int i = 0; i < USER_HISTORY_HOT_MAX + 1; i++) {
        snprintf(id, sizeof id, "loan-%04d", i);
        cr_assert_eq(borrow_with_archive(record, archive, revision, id, &replay, &st), STATUS_OK);
        user_record_follow(record, id, LOAN_RETURNED);
        snprintf(id, sizeof id, "hold-%04d", i);
        cr_assert_eq(hold_with_archive(record, archive, revision, id, &replay, &st), STATUS_OK);
    }
    move_older(record, archive, &revision);
    uint64_t loans_moved = revision;
    move_older_holds(record, archive, &revision);
    cr_assert_eq(record->history_revision, loans_moved, "the hold move leaves the loan filter as it was");
    cr_assert_eq(record->hold_revision, revision);
    cr_assert_eq(archive->n_loan_ids, USER_HISTORY_HOT_MAX + 1 - USER_HISTORY_HOT);
    cr_assert_eq(archive->n_hold_ids, USER_HISTORY_HOT_MAX + 1 - USER_HISTORY_HOT);
    cr_assert_str_eq(archive->loan_ids[0], "loan-0000");
    cr_assert_str_eq(archive->hold_ids[0], "hold-0000");
    cr_assert(user_record_archive_may_hold(record, USER_HOLDS, "hold-0000"));
    cr_assert(user_record_archive_may_hold(record, USER_LOANS, "loan-0000"));
    /* a retried borrow of an archived loan and a retried hold of an archived hold */
    cr_assert_eq(borrow_with_archive(record, archive, revision, "loan-0001", &replay, &st), STATUS_OK);
    cr_assert(replay);
    cr_assert_eq(hold_with_archive(record, archive, revision, "hold-0001", &replay, &st), STATUS_OK);
    cr_assert(replay);
    /* retention forgets a hold from the hold list only */
    cr_assert_not(user_history_forget(archive, USER_LOANS, "hold-0001"));
    cr_assert(user_history_forget(archive, USER_HOLDS, "hold-0001"));
    cr_assert_eq(user_record_forget_hold(record, "hold-0001", &changed, &st), STATUS_OK);
    size_t count = 0;
    char **all = whole_holds(record, archive, &count);
    cr_assert_eq(count, USER_HISTORY_HOT_MAX);
    cr_assert_str_eq(all[0], "hold-0000");
    cr_assert_str_eq(all[1], "hold-0002");
}

Test(user_record, a_record_of_the_old_layout_keeps_its_holds_and_moves_them_and_shrinks) {
    user_record *record = empty_record();
    bool replay;
    status st;
    char id[40];
    for (int i = 0; i < USER_HISTORY_KEPT; i++) { /* the old layout: every hold id in the record */
        snprintf(id, sizeof id, "%020d", i); /* as long as a real hold id (LENDING_LOAN_ID_LENGTH) */
        cr_assert_eq(hold_with_archive(record, NULL, 0, id, &replay, &st), STATUS_OK);
    }
    size_t before = protobuf_c_message_get_packed_size(&record->base);
    snprintf(id, sizeof id, "%020d", 7);
    cr_assert_eq(hold_with_archive(record, NULL, 0, id, &replay, &st), STATUS_OK);
    cr_assert(replay, "the old layout's record still knows its holds");
    user_history *archive = (void *)arena_new_message(a, &library__lending__internal__user_history__descriptor);
    uint64_t revision = 0;
    cr_assert(user_record_history_full(record, USER_HOLDS));
    move_older_holds(record, archive, &revision);
    cr_assert_eq(record->n_hold_history, USER_HISTORY_HOT);
    cr_assert_eq(archive->n_hold_ids, USER_HISTORY_KEPT - USER_HISTORY_HOT);
    size_t after = protobuf_c_message_get_packed_size(&record->base);
    /* the most the record holds: a full window of 64 */
    for (int i = USER_HISTORY_KEPT; record->n_hold_history < USER_HISTORY_HOT_MAX; i++) {
        snprintf(id, sizeof id, "%020d", i);
        cr_assert_eq(hold_with_archive(record, archive, revision, id, &replay, &st), STATUS_OK);
    }
    size_t most = protobuf_c_message_get_packed_size(&record->base);
    fprintf(stderr, "user record with a full hold history: %zu bytes in the old layout, %zu after the move, "
                    "%zu with a full window\n", before, after, most);
    cr_assert_gt(before, 20000);
    cr_assert_lt(most, 4096, "the record holds the window and a filter: %zu bytes", most);
    size_t count = 0;
    char **all = whole_holds(record, archive, &count);
    cr_assert_eq(count, USER_HISTORY_KEPT);
    snprintf(id, sizeof id, "%020d", USER_HISTORY_KEPT + USER_HISTORY_HOT_MAX - USER_HISTORY_HOT - 1);
    cr_assert_str_eq(all[count - 1], id, "the newest last");
    snprintf(id, sizeof id, "%020d", 100);
    cr_assert_eq(hold_with_archive(record, archive, revision, id, &replay, &st), STATUS_OK);
    cr_assert(replay, "found in the older hold history");
}

/* --- retention: forgetting a settled loan or hold ------------------------------------------ */

Test(user_record, a_settled_loan_leaves_the_history_and_an_open_one_or_one_owing_a_fine_does_not) {
    user_record *record = empty_record();
    bool replay = false, changed = true;
    status st;
    for (const char *const *id = (const char *const[]){"loan-a", "loan-b", "loan-c", NULL}; *id; id++)
        cr_assert_eq(add(record, *id, 5000, 5, &replay, &st), STATUS_OK, "%s", st.message);

    cr_assert_eq(user_record_forget_loan(record, "loan-b", 1000, &changed, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "STILL_OPEN");
    cr_assert_not(changed);
    cr_assert_eq(record->n_history, 3, "a refused forget changed the history");

    cr_assert(user_record_follow(record, "loan-b", LOAN_RETURNED));
    cr_assert(user_record_follow(record, "loan-c", LOAN_RETURNED));
    fine_entry *fine = (fine_entry *)arena_new_message(a, &library__lending__internal__fine_entry__descriptor);
    fine->loan_id = "loan-c", fine->amount = 40, fine->paid = 10, fine->fixed = true;
    record->fines = arena_alloc(a, sizeof *record->fines);
    record->fines[0] = fine, record->n_fines = 1;
    cr_assert_eq(user_record_forget_loan(record, "loan-c", 1000, &changed, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "FINE_OWED");

    cr_assert_eq(user_record_forget_loan(record, "loan-b", 1000, &changed, &st), STATUS_OK, "%s", st.message);
    cr_assert(changed);
    cr_assert_eq(record->n_history, 2);
    cr_assert_str_eq(user_record_history_from_newest(record, 0), "loan-c", "the order of the others is kept");
    cr_assert_str_eq(user_record_history_from_newest(record, 1), "loan-a");
    cr_assert_eq(user_record_forget_loan(record, "loan-b", 1000, &changed, &st), STATUS_OK, "forgotten twice");
    cr_assert_not(changed, "a second forget must write nothing");

    fine->paid = 40; /* settled: the loan may go */
    cr_assert_eq(user_record_forget_loan(record, "loan-c", 1000, &changed, &st), STATUS_OK, "%s", st.message);
    cr_assert(changed);
    cr_assert_str_eq(user_record_history_from_newest(record, 0), "loan-a");
}

Test(user_record, a_closed_hold_leaves_the_hold_history_and_an_open_one_does_not) {
    user_record *record = empty_record();
    user_hold hold = {.hold_id = "hold-a", .book_id = "book-1", .now_seconds = 1000, .max_holds = 5};
    bool replay = false, changed = false, need_archive = false;
    status st;
    cr_assert_eq(user_record_add_hold(a, record, &hold, &replay, &need_archive, &changed, &st), STATUS_OK, "%s",
                 st.message);
    cr_assert_eq(user_record_forget_hold(record, "hold-a", &changed, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "STILL_OPEN");
    cr_assert(user_record_close_hold(record, "hold-a"));
    cr_assert_eq(user_record_forget_hold(record, "hold-a", &changed, &st), STATUS_OK, "%s", st.message);
    cr_assert(changed);
    cr_assert_null(user_record_hold_from_newest(record, 0));
}
