/* test_catalog_decisions.c - the catalog's memory of loan decisions (decisions.c): the window
 * in the book record, the archive it moves to, and the filter that says when to read the
 * archive; driven through catalog_saga_decide as the saga drives it. The rule under test: a
 * loan asked for again, however many loans of the book came after it, gets its first answer
 * and never a second copy. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "decisions.h"
#include "saga.h"

static book_record *new_book(arena *a, int32_t copies) {
    book_record *record = (void *)arena_new_message(a, &library__catalog__internal__book_record__descriptor);
    Library__Catalog__V1__Book *book = (void *)arena_new_message(a, &library__catalog__v1__book__descriptor);
    cr_assert(record && book);
    book->book_id = "b-001";
    book->title = "Dune";
    book->total_copies = copies;
    book->available_copies = copies;
    record->book = book;
    return record;
}

static const char *loan_name(arena *a, int i) {
    char id[32];
    snprintf(id, sizeof id, "loan-%d", i);
    return arena_strdup(a, id);
}

/* LoanRequested as the saga decides it, reading the archive when asked to. */
static catalog_decision request(arena *a, book_record *record, const decision_archive *archive, uint64_t revision,
                                const char *loan_id) {
    catalog_decision job = {.loan_id = loan_id, .reserve = true, .user_id = "alice"};
    bool changed = false;
    status st;
    cr_assert_eq(catalog_saga_decide(&job, a, record, &changed, &st), STATUS_OK);
    if (job.need_archive) {
        cr_assert_not(changed, "nothing is decided before the archive is read");
        job.archive = archive;
        job.archive_revision = revision;
        cr_assert_eq(catalog_saga_decide(&job, a, record, &changed, &st), STATUS_OK);
        cr_assert_not(job.need_archive);
    }
    return job;
}

/* LoanReturned: the copy goes back to the shelf. */
static void give_back(arena *a, book_record *record, const char *loan_id) {
    catalog_decision job = {.loan_id = loan_id, .reserve = false};
    bool changed = false;
    status st;
    cr_assert_eq(catalog_saga_decide(&job, a, record, &changed, &st), STATUS_OK);
}

/* What the saga does once the window is full: merge into the archive, then drop. */
static void archive_window(arena *a, book_record *record, decision_archive *archive, uint64_t *revision) {
    bool changed = false;
    cr_assert(decisions_archive_merge(a, archive, record->recent_decisions, record->n_recent_decisions, &changed));
    if (changed)
        (*revision)++;
    cr_assert(decisions_drop_archived(a, record, archive, *revision, &changed));
}

Test(decisions, a_loan_decided_long_ago_gets_the_same_answer_from_the_archive) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1);
    decision_archive *archive = (void *)arena_new_message(a, &library__catalog__internal__decision_archive__descriptor);
    uint64_t revision = 0;
    /* loan-0 takes the only copy and gives it back; 2000 loans follow, each borrowing and
     * returning it (or finding it out when one is held). */
    catalog_decision first = request(a, record, archive, revision, "loan-0");
    cr_assert(first.reserved);
    give_back(a, record, "loan-0");
    for (int i = 1; i <= 2000; i++) {
        const char *id = loan_name(a, i);
        cr_assert(request(a, record, archive, revision, id).reserved);
        give_back(a, record, id);
        if (decisions_window_full(record))
            archive_window(a, record, archive, &revision);
        cr_assert_leq(record->n_recent_decisions, DECISIONS_HOT_MAX);
    }
    cr_assert_geq(record->n_recent_decisions, DECISIONS_HOT);
    cr_assert_eq(archive->n_decisions, DECISIONS_KEPT);
    cr_assert_eq(record->decided_filter.len, ID_FILTER_MAX_BYTES);
    /* Every loan the archive or the window holds is asked again: the same answer, and the
     * copy stays on the shelf. */
    for (int i = 2000 - DECISIONS_KEPT - (int)record->n_recent_decisions + 1; i <= 2000; i++) {
        catalog_decision again = request(a, record, archive, revision, loan_name(a, i));
        cr_assert(again.reserved, "loan-%d", i);
        cr_assert_eq(record->book->available_copies, 1, "loan-%d took a second copy", i);
        cr_assert_eq(record->n_loans_on_hand, 0);
    }
    arena_destroy(a);
}

Test(decisions, an_out_of_stock_answer_is_remembered_too) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1);
    decision_archive *archive = (void *)arena_new_message(a, &library__catalog__internal__decision_archive__descriptor);
    uint64_t revision = 0;
    cr_assert(request(a, record, archive, revision, "holder").reserved);
    cr_assert_not(request(a, record, archive, revision, "refused").reserved);
    give_back(a, record, "holder");
    for (int i = 1; i <= 200; i++) {
        const char *id = loan_name(a, i);
        request(a, record, archive, revision, id);
        give_back(a, record, id);
        if (decisions_window_full(record))
            archive_window(a, record, archive, &revision);
    }
    cr_assert_null(decisions_find(record->recent_decisions, record->n_recent_decisions, "refused"));
    catalog_decision again = request(a, record, archive, revision, "refused");
    cr_assert_not(again.reserved, "refused once, refused again");
    cr_assert_eq(record->book->available_copies, 1);
    arena_destroy(a);
}

