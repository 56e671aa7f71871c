/* fuzz_catalog_requests.c - every CatalogService request through what the service does with
 * it, without the network: protobuf-c decoding (as the rpc server does it, into an arena), the
 * request checks the handlers call, and the domain logic behind them (book ids, stock
 * arithmetic, search over an in-memory index, page tokens).
 *
 * Input: one byte choosing the method, then the serialized request. */
#include <stdbool.h>

#include "arena.h"
#include "book_index.h"
#include "book_record.pb-c.h"
#include "catalog.h"
#include "fuzz.h"
#include "library/catalog/v1/catalog.pb-c.h"
#include "status.h"

static const ProtobufCMessageDescriptor *const request_types[] = {
    &library__catalog__v1__register_book_request__descriptor,
    &library__catalog__v1__update_book_request__descriptor,
    &library__catalog__v1__adjust_stock_request__descriptor,
    &library__catalog__v1__get_book_request__descriptor,
    &library__catalog__v1__search_books_request__descriptor,
};
enum { METHOD_COUNT = sizeof request_types / sizeof request_types[0] };

/* A few books to search, built once. */
static book_index *shelf(void) {
    static book_index *index;
    if (index != NULL)
        return index;
    /* id, isbn, title, author, total, available, on hold, outbox, next expiry, created,
     * updated (seconds, then nanos), revision */
    static const book_entry books[] = {
        {"b-001", "978-0-441-17271-9", "Dune", "Frank Herbert", 4, 2, 0, 0, 0, 1, 1, 0, 0, 1},
        {"b-002", "978-0-553-29335-7", "Foundation", "Isaac Asimov", 1, 0, 0, 0, 0, 2, 2, 0, 0, 1},
        {"b-003", "", "Dune Messiah", "Frank Herbert", 2, 2, 0, 0, 0, 3, 3, 0, 0, 1},
        {"b-004", "0-306-40615-2", "The Left Hand of Darkness", "Ursula K. Le Guin", 3, 3, 0, 0, 0, 4, 4, 0, 0, 1},
        {"b-005", "", "dune", "someone else", 1, 1, 0, 0, 0, 5, 5, 0, 0, 1},
        {"b-006", "978 3 16 148410 0", "Neuromancer", "William Gibson", 5, 1, 0, 0, 0, 6, 6, 0, 0, 1},
        {"b-007", "", "\xc3\x89tudes", "Chopin", 1, 1, 0, 0, 0, 7, 7, 0, 0, 1},
        {"b-008", "", "Dune", "Frank Herbert", 1, 1, 0, 0, 0, 8, 8, 0, 0, 1},
    };
    index = book_index_create();
    FUZZ_CHECK(index != NULL);
    for (size_t i = 0; i < sizeof books / sizeof books[0]; i++) {
        status st;
        FUZZ_CHECK(book_index_put(index, &books[i], &st) == STATUS_OK);
    }
    return index;
}

static void check_failure(status_code code, const status *st) {
    /* Bad input is INVALID_ARGUMENT (or FAILED_PRECONDITION for stock), with a reason. */
    FUZZ_CHECK(code == STATUS_INVALID_ARGUMENT || code == STATUS_FAILED_PRECONDITION);
    FUZZ_CHECK(st->code == code && st->reason[0] != '\0' && st->message[0] != '\0');
}

