/* test_catalog.c - CatalogService over gRPC against a real nats-server and catalog process:
 * every method, its validation and status codes, idempotency, concurrency and search paging. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "stack_fixture.h"
#include "text.h"

TestSuite(catalog, .init = fixture_setup, .fini = fixture_teardown, .timeout = 60);

static Book *get_book(const char *book_id, status_code expected, status *st) {
    Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status_code code = call_catalog("GetBook", &request.base, &library__catalog__v1__book__descriptor,
                                    user_bearer("reader"), &response, st);
    cr_assert_eq(code, expected, "GetBook(%s): expected %s, got %s: %s", book_id,
                 status_code_name(expected), status_code_name(code), st->message);
    return (Book *)response;
}

static status_code adjust(const char *book_id, int delta, const char *request_id, Book **out,
                          status *st) {
    Library__Catalog__V1__AdjustStockRequest request = LIBRARY__CATALOG__V1__ADJUST_STOCK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    request.delta = delta;
    request.request_id = (char *)(request_id ? request_id : "");
    ProtobufCMessage *response = NULL;
    status_code code = call_catalog("AdjustStock", &request.base, &library__catalog__v1__book__descriptor,
                                    admin_bearer(), &response, st);
    if (out)
        *out = (Book *)response;
    return code;
}

static status_code register_with(const char *title, const char *author, const char *isbn, int copies,
                                 const char *request_id, const char *bearer, Book **out, status *st) {
    Library__Catalog__V1__RegisterBookRequest request = LIBRARY__CATALOG__V1__REGISTER_BOOK_REQUEST__INIT;
    request.title = (char *)title;
    request.author = (char *)author;
    request.isbn = (char *)isbn;
    request.copies = copies;
    request.request_id = (char *)(request_id ? request_id : "");
    ProtobufCMessage *response = NULL;
    status_code code = call_catalog("RegisterBook", &request.base, &library__catalog__v1__book__descriptor,
                                    bearer, &response, st);
    if (out)
        *out = (Book *)response;
    return code;
}

static Library__Catalog__V1__SearchBooksResponse *search(const char *query, int page_size,
                                                         const char *token, status_code expected,
                                                         status *st) {
    Library__Catalog__V1__SearchBooksRequest request = LIBRARY__CATALOG__V1__SEARCH_BOOKS_REQUEST__INIT;
    request.query = (char *)query;
    request.page_size = page_size;
    request.page_token = (char *)(token ? token : "");
    ProtobufCMessage *response = NULL;
    status_code code = call_catalog("SearchBooks", &request.base,
                                    &library__catalog__v1__search_books_response__descriptor,
                                    user_bearer("reader"), &response, st);
    cr_assert_eq(code, expected, "SearchBooks(%s): expected %s, got %s: %s", query,
                 status_code_name(expected), status_code_name(code), st->message);
    return (void *)response;
}

/* A word no other test uses, so searches see only this test's books. */
static const char *unique_word(const char *prefix) {
    char id[17];
    text_random_hex(id, 8);
    return arena_sprintf(mem, "%s%s", prefix, id);
}

Test(catalog, register_then_get_returns_the_same_book) {
    Book *made = register_book("Dune", "Frank Herbert", "978-0441013593", 3);
    cr_assert_str_not_empty(made->book_id);
    cr_assert_str_eq(made->title, "Dune");
    cr_assert_str_eq(made->author, "Frank Herbert");
    cr_assert_str_eq(made->isbn, "978-0441013593");
    cr_assert_eq(made->total_copies, 3);
    cr_assert_eq(made->available_copies, 3);
    cr_assert_not_null(made->create_time);
    cr_assert_gt(made->create_time->seconds, 1700000000);

    status st;
    Book *read = get_book(made->book_id, STATUS_OK, &st);
    cr_assert_str_eq(read->book_id, made->book_id);
    cr_assert_str_eq(read->title, "Dune");
    cr_assert_eq(read->total_copies, 3);
    cr_assert_eq(read->available_copies, 3);
    cr_assert_eq(read->create_time->seconds, made->create_time->seconds);
}