Test(decisions, a_new_loan_is_decided_without_the_archive_unless_the_filter_names_it) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1);
    decision_archive *archive = (void *)arena_new_message(a, &library__catalog__internal__decision_archive__descriptor);
    uint64_t revision = 0;
    for (int i = 0; i < 1000; i++) {
        const char *id = loan_name(a, i);
        request(a, record, archive, revision, id);
        give_back(a, record, id);
        if (decisions_window_full(record))
            archive_window(a, record, archive, &revision);
    }
    for (size_t i = 0; i < archive->n_decisions; i++)
        cr_assert(decisions_filter_may_hold(record->decided_filter, archive->decisions[i]->loan_id));
    int asked = 0;
    for (int i = 0; i < 10000; i++) {
        catalog_decision job = {.loan_id = loan_name(a, 100000 + i), .reserve = true};
        bool changed = false;
        status st;
        book_record copy = *record; /* decide on a copy: only whether it asks matters */
        cr_assert_eq(catalog_saga_decide(&job, a, &copy, &changed, &st), STATUS_OK);
        asked += job.need_archive;
    }
    cr_assert_lt(asked, 500, "the filter named %d of 10000 new loans", asked);
    ProtobufCBinaryData empty = {0};
    cr_assert_not(decisions_filter_may_hold(empty, "loan-1"), "no filter: nothing was archived");
    arena_destroy(a);
}

Test(decisions, an_archive_read_older_than_the_record_filter_is_read_again) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1);
    decision_archive *archive = (void *)arena_new_message(a, &library__catalog__internal__decision_archive__descriptor);
    decision_archive *stale = (void *)arena_new_message(a, &library__catalog__internal__decision_archive__descriptor);
    uint64_t revision = 0;
    for (int i = 0; i < 100; i++) {
        const char *id = loan_name(a, i);
        request(a, record, archive, revision, id);
        give_back(a, record, id);
        if (decisions_window_full(record))
            archive_window(a, record, archive, &revision);
    }
    cr_assert_gt(record->archive_revision, 0);
    catalog_decision job = {.loan_id = "loan-0", .reserve = true, .archive = stale,
                            .archive_revision = record->archive_revision - 1};
    bool changed = false;
    status st;
    cr_assert_eq(catalog_saga_decide(&job, a, record, &changed, &st), STATUS_OK);
    cr_assert(job.need_archive, "an older archive may lack what the window moved");
    cr_assert_not(changed);
    cr_assert_eq(record->book->available_copies, 1);
    arena_destroy(a);
}

Test(decisions, a_record_of_the_old_layout_keeps_its_answers_and_moves_them) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1);
    /* Written before the archive: 1024 decisions in the window, no filter. */
    for (int i = 0; i < DECISIONS_KEPT; i++) {
        loan_decision *d = (void *)arena_new_message(a, &library__catalog__internal__loan_decision__descriptor);
        d->loan_id = (char *)loan_name(a, i);
        d->reserved = true;
        d->hold_id = "";
        cr_assert(arena_append_kept(a, &record->recent_decisions, &record->n_recent_decisions, d, DECISIONS_KEPT));
    }
    decision_archive *archive = (void *)arena_new_message(a, &library__catalog__internal__decision_archive__descriptor);
    uint64_t revision = 0;
    cr_assert(request(a, record, NULL, 0, "loan-5").reserved);
    cr_assert_eq(record->book->available_copies, 1, "found in the window: no copy taken");
    cr_assert(decisions_window_full(record));
    archive_window(a, record, archive, &revision);
    cr_assert_eq(record->n_recent_decisions, DECISIONS_HOT);
    cr_assert_eq(archive->n_decisions, DECISIONS_KEPT - DECISIONS_HOT);
    cr_assert(request(a, record, archive, revision, "loan-5").reserved);
    cr_assert_eq(record->book->available_copies, 1, "found in the archive: no copy taken");
    arena_destroy(a);
}

Test(decisions, the_filter_hash_never_changes) {
    /* Stored filters depend on FNV-1a 64 and the bit positions: this pins them. */
    arena *a = arena_create(0);
    decision_archive *archive = (void *)arena_new_message(a, &library__catalog__internal__decision_archive__descriptor);
    loan_decision d = LIBRARY__CATALOG__INTERNAL__LOAN_DECISION__INIT;
    d.loan_id = "a";
    loan_decision *list[] = {&d};
    archive->decisions = list;
    archive->n_decisions = 1;
    ProtobufCBinaryData filter;
    cr_assert(decisions_filter_build(a, archive, &filter));
    size_t set[8], count = 0;
    for (size_t bit = 0; bit < filter.len * 8; bit++)
        if (filter.data[bit / 8] & (1u << (bit % 8)))
            set[count < 8 ? count++ : 7] = bit;
    /* One id: a 64-byte filter. h = FNV-1a("a") = 0xaf63dc4c8601ec8c, step = (h >> 32) | 1,
     * bits h + i*step mod 512 */
    cr_assert_eq(filter.len, ID_FILTER_STEP);
    size_t expected[] = {140, 217, 294, 371, 448};
    cr_assert_eq(count, sizeof expected / sizeof *expected);
    for (size_t i = 0; i < count; i++)
        cr_assert_eq(set[i], expected[i], "bit %zu: %zu, expected %zu", i, set[i], expected[i]);
    arena_destroy(a);
}
