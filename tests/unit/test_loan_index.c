/* test_loan_index.c - lending's read index of loans and user histories: the newest revision
 * wins whatever order the watcher and the writers deliver in, copies are the caller's, and
 * readers on many threads see whole entries while one thread writes. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "library/lending/v1/lending.pb-c.h"
#include "loan_index.h"

static loan_index *index_;
static arena *arena_;

static void setup(void) {
    index_ = loan_index_create();
    arena_ = arena_create(0);
    cr_assert(index_ && arena_);
}
static void teardown(void) {
    loan_index_destroy(index_);
    arena_destroy(arena_);
}
TestSuite(loan_index, .init = setup, .fini = teardown);

static void put_text(const char *id, const char *text, uint64_t revision) {
    cr_assert(loan_index_put_loan(index_, id, (const uint8_t *)text, strlen(text) + 1, revision));
}

static const char *get_text(const char *id) {
    uint8_t *data = NULL;
    size_t size = 0;
    return loan_index_get_loan(index_, id, arena_, &data, &size) ? (const char *)data : NULL;
}

Test(loan_index, a_missing_loan_is_not_found) {
    cr_assert_null(get_text("L1"));
    cr_assert_eq(loan_index_loan_revision(index_, "L1"), 0);
    char **history = NULL;
    size_t count = 0;
    cr_assert_not(loan_index_get_user(index_, "dXNlcg", arena_, &history, &count));
}

Test(loan_index, the_newest_revision_wins_in_any_order) {
    put_text("L1", "pending", 5);
    cr_assert_str_eq(get_text("L1"), "pending");
    put_text("L1", "active", 9);
    cr_assert_str_eq(get_text("L1"), "active");
    put_text("L1", "pending", 5); /* the watcher delivering what a writer already recorded */
    put_text("L1", "stale", 8);
    cr_assert_str_eq(get_text("L1"), "active");
    put_text("L1", "again", 9); /* the same revision twice: kept as it was */
    cr_assert_str_eq(get_text("L1"), "active");
    cr_assert_eq(loan_index_loan_revision(index_, "L1"), 9);
    cr_assert_eq(loan_index_loan_count(index_), 1);
}

Test(loan_index, a_copy_outlives_later_changes) {
    put_text("L1", "first", 1);
    const char *copy = get_text("L1");
    put_text("L1", "second", 2);
    cr_assert_str_eq(copy, "first");
    cr_assert_str_eq(get_text("L1"), "second");
}

Test(loan_index, a_delete_forgets_only_what_is_older) {
    put_text("L1", "active", 10);
    loan_index_remove_loan(index_, "L1", 7); /* a delete the index already moved past */
    cr_assert_str_eq(get_text("L1"), "active");
    loan_index_remove_loan(index_, "L1", 11);
    cr_assert_null(get_text("L1"));
    cr_assert_eq(loan_index_loan_count(index_), 0);
}

Test(loan_index, histories_are_kept_oldest_first) {
    const char *older[] = {"L1", "L2"};
    const char *newer[] = {"L1", "L2", "L3"};
    cr_assert(loan_index_put_user(index_, "dXNlcg", older, 2, 3));
    cr_assert(loan_index_put_user(index_, "dXNlcg", newer, 3, 6));
    cr_assert(loan_index_put_user(index_, "dXNlcg", older, 2, 4)); /* late: ignored */
    char **history = NULL;
    size_t count = 0;
    cr_assert(loan_index_get_user(index_, "dXNlcg", arena_, &history, &count));
    cr_assert_eq(count, 3);
    cr_assert_str_eq(history[0], "L1");
    cr_assert_str_eq(history[2], "L3");
    const char *none[1] = {NULL};
    cr_assert(loan_index_put_user(index_, "b3RoZXI", none, 0, 7)); /* a user with no loans yet */
    cr_assert(loan_index_get_user(index_, "b3RoZXI", arena_, &history, &count));
    cr_assert_eq(count, 0);
    cr_assert_eq(loan_index_user_count(index_), 2);
    loan_index_remove_user(index_, "dXNlcg", 8);
    cr_assert_not(loan_index_get_user(index_, "dXNlcg", arena_, &history, &count));
}