Test(catalog, register_rejects_malformed_fields_naming_them) {
    struct {
        const char *title, *author, *isbn;
        int copies;
        const char *field;
    } cases[] = {
        {"", "A", "1", 1, "title"},
        {"   ", "A", "1", 1, "title"},
        {"T", "", "1", 1, "author"},
        {"T", "A", "12-abc!", 1, "isbn"},
        {"T", "A", "1", -1, "copies"},
        {"T", "A", "1", 100001, "copies"},
        {"Tab\there", "A", "1", 1, "title"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        status st;
        status_code code = register_with(cases[i].title, cases[i].author, cases[i].isbn,
                                         cases[i].copies, NULL, admin_bearer(), NULL, &st);
        cr_assert_eq(code, STATUS_INVALID_ARGUMENT, "case %zu: got %s", i, status_code_name(code));
        cr_assert(strstr(st.message, cases[i].field) != NULL, "case %zu: message \"%s\" does not name %s",
                  i, st.message, cases[i].field);
        cr_assert_str_not_empty(st.reason, "case %zu has no ErrorInfo reason", i);
    }
    char *long_title = arena_alloc(mem, 600);
    memset(long_title, 'x', 599);
    status st;
    cr_assert_eq(register_with(long_title, "A", "", 1, NULL, admin_bearer(), NULL, &st),
                 STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "title") != NULL);
}

Test(catalog, register_with_a_request_id_is_idempotent_per_caller) {
    const char *title = unique_word("Idem");
    const char *request_id = unique_word("req-");
    Book *first = NULL, *second = NULL, *other = NULL;
    status st;
    cr_assert_eq(register_with(title, "A", "", 2, request_id, admin_bearer(), &first, &st), STATUS_OK);
    cr_assert_eq(register_with(title, "changed", "", 9, request_id, admin_bearer(), &second, &st),
                 STATUS_OK);
    cr_assert_str_eq(first->book_id, second->book_id);
    cr_assert_str_eq(second->author, "A", "the retry must return the first result");
    cr_assert_eq(second->total_copies, 2);

    const char *other_admin = harness_bearer(mem, fixture_dir(), "admin-2", true);
    cr_assert_eq(register_with(title, "A", "", 2, request_id, other_admin, &other, &st), STATUS_OK);
    cr_assert_str_neq(other->book_id, first->book_id, "request ids are scoped to the caller");

    Library__Catalog__V1__SearchBooksResponse *found = search(title, 10, NULL, STATUS_OK, &st);
    cr_assert_eq(found->n_books, 2, "one book per caller, got %zu", found->n_books);
}

Test(catalog, tokens_are_checked_and_writes_need_an_admin) {
    status st;
    cr_assert_eq(register_with("T", "A", "", 1, NULL, NULL, NULL, &st), STATUS_UNAUTHENTICATED);
    cr_assert_eq(register_with("T", "A", "", 1, NULL, "Bearer not.a.token", NULL, &st),
                 STATUS_UNAUTHENTICATED);
    harness_token_options expired = {.subject = "admin", .admin = true, .ttl_seconds = -3600};
    const char *token = arena_sprintf(mem, "Bearer %s", harness_token(mem, fixture_dir(), &expired));
    cr_assert_eq(register_with("T", "A", "", 1, NULL, token, NULL, &st), STATUS_UNAUTHENTICATED);
    harness_token_options audience = {.subject = "admin", .admin = true, .ttl_seconds = 600,
                                      .audience = "someone-else"};
    token = arena_sprintf(mem, "Bearer %s", harness_token(mem, fixture_dir(), &audience));
    cr_assert_eq(register_with("T", "A", "", 1, NULL, token, NULL, &st), STATUS_UNAUTHENTICATED);

    cr_assert_eq(register_with("T", "A", "", 1, NULL, user_bearer("mallory"), NULL, &st),
                 STATUS_PERMISSION_DENIED);
    cr_assert_str_eq(st.reason, "ADMIN_REQUIRED");
    Book *book = register_book("Readable", "A", "", 1);
    get_book(book->book_id, STATUS_OK, &st);
    cr_assert_eq(adjust(book->book_id, 1, NULL, NULL, &st), STATUS_OK);

    Library__Catalog__V1__AdjustStockRequest request = LIBRARY__CATALOG__V1__ADJUST_STOCK_REQUEST__INIT;
    request.book_id = book->book_id;
    request.delta = 1;
    ProtobufCMessage *response = NULL;
    cr_assert_eq(call_catalog("AdjustStock", &request.base, &library__catalog__v1__book__descriptor,
                              user_bearer("mallory"), &response, &st),
                 STATUS_PERMISSION_DENIED);
}

