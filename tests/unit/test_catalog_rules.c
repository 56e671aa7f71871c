/* test_catalog_rules.c - the catalog's domain rules and search index, called directly. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "book_index.h"
#include "catalog.h"

Test(rules, book_fields) {
    status st;
    cr_assert_eq(catalog_check_title("Dune", "title", true, &st), STATUS_OK);
    cr_assert_eq(catalog_check_title("", "title", true, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.reason, "FIELD_REQUIRED");
    cr_assert_eq(catalog_check_title("", "title", false, &st), STATUS_OK);
    cr_assert_eq(catalog_check_title("a\x01", "title", true, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_check_isbn("978-0-441-01359-3", &st), STATUS_OK);
    cr_assert_eq(catalog_check_isbn("0-8044-2957-X", &st), STATUS_OK);
    cr_assert_eq(catalog_check_isbn("", &st), STATUS_OK);
    cr_assert_eq(catalog_check_isbn("---", &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_check_isbn("978;DROP", &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_check_copies(0, &st), STATUS_OK);
    cr_assert_eq(catalog_check_copies(-1, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_check_book_id("abc-123", &st), STATUS_OK);
    cr_assert_eq(catalog_check_book_id("book.*", &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_check_book_id(">", &st), STATUS_INVALID_ARGUMENT);
}

Test(rules, stock_arithmetic) {
    int32_t total = 0, available = 0;
    status st;
    cr_assert_eq(catalog_adjust_stock(4, 0, 3, &total, &available, &st), STATUS_OK);
    cr_assert_eq(total, 7);
    cr_assert_eq(available, 3);
    cr_assert_eq(catalog_adjust_stock(4, 1, -2, &total, &available, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "COPIES_ON_LOAN");
    cr_assert_eq(total, 7, "outputs untouched on failure");
    cr_assert_eq(catalog_adjust_stock(4, 4, -4, &total, &available, &st), STATUS_OK);
    cr_assert_eq(total, 0);
    cr_assert_eq(catalog_adjust_stock(4, 4, 0, &total, &available, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_adjust_stock(99999, 99999, 5, &total, &available, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_adjust_stock(1, 1, INT32_MIN, &total, &available, &st), STATUS_INVALID_ARGUMENT);
}

Test(rules, derived_ids_are_stable_per_caller) {
    char a[CATALOG_BOOK_ID_MAX + 1], b[CATALOG_BOOK_ID_MAX + 1], c[CATALOG_BOOK_ID_MAX + 1];
    catalog_new_book_id("alice", "r1", a);
    catalog_new_book_id("alice", "r1", b);
    catalog_new_book_id("bob", "r1", c);
    cr_assert_str_eq(a, b);
    cr_assert_str_neq(a, c);
    status st;
    cr_assert_eq(catalog_check_book_id(a, &st), STATUS_OK);
    catalog_new_book_id("alice", "", a);
    catalog_new_book_id("alice", "", b);
    cr_assert_str_neq(a, b);
}

Test(rules, matching_and_folding) {
    char query[64];
    catalog_fold("DUNE", query, sizeof query);
    cr_assert(catalog_matches(query, "dune messiah", "frank herbert", "9780441013593"));
    catalog_fold("herb", query, sizeof query);
    cr_assert(catalog_matches(query, "dune", "frank herbert", ""));
    catalog_fold("978-0441", query, sizeof query);
    cr_assert(catalog_matches(query, "dune", "frank herbert", "9780441013593"));
    catalog_fold("zzz", query, sizeof query);
    cr_assert_not(catalog_matches(query, "dune", "frank herbert", "9780441013593"));
    cr_assert(catalog_matches("", "anything", "", ""));
}

Test(rules, page_tokens_round_trip_and_bind_to_the_query) {
    arena *a = arena_create(0);
    catalog_cursor cursor = {.title_folded = "dune", .book_id = "abc"}, back;
    char *token = catalog_page_token_encode(a, "du", &cursor);
    bool has = false;
    status st;
    cr_assert_eq(catalog_page_token_decode(a, token, "du", &back, &has, &st), STATUS_OK);
    cr_assert(has);
    cr_assert_str_eq(back.title_folded, "dune");
    cr_assert_str_eq(back.book_id, "abc");
    cr_assert_eq(catalog_page_token_decode(a, token, "other", &back, &has, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_page_token_decode(a, "%%%", "du", &back, &has, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_eq(catalog_page_token_decode(a, "", "du", &back, &has, &st), STATUS_OK);
    cr_assert_not(has);
    int32_t size = 0;
    cr_assert_eq(catalog_page_size(0, &size, &st), STATUS_OK);
    cr_assert_eq(size, CATALOG_PAGE_SIZE_DEFAULT);
    cr_assert_eq(catalog_page_size(5000, &size, &st), STATUS_OK);
    cr_assert_eq(size, CATALOG_PAGE_SIZE_MAX);
    cr_assert_eq(catalog_page_size(-1, &size, &st), STATUS_INVALID_ARGUMENT);
    arena_destroy(a);
}

static void count_visit(void *arg, const book_entry *book) {
    (void)book;
    (*(int *)arg)++;
}

static void last_visit(void *arg, const book_entry *book) {
    snprintf(arg, 64, "%s", book->title);
}

Test(index, orders_by_title_replaces_by_revision_and_pages) {
    book_index *index = book_index_create();
    status st;
    char id[16], title[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "id%04d", i);
        snprintf(title, sizeof title, "Title %04d", 999 - i);
        book_entry e = {.book_id = id, .title = title, .author = "A", .isbn = "", .revision = 1};
        cr_assert_eq(book_index_put(index, &e, &st), STATUS_OK);
    }
    cr_assert_eq(book_index_count(index), 1000);
    /* an older revision never replaces a newer one */
    book_entry stale = {.book_id = "id0000", .title = "Stale", .author = "A", .isbn = "", .revision = 1};
    book_index_put(index, &stale, &st);
    book_entry fresh = {.book_id = "id0000", .title = "Zz newest", .author = "A", .isbn = "", .revision = 2};
    book_index_put(index, &fresh, &st);
    cr_assert_eq(book_index_count(index), 1000);
    char last[64] = "";
    bool more = false;
    catalog_cursor cursor = {.title_folded = "title 0998", .book_id = "id0001"};
    cr_assert_eq(book_index_search(index, "", &cursor, 10, last_visit, last, &more), 1);
    cr_assert_str_eq(last, "Zz newest");
    cr_assert_not(more);
    int seen = 0;
    book_index_search(index, "title 00", NULL, 1000, count_visit, &seen, &more);
    cr_assert_eq(seen, 100);
    book_index_remove(index, "id0000", 3);
    cr_assert_eq(book_index_count(index), 999);
    for (int i = 1; i < 1000; i += 2) {
        snprintf(id, sizeof id, "id%04d", i);
        book_index_remove(index, id, 5);
    }
    cr_assert_eq(book_index_count(index), 499);
    seen = 0;
    book_index_search(index, "", NULL, 1000, count_visit, &seen, &more);
    cr_assert_eq(seen, 499);
    book_index_destroy(index);
}