static void register_book(arena *a, const Library__Catalog__V1__RegisterBookRequest *req) {
    status st;
    status_code code = catalog_check_register(req->title, req->author, req->isbn, req->copies,
                                              req->request_id, &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    /* What the handler stores: the id it derives must be one GetBook accepts. */
    char book_id[CATALOG_BOOK_ID_MAX + 1];
    catalog_new_book_id("fuzz-admin", req->request_id, book_id);
    FUZZ_CHECK(catalog_check_book_id(book_id, &st) == STATUS_OK);
    Library__Catalog__V1__Book *book = (void *)arena_new_message(a, &library__catalog__v1__book__descriptor);
    Library__Catalog__Internal__BookRecord *record =
        (void *)arena_new_message(a, &library__catalog__internal__book_record__descriptor);
    FUZZ_CHECK(book != NULL && record != NULL);
    book->book_id = book_id;
    book->isbn = req->isbn;
    book->title = req->title;
    book->author = req->author;
    book->total_copies = book->available_copies = req->copies;
    record->book = book;
    size_t size = 0;
    uint8_t *packed = arena_pack(a, &record->base, &size);
    FUZZ_CHECK(packed != NULL);
    const Library__Catalog__Internal__BookRecord *stored = (const void *)arena_unpack(
        a, &library__catalog__internal__book_record__descriptor, packed, size);
    FUZZ_CHECK(stored != NULL && stored->book != NULL);
    FUZZ_CHECK(strcmp(stored->book->title, req->title) == 0);
    FUZZ_CHECK(stored->book->total_copies == req->copies);
    /* And what a search of its own title would compare. */
    char title[CATALOG_TITLE_MAX + 1], author[CATALOG_AUTHOR_MAX + 1], isbn[CATALOG_ISBN_MAX + 1];
    catalog_fold(req->title, title, sizeof title);
    catalog_fold(req->author, author, sizeof author);
    catalog_isbn_digits(req->isbn, isbn, sizeof isbn);
    char query[CATALOG_QUERY_MAX + 1];
    catalog_fold(req->title, query, sizeof query);
    FUZZ_CHECK(catalog_matches(query, title, author, isbn));
}

static void update_book(const Library__Catalog__V1__UpdateBookRequest *req) {
    status st;
    status_code code = catalog_check_update(req->book_id, req->title, req->author, req->isbn, &st);
    if (code != STATUS_OK)
        check_failure(code, &st);
}

static void adjust_stock(const Library__Catalog__V1__AdjustStockRequest *req) {
    status st;
    status_code code = catalog_check_adjust(req->book_id, req->request_id, &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    char key[65];
    catalog_request_key("AdjustStock", "fuzz-admin", req->request_id, key);
    FUZZ_CHECK(strlen(key) == 64);
    /* The delta against books in a few states: never below the copies on loan, never above
     * the limit, and the copies on loan never change. */
    static const int32_t states[][2] = {{0, 0}, {1, 1}, {5, 2}, {CATALOG_MAX_COPIES, 0},
                                        {CATALOG_MAX_COPIES, CATALOG_MAX_COPIES}, {3, 3}};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        int32_t total = states[i][0], available = states[i][1], new_total = -1, new_available = -1;
        code = catalog_adjust_stock(total, available, req->delta, &new_total, &new_available, &st);
        if (code != STATUS_OK) {
            check_failure(code, &st);
            FUZZ_CHECK(new_total == -1 && new_available == -1); /* outputs only on success */
            continue;
        }
        FUZZ_CHECK(new_available >= 0 && new_total <= CATALOG_MAX_COPIES);
        FUZZ_CHECK(new_total - new_available == total - available);
    }
}

static void get_book(const Library__Catalog__V1__GetBookRequest *req) {
    status st;
    status_code code = catalog_check_book_id(req->book_id, &st);
    if (code != STATUS_OK)
        check_failure(code, &st);
}

typedef struct found_books {
    const char *last_title, *last_id;
    size_t count;
} found_books;

static void remember_last(void *arg, const book_entry *book) {
    found_books *found = arg;
    found->last_title = book->title;
    found->last_id = book->book_id;
    found->count++;
}

static void search_books(arena *a, const Library__Catalog__V1__SearchBooksRequest *req) {
    status st;
    catalog_search search;
    status_code code = catalog_search_parse(a, req->query, req->page_size, req->page_token,
                                            &search, &st);
    if (code != STATUS_OK) {
        check_failure(code, &st);
        return;
    }
    FUZZ_CHECK(search.page_size > 0 && search.page_size <= CATALOG_PAGE_SIZE_MAX);
    found_books found = {0};
    bool more = false;
    size_t visited = book_index_search(shelf(), search.query_folded,
                                       search.has_cursor ? &search.cursor : NULL,
                                       (size_t)search.page_size, remember_last, &found, &more);
    FUZZ_CHECK(visited == found.count && visited <= (size_t)search.page_size);
    if (!more || visited == 0)
        return;
    /* The next page's token, as the handler makes it, must decode to the same position. */
    char title[CATALOG_TITLE_MAX + 1];
    catalog_fold(found.last_title, title, sizeof title);
    catalog_cursor next = {.title_folded = title, .book_id = found.last_id};
    char *token = catalog_page_token_encode(a, search.query_folded, &next);
    FUZZ_CHECK(token != NULL);
    catalog_search again;
    FUZZ_CHECK(catalog_search_parse(a, req->query, req->page_size, token, &again, &st) == STATUS_OK);
    FUZZ_CHECK(again.has_cursor && strcmp(again.cursor.title_folded, title) == 0 &&
               strcmp(again.cursor.book_id, found.last_id) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    unsigned method = data[0] % METHOD_COUNT;
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    const ProtobufCMessage *request = arena_unpack(a, request_types[method], data + 1, size - 1);
    if (request != NULL) {
        switch (method) {
        case 0: register_book(a, (const void *)request); break;
        case 1: update_book((const void *)request); break;
        case 2: adjust_stock((const void *)request); break;
        case 3: get_book((const void *)request); break;
        default: search_books(a, (const void *)request); break;
        }
    }
    arena_destroy(a);
    return 0;
}