Test(catalog, get_unknown_or_malformed_ids) {
    status st;
    get_book("0123456789abcdef0123", STATUS_NOT_FOUND, &st);
    cr_assert_str_eq(st.reason, "BOOK_NOT_FOUND");
    const char *bad[] = {"", "book.>", "a*", "../etc", "UPPER", "x y"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        get_book(bad[i], STATUS_INVALID_ARGUMENT, &st);
        cr_assert(strstr(st.message, "book_id") != NULL, "message: %s", st.message);
    }
}

Test(catalog, update_changes_only_the_fields_given) {
    Book *book = register_book("Old title", "Author", "111", 1);
    Library__Catalog__V1__UpdateBookRequest request = LIBRARY__CATALOG__V1__UPDATE_BOOK_REQUEST__INIT;
    request.book_id = book->book_id;
    request.title = "New title";
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(call_catalog("UpdateBook", &request.base, &library__catalog__v1__book__descriptor,
                              admin_bearer(), &response, &st),
                 STATUS_OK, "%s", st.message);
    Book *updated = (Book *)response;
    cr_assert_str_eq(updated->title, "New title");
    cr_assert_str_eq(updated->author, "Author");
    cr_assert_str_eq(updated->isbn, "111");
    cr_assert_str_eq(get_book(book->book_id, STATUS_OK, &st)->title, "New title");

    Library__Catalog__V1__UpdateBookRequest empty = LIBRARY__CATALOG__V1__UPDATE_BOOK_REQUEST__INIT;
    empty.book_id = book->book_id;
    cr_assert_eq(call_catalog("UpdateBook", &empty.base, &library__catalog__v1__book__descriptor,
                              admin_bearer(), &response, &st),
                 STATUS_INVALID_ARGUMENT);
    request.book_id = "ffffffffffffffffffff";
    cr_assert_eq(call_catalog("UpdateBook", &request.base, &library__catalog__v1__book__descriptor,
                              admin_bearer(), &response, &st),
                 STATUS_NOT_FOUND);
}

Test(catalog, adjust_stock_adds_withdraws_and_refuses_below_zero) {
    Book *book = register_book("Stocked", "A", "", 2);
    Book *after = NULL;
    status st;
    cr_assert_eq(adjust(book->book_id, 3, NULL, &after, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(after->total_copies, 5);
    cr_assert_eq(after->available_copies, 5);
    cr_assert_eq(adjust(book->book_id, -4, NULL, &after, &st), STATUS_OK);
    cr_assert_eq(after->total_copies, 1);
    cr_assert_eq(adjust(book->book_id, -2, NULL, &after, &st), STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.reason, "COPIES_ON_LOAN");
    cr_assert_eq(adjust(book->book_id, 0, NULL, &after, &st), STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "delta") != NULL);
    cr_assert_eq(adjust("ffffffffffffffffffff", 1, NULL, &after, &st), STATUS_NOT_FOUND);
    cr_assert_eq(get_book(book->book_id, STATUS_OK, &st)->total_copies, 1);
}

Test(catalog, adjust_stock_with_a_request_id_applies_once) {
    Book *book = register_book("Once", "A", "", 1);
    Book *first = NULL, *again = NULL;
    status st;
    cr_assert_eq(adjust(book->book_id, 5, "add-five", &first, &st), STATUS_OK);
    cr_assert_eq(adjust(book->book_id, 1, NULL, NULL, &st), STATUS_OK);
    cr_assert_eq(adjust(book->book_id, 5, "add-five", &again, &st), STATUS_OK);
    cr_assert_eq(first->total_copies, 6);
    cr_assert_eq(again->total_copies, 6, "the retry answers as the first call did");
    cr_assert_eq(get_book(book->book_id, STATUS_OK, &st)->total_copies, 7);
}

typedef struct adjust_thread {
    const char *address, *book_id, *bearer;
    int calls, failures;
} adjust_thread;

static void *adjust_many(void *arg) {
    adjust_thread *job = arg;
    rpc_client *own = NULL;
    rpc_client_create(job->address, 10000, &own, NULL);
    arena *a = arena_create(0);
    for (int i = 0; i < job->calls; i++) {
        Library__Catalog__V1__AdjustStockRequest request = LIBRARY__CATALOG__V1__ADJUST_STOCK_REQUEST__INIT;
        request.book_id = (char *)job->book_id;
        request.delta = 1;
        ProtobufCMessage *response = NULL;
        status st;
        if (harness_call(own, CATALOG "AdjustStock", &request.base, &library__catalog__v1__book__descriptor,
                         a, job->bearer, &response, &st) != STATUS_OK)
            job->failures++;
    }
    arena_destroy(a);
    rpc_client_destroy(own);
    return NULL;
}

Test(catalog, concurrent_adjustments_are_never_lost) {
    Book *book = register_book("Contended", "A", "", 0);
    enum { THREADS = 8, CALLS = 10 };
    pthread_t threads[THREADS];
    adjust_thread jobs[THREADS];
    const char *bearer = admin_bearer();
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (adjust_thread){fixture_catalog_address(), book->book_id, bearer, CALLS, 0};
        pthread_create(&threads[i], NULL, adjust_many, &jobs[i]);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        failures += jobs[i].failures;
    }
    status st;
    Book *after = get_book(book->book_id, STATUS_OK, &st);
    cr_assert_eq(failures, 0);
    cr_assert_eq(after->total_copies, THREADS * CALLS, "lost updates: total %d", after->total_copies);
    cr_assert_eq(after->available_copies, THREADS * CALLS);
}