/* Past many table growths and deletions in the middle of probe runs, every key is found. */
Test(loan_index, many_loans_grow_and_shrink_the_table) {
    char id[32], text[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "L%05d", i);
        snprintf(text, sizeof text, "loan %d", i);
        put_text(id, text, (uint64_t)i + 1);
    }
    cr_assert_eq(loan_index_loan_count(index_), 5000);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(id, sizeof id, "L%05d", i);
        loan_index_remove_loan(index_, id, 100000);
    }
    cr_assert_eq(loan_index_loan_count(index_), 2500);
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "L%05d", i);
        snprintf(text, sizeof text, "loan %d", i);
        const char *found = get_text(id);
        if (i % 2)
            cr_assert(found && strcmp(found, text) == 0, "%s: %s", id, found ? found : "(missing)");
        else
            cr_assert_null(found, "%s was removed", id);
    }
    cr_assert_gt(loan_index_bytes(index_), 2500 * (sizeof "L00000" + sizeof "loan 0000"));
}

/* One writer moves every loan forward while readers check each copy is whole and never goes
 * back: "<id> <revision>" with the revision the index holds or a newer one. */
enum { THREAD_LOANS = 64, WRITES = 20000, READERS = 4 };

typedef struct reader {
    pthread_t thread;
    char failure[128]; /* empty: every read was whole and none went back */
} reader;

static void *reader_main(void *arg) {
    reader *self = arg;
    arena *a = arena_create(0);
    uint64_t seen[THREAD_LOANS] = {0};
    for (int round = 0; a && round < 4000 && self->failure[0] == '\0'; round++) {
        int i = round % THREAD_LOANS;
        char id[16];
        snprintf(id, sizeof id, "L%d", i);
        uint8_t *data = NULL;
        size_t size = 0;
        if (loan_index_get_loan(index_, id, a, &data, &size)) {
            char found_id[16] = "";
            unsigned long long revision = 0;
            if (sscanf((const char *)data, "%15s %llu", found_id, &revision) != 2 || strcmp(found_id, id) != 0)
                snprintf(self->failure, sizeof self->failure, "%s read as \"%.40s\"", id, (const char *)data);
            else if (revision < seen[i])
                snprintf(self->failure, sizeof self->failure, "%s went back from %llu to %llu", id,
                         (unsigned long long)seen[i], revision);
            seen[i] = revision;
        }
        arena_reset(a);
    }
    arena_destroy(a);
    return NULL;
}

Test(loan_index, readers_see_whole_entries_that_never_go_back) {
    reader readers[READERS] = {0};
    for (int r = 0; r < READERS; r++)
        cr_assert_eq(pthread_create(&readers[r].thread, NULL, reader_main, &readers[r]), 0);
    for (uint64_t revision = 1; revision <= WRITES; revision++) {
        char id[16], text[48];
        snprintf(id, sizeof id, "L%d", (int)(revision % THREAD_LOANS));
        snprintf(text, sizeof text, "%s %llu", id, (unsigned long long)revision);
        put_text(id, text, revision);
    }
    for (int r = 0; r < READERS; r++) {
        pthread_join(readers[r].thread, NULL);
        cr_assert_eq(readers[r].failure[0], '\0', "%s", readers[r].failure);
    }
}

/* What a loan costs the index (docs/decisions.md): a Loan as BorrowBook stores it, with a
 * 20-character loan id, a 36-character book id, a 20-character user id and title, and three
 * timestamps. The bytes the index counts leave out malloc's own overhead (8-16 per entry). */
Test(loan_index, a_loan_costs_about_250_bytes) {
    enum { LOANS = 10000 };
    Google__Protobuf__Timestamp borrowed = GOOGLE__PROTOBUF__TIMESTAMP__INIT, due = GOOGLE__PROTOBUF__TIMESTAMP__INIT,
                                returned = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    borrowed.seconds = 1796256000, borrowed.nanos = 123000000;
    due.seconds = 1797465600;
    returned.seconds = 1796356000, returned.nanos = 456000000;
    for (int i = 0; i < LOANS; i++) {
        char loan_id[32];
        snprintf(loan_id, sizeof loan_id, "%020d", i);
        Library__Lending__V1__Loan loan = LIBRARY__LENDING__V1__LOAN__INIT;
        loan.loan_id = loan_id;
        loan.user_id = "reader-0123456789abc";
        loan.book_id = "0b6a1f3e-9c1d-4f8e-8a55-2f0c5d7e9b41";
        loan.book_title = "The Name of the Rose";
        loan.status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED;
        loan.borrow_time = &borrowed, loan.due_time = &due, loan.return_time = &returned;
        loan.renewal_count = 1;
        size_t size = 0;
        uint8_t *packed = arena_pack(arena_, &loan.base, &size);
        cr_assert(packed && loan_index_put_loan(index_, loan_id, packed, size, (uint64_t)i + 1));
        arena_reset(arena_);
    }
    size_t per_loan = loan_index_bytes(index_) / LOANS;
    cr_log_info("the index holds %zu bytes per loan (before malloc's overhead)", per_loan);
    cr_assert_lt(per_loan, 300);
}