Test(catalog, search_pages_through_every_match_once_in_title_order) {
    const char *word = unique_word("Saga");
    for (int i = 0; i < 25; i++) {
        char title[96];
        snprintf(title, sizeof title, "%s volume %02d", word, 24 - i);
        register_book(title, "Some Author", "", 1);
    }
    register_book("Unrelated", "Nobody", "", 1);
    status st;
    const char *token = NULL;
    int seen = 0, pages = 0;
    char previous[128] = "";
    do {
        Library__Catalog__V1__SearchBooksResponse *page = search(word, 10, token, STATUS_OK, &st);
        pages++;
        for (size_t i = 0; i < page->n_books; i++) {
            cr_assert(strcmp(previous, page->books[i]->title) < 0, "out of order: %s after %s",
                      page->books[i]->title, previous);
            snprintf(previous, sizeof previous, "%s", page->books[i]->title);
            seen++;
        }
        token = page->next_page_token && page->next_page_token[0] ? page->next_page_token : NULL;
    } while (token != NULL && pages < 10);
    cr_assert_eq(seen, 25);
    cr_assert_eq(pages, 3);

    /* case-insensitive, and by author and ISBN */
    char upper[64];
    snprintf(upper, sizeof upper, "%s", word);
    for (char *p = upper; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    cr_assert_eq(search(upper, 100, NULL, STATUS_OK, &st)->n_books, 25);
    const char *author = unique_word("Writer");
    register_book("Anything", author, "978-1-2345-6789-7", 1);
    cr_assert_eq(search(author, 10, NULL, STATUS_OK, &st)->n_books, 1);
    Library__Catalog__V1__SearchBooksResponse *by_isbn = search("9781234567897", 10, NULL, STATUS_OK, &st);
    cr_assert_geq(by_isbn->n_books, 1);
}

Test(catalog, search_rejects_bad_tokens_and_sizes) {
    status st;
    search("", -1, NULL, STATUS_INVALID_ARGUMENT, &st);
    cr_assert(strstr(st.message, "page_size") != NULL);
    search("", 10, "garbage!", STATUS_INVALID_ARGUMENT, &st);
    cr_assert(strstr(st.message, "page_token") != NULL);
    search("", 10, "Zm9vYmFy", STATUS_INVALID_ARGUMENT, &st);

    const char *word = unique_word("Paged");
    for (int i = 0; i < 3; i++)
        register_book(arena_sprintf(mem, "%s %d", word, i), "A", "", 1);
    Library__Catalog__V1__SearchBooksResponse *page = search(word, 1, NULL, STATUS_OK, &st);
    cr_assert_str_not_empty(page->next_page_token);
    search("another query", 1, page->next_page_token, STATUS_INVALID_ARGUMENT, &st);
    cr_assert(strstr(st.message, "page_token") != NULL);

    char *long_query = arena_alloc(mem, 400);
    memset(long_query, 'q', 399);
    search(long_query, 10, NULL, STATUS_INVALID_ARGUMENT, &st);
    cr_assert(strstr(st.message, "query") != NULL);
    Library__Catalog__V1__SearchBooksResponse *capped = search("", 1000, NULL, STATUS_OK, &st);
    cr_assert_leq(capped->n_books, 100);
}

/* --- another replica, restarts ------------------------------------------------------------ */

/* A second catalog process on the shared stack's NATS, and a client to it. */
static rpc_client *replica_start(harness_process *replica) {
    char nats_env[160];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", fixture_nats_url());
    const char *env[] = {nats_env, NULL};
    cr_assert(harness_service_start("catalog", fixture_dir(), env, replica), "second catalog did not start");
    rpc_client *second = NULL;
    cr_assert_eq(rpc_client_create(replica->address, 5000, &second, NULL), STATUS_OK);
    return second;
}

static void replica_stop(harness_process *replica, rpc_client *second) {
    rpc_client_destroy(second);
    cr_assert_eq(harness_process_stop(replica, SIGTERM, 15000), 0, "the second catalog: see %s",
                 replica->log_path);
}

/* GetBook on one catalog process; NULL with *code set when it is not OK. */
static Book *book_at(rpc_client *catalog, const char *dir, const char *book_id, status_code *code) {
    Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    *code = harness_call(catalog, CATALOG "GetBook", &request.base, &library__catalog__v1__book__descriptor,
                         mem, harness_bearer(mem, dir, "reader", false), &response, &st);
    return *code == STATUS_OK ? (Book *)response : NULL;
}

/* SearchBooks on one catalog process (one page of up to 100), asserting OK. */
static Library__Catalog__V1__SearchBooksResponse *search_at(rpc_client *catalog, const char *dir,
                                                            const char *query) {
    Library__Catalog__V1__SearchBooksRequest request = LIBRARY__CATALOG__V1__SEARCH_BOOKS_REQUEST__INIT;
    request.query = (char *)query;
    request.page_size = 100;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(catalog, CATALOG "SearchBooks", &request.base,
                                    &library__catalog__v1__search_books_response__descriptor, mem,
                                    harness_bearer(mem, dir, "reader", false), &response, &st);
    cr_assert_eq(code, STATUS_OK, "SearchBooks(%s): %s %s", query, status_code_name(code), st.message);
    return (void *)response;
}

Test(catalog, books_load_into_a_new_replica) {
    const char *word = unique_word("Durable");
    Book *book = register_book(word, "A", "", 4);
    harness_process replica;
    rpc_client *second = replica_start(&replica);
    Library__Catalog__V1__SearchBooksResponse *found = search_at(second, fixture_dir(), word);
    cr_assert_eq(found->n_books, 1);
    cr_assert_str_eq(found->books[0]->book_id, book->book_id);
    cr_assert_eq(found->books[0]->total_copies, 4);
    replica_stop(&replica, second);
}

/* Borrows one copy of book_id in the stack's lending as user; the catalog has taken it. */
static void borrow_one_copy(test_stack *s, const char *book_id, const char *user) {
    Library__Lending__V1__Loan *loan = test_stack_borrow_decided(s, book_id, user);
    cr_assert_eq(loan->status, LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE, "the loan was canceled (%s)",
                 loan->cancel_reason);
}

static void assert_copies(rpc_client *catalog, const char *dir, const Book *expected, int total, int available) {
    status_code code;
    Book *book = book_at(catalog, dir, expected->book_id, &code);
    cr_assert_eq(code, STATUS_OK, "GetBook(%s) after the restart: %s", expected->book_id, status_code_name(code));
    cr_assert_str_eq(book->title, expected->title);
    cr_assert_eq(book->total_copies, total, "%s: total_copies %d, expected %d", book->title,
                 book->total_copies, total);
    cr_assert_eq(book->available_copies, available, "%s: available_copies %d, expected %d", book->title,
                 book->available_copies, available);
}

/* The catalog keeps nothing of its own: killed with SIGKILL while nats-server is stopped and
 * started again on its store, a new catalog process on the same port serves every book as it
 * was - totals, the copy on loan, search - and takes up the saga where it was left. */
Test(catalog, books_survive_a_kill_of_the_catalog_and_a_restart_of_nats) {
    const char *const lending_env[] = {FIXTURE_LENDING_ENV, NULL};
    test_stack s;
    test_stack_start(&s, unique_word("restart"), lending_env, false, NULL);
    const char *word = unique_word("Durable");
    Book *lent = test_stack_register(&s, arena_sprintf(mem, "%s lent", word), 4);
    Book *shelved = test_stack_register(&s, arena_sprintf(mem, "%s shelved", word), 2);
    borrow_one_copy(&s, lent->book_id, "restart-reader");
    assert_copies(s.catalog_client, s.dir, lent, 4, 3);

    int catalog_port = s.catalog.port, nats_port = s.nats.port;
    cr_assert_eq(harness_process_stop(&s.catalog, SIGKILL, 5000), 128 + SIGKILL);
    cr_assert_neq(harness_process_stop(&s.nats, SIGTERM, 10000), -1, "nats-server did not stop");
    cr_assert(harness_nats_start(s.dir, nats_port, &s.nats), "nats-server did not restart");
    char nats_env[160], port_env[32];
    snprintf(nats_env, sizeof nats_env, "NATS_URL=%s", s.nats.url);
    snprintf(port_env, sizeof port_env, "GRPC_PORT=%d", catalog_port);
    const char *env[] = {nats_env, "EVENT_ACK_WAIT=2s", port_env, NULL};
    cr_assert(harness_service_start("catalog", s.dir, env, &s.catalog), "the catalog did not restart: %s",
              s.catalog.log_path);
    rpc_client_destroy(s.catalog_client);
    cr_assert_eq(rpc_client_create(s.catalog.address, 10000, &s.catalog_client, NULL), STATUS_OK);

    assert_copies(s.catalog_client, s.dir, lent, 4, 3);
    assert_copies(s.catalog_client, s.dir, shelved, 2, 2);
    Library__Catalog__V1__SearchBooksResponse *found = search_at(s.catalog_client, s.dir, word);
    cr_assert_eq(found->n_books, 2, "SearchBooks(%s) after the restart found %zu books", word, found->n_books);
    /* the restarted catalog still takes part in the saga: another copy goes out */
    wait_serving(s.lending_client, "lending (back on NATS)", 15000);
    borrow_one_copy(&s, lent->book_id, "restart-reader-2");
    assert_copies(s.catalog_client, s.dir, lent, 4, 2);
    test_stack_stop(&s);
}

/* --- UpdateBook ------------------------------------------------------------------------------ */

static status_code update_book(const char *book_id, const char *title, const char *author, const char *isbn,
                               const char *bearer, Book **out, status *st) {
    Library__Catalog__V1__UpdateBookRequest request = LIBRARY__CATALOG__V1__UPDATE_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    request.title = (char *)(title ? title : "");
    request.author = (char *)(author ? author : "");
    request.isbn = (char *)(isbn ? isbn : "");
    ProtobufCMessage *response = NULL;
    status_code code = call_catalog("UpdateBook", &request.base, &library__catalog__v1__book__descriptor,
                                    bearer, &response, st);
    if (out)
        *out = (Book *)response;
    return code;
}

/* Nanoseconds since the epoch; 0 for a missing time. */
static int64_t time_ns(const Google__Protobuf__Timestamp *t) {
    return t ? t->seconds * 1000000000LL + t->nanos : 0;
}

/* 979 and ten random digits: an ISBN that matches only this test's book. */
static const char *unique_isbn(void) {
    char hex[11];
    text_random_hex(hex, 5);
    for (int i = 0; i < 10; i++)
        hex[i] = (char)('0' + (unsigned char)hex[i] % 10);
    return arena_sprintf(mem, "979%s", hex);
}

/* How many books of the search for query on catalog have book_id; asserts there are no others. */
static size_t matches(rpc_client *catalog, const char *query, const char *book_id) {
    Library__Catalog__V1__SearchBooksResponse *found = search_at(catalog, fixture_dir(), query);
    for (size_t i = 0; i < found->n_books; i++)
        cr_assert_str_eq(found->books[i]->book_id, book_id, "SearchBooks(%s) found another book", query);
    return found->n_books;
}

/* Old title, author and ISBN must find nothing on this catalog, the new ones the book. */
static void assert_search_sees_only_the_new_fields(rpc_client *catalog, const char *where, const char *book_id,
                                                   const char *const old_words[3],
                                                   const char *const new_words[3]) {
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(matches(catalog, old_words[i], book_id), 0, "%s: the old %s still finds the book", where,
                     old_words[i]);
        cr_assert_eq(matches(catalog, new_words[i], book_id), 1, "%s: the new %s does not find the book", where,
                     new_words[i]);
    }
}

Test(catalog, update_book_reaches_search_and_another_replica_and_moves_only_update_time) {
    const char *old_words[3] = {unique_word("Before"), unique_word("Oldwriter"), unique_isbn()};
    const char *new_words[3] = {unique_word("After"), unique_word("Newwriter"), unique_isbn()};
    Book *book = register_book(arena_sprintf(mem, "%s tale", old_words[0]), old_words[1], old_words[2], 2);
    harness_process replica;
    rpc_client *second = replica_start(&replica);
    cr_assert_eq(matches(second, old_words[0], book->book_id), 1, "the replica does not have the book");

    Book *updated = NULL;
    status st;
    cr_assert_eq(update_book(book->book_id, arena_sprintf(mem, "%s tale", new_words[0]), new_words[1],
                             new_words[2], admin_bearer(), &updated, &st),
                 STATUS_OK, "UpdateBook: %s", st.message);
    cr_assert_str_eq(updated->author, new_words[1]);
    cr_assert_str_eq(updated->isbn, new_words[2]);
    cr_assert_eq(updated->total_copies, 2);
    cr_assert_eq(updated->available_copies, 2);
    cr_assert_eq(time_ns(updated->create_time), time_ns(book->create_time), "create_time changed");
    cr_assert_gt(time_ns(updated->update_time), time_ns(book->update_time), "update_time did not move forward");
    assert_search_sees_only_the_new_fields(client, "the catalog that took the update", book->book_id, old_words,
                                           new_words);

    /* the other replica learns it from the bucket's watch */
    status_code code = STATUS_OK;
    Book *seen = NULL;
    for (int64_t until = harness_now_ms() + 5000; harness_now_ms() < until; harness_sleep_ms(50)) {
        seen = book_at(second, fixture_dir(), book->book_id, &code);
        if (seen && strcmp(seen->title, updated->title) == 0)
            break;
    }
    cr_assert_not_null(seen, "GetBook on the replica: %s", status_code_name(code));
    cr_assert_str_eq(seen->title, updated->title, "the replica still has the old title after 5 s");
    cr_assert_eq(time_ns(seen->update_time), time_ns(updated->update_time));
    assert_search_sees_only_the_new_fields(second, "the other replica", book->book_id, old_words, new_words);
    replica_stop(&replica, second);
}

Test(catalog, update_book_refuses_bad_fields_naming_them_and_changes_nothing) {
    Book *book = register_book("Unchanged", "Steady", "978-3", 1);
    char *long_title = arena_alloc(mem, 600);
    memset(long_title, 't', 599);
    char *long_author = arena_alloc(mem, 300);
    memset(long_author, 'a', 299);
    const struct {
        const char *book_id, *title, *author, *isbn;
        const char *field; /* the message names it */
    } cases[] = {
        {book->book_id, "   ", NULL, NULL, "title"},
        {book->book_id, long_title, NULL, NULL, "title"},
        {book->book_id, NULL, long_author, NULL, "author"},
        {book->book_id, NULL, NULL, "978-abc", "isbn"},
        {book->book_id, NULL, NULL, "----", "isbn"},
        {"NOT-AN-ID", "Fine", NULL, NULL, "book_id"},
        {"", "Fine", NULL, NULL, "book_id"},
        {book->book_id, NULL, NULL, NULL, "title, author or isbn"},
    };
    status st;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        status_code code = update_book(cases[i].book_id, cases[i].title, cases[i].author, cases[i].isbn,
                                       admin_bearer(), NULL, &st);
        cr_assert_eq(code, STATUS_INVALID_ARGUMENT, "case %zu (%s): got %s", i, cases[i].field,
                     status_code_name(code));
        cr_assert_not_null(strstr(st.message, cases[i].field), "case %zu: \"%s\" does not name %s", i, st.message,
                           cases[i].field);
    }
    cr_assert_eq(update_book("ffffffffffffffffffff", "Fine", NULL, NULL, admin_bearer(), NULL, &st),
                 STATUS_NOT_FOUND);
    cr_assert_str_eq(st.reason, "BOOK_NOT_FOUND");
    cr_assert_eq(update_book(book->book_id, "Hijacked", NULL, NULL, user_bearer("reader"), NULL, &st),
                 STATUS_PERMISSION_DENIED);

    Book *after = get_book(book->book_id, STATUS_OK, &st);
    cr_assert_str_eq(after->title, "Unchanged");
    cr_assert_str_eq(after->author, "Steady");
    cr_assert_str_eq(after->isbn, "978-3");
    cr_assert_eq(time_ns(after->update_time), time_ns(book->update_time), "a refused update moved update_time");
}
