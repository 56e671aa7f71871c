/* handlers.c - the CatalogService methods. Each one checks its request with the rules in
 * catalog.c, then reads or changes the book through book_store. */
#include "handlers.h"

#include <string.h>

#include "catalog.h"
#include "holds.h"
#include "log.h"
#include "library/catalog/v1/catalog.pb-c.h"
#include "timestamp.h"

typedef Library__Catalog__V1__Book book_message;

static const char *caller_id(rpc_context *ctx) {
    const auth_identity *caller = rpc_context_caller(ctx);
    return caller ? caller->subject : "";
}

static status_code out_of_memory(status *st) {
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

/* --- RegisterBook ----------------------------------------------------------------------- */

static status_code register_book(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                                 ProtobufCMessage **response, status *st) {
    catalog_handlers *h = state;
    const Library__Catalog__V1__RegisterBookRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    if (catalog_check_register(req->title, req->author, req->isbn, req->copies, req->request_id,
                               st))
        return st->code;

    book_message *book = (void *)arena_new_message(a, &library__catalog__v1__book__descriptor);
    book_record *record = (void *)arena_new_message(a, &library__catalog__internal__book_record__descriptor);
    char *book_id = arena_alloc(a, CATALOG_BOOK_ID_MAX + 1);
    if (book == NULL || record == NULL || book_id == NULL)
        return out_of_memory(st);
    catalog_new_book_id(caller_id(ctx), req->request_id, book_id);
    book->book_id = book_id;
    book->isbn = req->isbn;
    book->title = req->title;
    book->author = req->author;
    book->total_copies = book->available_copies = req->copies;
    book->create_time = book->update_time = timestamp_now(a);
    record->book = book;

    status_code code = book_store_create(h->store, record, a, st);
    if (code == STATUS_ALREADY_EXISTS && req->request_id[0] != '\0') {
        /* The same request again: answer with the book it made. */
        code = book_store_get(h->store, book_id, a, &record, st);
    }
    if (code != STATUS_OK)
        return code;
    *response = &record->book->base;
    return STATUS_OK;
}

/* --- UpdateBook ------------------------------------------------------------------------- */

static bool replace_text(arena *a, char **field, const char *value) {
    if (value == NULL || value[0] == '\0' || strcmp(*field, value) == 0)
        return false;
    *field = arena_strdup(a, value);
    return true;
}

static status_code apply_update(void *arg, arena *a, book_record *record, bool *changed,
                                status *st) {
    const Library__Catalog__V1__UpdateBookRequest *req = arg;
    book_message *book = record->book;
    bool title = replace_text(a, &book->title, req->title);
    bool author = replace_text(a, &book->author, req->author);
    bool isbn = replace_text(a, &book->isbn, req->isbn);
    *changed = title || author || isbn;
    if (*changed)
        book->update_time = timestamp_now(a);
    return STATUS_OK;
}

static status_code update_book(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                               ProtobufCMessage **response, status *st) {
    catalog_handlers *h = state;
    const Library__Catalog__V1__UpdateBookRequest *req = (const void *)request;
    if (catalog_check_update(req->book_id, req->title, req->author, req->isbn, st))
        return st->code;
    book_record *record = NULL;
    status_code code = book_store_update(h->store, req->book_id, rpc_context_arena(ctx),
                                         apply_update, (void *)req, &record, st);
    if (code != STATUS_OK)
        return code;
    *response = &record->book->base;
    return STATUS_OK;
}

/* --- AdjustStock ------------------------------------------------------------------------ */

typedef struct adjust_job {
    int32_t delta;
    hold_times times;
    const char *request_key; /* NULL: not idempotent */
    const Library__Catalog__Internal__AppliedRequest *replayed;
} adjust_job;

static const Library__Catalog__Internal__AppliedRequest *find_applied(const book_record *record,
                                                                      const char *key) {
    for (size_t i = 0; i < record->n_applied_requests; i++)
        if (strcmp(record->applied_requests[i]->key, key) == 0)
            return record->applied_requests[i];
    return NULL;
}

/* Appends an applied request, dropping the oldest beyond the number kept. */
static status_code remember_applied(arena *a, book_record *record, const char *key) {
    Library__Catalog__Internal__AppliedRequest *entry =
        (void *)arena_new_message(a, &library__catalog__internal__applied_request__descriptor);
    if (entry == NULL)
        return STATUS_RESOURCE_EXHAUSTED;
    entry->key = arena_strdup(a, key);
    entry->total_copies = record->book->total_copies;
    entry->available_copies = record->book->available_copies;
    entry->update_time = record->book->update_time;
    if (entry->key == NULL || !arena_append_kept(a, &record->applied_requests, &record->n_applied_requests, entry,
                                                 CATALOG_APPLIED_REQUESTS_KEPT))
        return STATUS_RESOURCE_EXHAUSTED;
    return STATUS_OK;
}

static status_code apply_adjust(void *arg, arena *a, book_record *record, bool *changed, status *st) {
    adjust_job *job = arg;
    job->replayed = job->request_key ? find_applied(record, job->request_key) : NULL;
    if (job->replayed) {
        *changed = false;
        return STATUS_OK;
    }
    book_message *book = record->book;
    int32_t total = 0, available = 0;
    if (catalog_adjust_stock(book->total_copies, book->available_copies, job->delta, &total,
                             &available, st) != STATUS_OK)
        return st->code;
    book->total_copies = total;
    book->available_copies = available;
    book->update_time = timestamp_now(a);
    /* Added copies go to the holds waiting first. */
    size_t outbox_before = record->n_outbox;
    if (holds_serve(a, record, &job->times, NULL, changed, st) != STATUS_OK ||
        holds_finish(a, record, outbox_before, st) != STATUS_OK)
        return st->code;
    if (job->request_key && remember_applied(a, record, job->request_key) != STATUS_OK)
        return out_of_memory(st);
    *changed = true;
    return STATUS_OK;
}

static status_code adjust_stock(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                                ProtobufCMessage **response, status *st) {
    catalog_handlers *h = state;
    const Library__Catalog__V1__AdjustStockRequest *req = (const void *)request;
    if (catalog_check_adjust(req->book_id, req->request_id, st))
        return st->code;
    char key[65];
    adjust_job job = {.delta = req->delta,
                      .times = {.now_ms = timestamp_now_ms(), .pickup_ms = h->hold_pickup_ms}};
    if (req->request_id[0] != '\0') {
        catalog_request_key("AdjustStock", caller_id(ctx), req->request_id, key);
        job.request_key = key;
    }
    book_record *record = NULL;
    status_code code = book_store_update(h->store, req->book_id, rpc_context_arena(ctx),
                                         apply_adjust, &job, &record, st);
    if (code != STATUS_OK)
        return code;
    status ignored;
    if (catalog_saga_publish_outbox(h->connection, h->store, rpc_context_arena(ctx), record, &ignored) != STATUS_OK)
        LOG_WARN("hold events of book %s wait for the sweeper: %s", req->book_id, ignored.message);
    if (job.replayed) { /* answer as the first call did */
        record->book->total_copies = job.replayed->total_copies;
        record->book->available_copies = job.replayed->available_copies;
        record->book->update_time = job.replayed->update_time;
    }
    *response = &record->book->base;
    return STATUS_OK;
}

/* --- GetBook ---------------------------------------------------------------------------- */

/* --- SearchBooks ------------------------------------------------------------------------ */

typedef struct search_page {
    arena *arena;
    book_message **books;
    size_t count;
    bool failed;
} search_page;

static Google__Protobuf__Timestamp *make_time(arena *a, int64_t seconds, int32_t nanos) {
    Google__Protobuf__Timestamp *t = (void *)arena_new_message(a, &google__protobuf__timestamp__descriptor);
    if (t) {
        t->seconds = seconds;
        t->nanos = nanos;
    }
    return t;
}

static void collect_book(void *arg, const book_entry *entry) {
    search_page *page = arg;
    arena *a = page->arena;
    book_message *book = (void *)arena_new_message(a, &library__catalog__v1__book__descriptor);
    if (book == NULL) {
        page->failed = true;
        return;
    }
    book->book_id = arena_strdup(a, entry->book_id);
    book->isbn = arena_strdup(a, entry->isbn);
    book->title = arena_strdup(a, entry->title);
    book->author = arena_strdup(a, entry->author);
    book->total_copies = entry->total_copies;
    book->available_copies = entry->available_copies;
    book->on_hold_copies = entry->on_hold_copies;
    book->create_time = make_time(a, entry->create_seconds, entry->create_nanos);
    book->update_time = make_time(a, entry->update_seconds, entry->update_nanos);
    if (!book->book_id || !book->isbn || !book->title || !book->author || !book->create_time ||
        !book->update_time)
        page->failed = true;
    page->books[page->count++] = book;
}

/* GetBook answers from the replica's index, which this replica's own writes update at once
 * and the bucket's watcher within milliseconds of another replica's; a book the index does
 * not hold yet (just made elsewhere) is read from the bucket, so NOT_FOUND is the truth. */
static status_code get_book(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                            ProtobufCMessage **response, status *st) {
    catalog_handlers *h = state;
    const Library__Catalog__V1__GetBookRequest *req = (const void *)request;
    if (catalog_check_book_id(req->book_id, st))
        return st->code;
    arena *a = rpc_context_arena(ctx);
    book_message *found[1] = {NULL};
    search_page page = {.arena = a, .books = found};
    if (book_index_get(book_store_index(h->store), req->book_id, collect_book, &page)) {
        if (page.failed)
            return out_of_memory(st);
        *response = &found[0]->base;
        return STATUS_OK;
    }
    if (!rpc_context_may_block(ctx))
        return RPC_WOULD_BLOCK; /* to the bucket, from a worker thread */
    book_record *record = NULL;
    status_code code = book_store_get(h->store, req->book_id, a, &record, st);
    if (code != STATUS_OK)
        return code;
    *response = &record->book->base;
    return STATUS_OK;
}

static status_code search_books(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                                ProtobufCMessage **response, status *st) {
    catalog_handlers *h = state;
    const Library__Catalog__V1__SearchBooksRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    catalog_search search;
    if (catalog_search_parse(a, req->query, req->page_size, req->page_token, &search, st))
        return st->code;
    const char *query = search.query_folded;
    size_t page_size = (size_t)search.page_size;

    search_page page = {.arena = a, .books = arena_alloc(a, page_size * sizeof(book_message *))};
    Library__Catalog__V1__SearchBooksResponse *out =
        (void *)arena_new_message(a, &library__catalog__v1__search_books_response__descriptor);
    if (page.books == NULL || out == NULL)
        return out_of_memory(st);
    bool more = false;
    book_index_search(book_store_index(h->store), query, search.has_cursor ? &search.cursor : NULL,
                      page_size, collect_book, &page, &more);
    if (page.failed)
        return out_of_memory(st);
    out->books = page.books;
    out->n_books = page.count;
    if (more && page.count > 0) {
        const book_message *last = page.books[page.count - 1];
        char title[CATALOG_TITLE_MAX + 1];
        catalog_fold(last->title, title, sizeof title);
        catalog_cursor next = {.title_folded = title, .book_id = last->book_id};
        out->next_page_token = catalog_page_token_encode(a, query, &next);
        if (out->next_page_token == NULL)
            return out_of_memory(st);
    }
    *response = &out->base;
    return STATUS_OK;
}

static const rpc_method catalog_methods[] = {
    RPC_UNARY_WRITE("RegisterBook", library__catalog__v1__register_book_request,
                    library__catalog__v1__book, register_book, RPC_ACCESS_ADMIN),
    RPC_UNARY_WRITE("UpdateBook", library__catalog__v1__update_book_request, library__catalog__v1__book,
                    update_book, RPC_ACCESS_ADMIN),
    RPC_UNARY_WRITE("AdjustStock", library__catalog__v1__adjust_stock_request, library__catalog__v1__book,
                    adjust_stock, RPC_ACCESS_ADMIN),
    RPC_UNARY_NONBLOCKING("GetBook", library__catalog__v1__get_book_request, library__catalog__v1__book,
              get_book, RPC_ACCESS_USER),
    /* Not on the poller like GetBook: a search scans the whole index, so a flood of them
     * would hold the pollers (and every other call); on the workers they count against
     * MAX_IN_FLIGHT and are shed past it. */
    RPC_UNARY("SearchBooks", library__catalog__v1__search_books_request,
              library__catalog__v1__search_books_response, search_books, RPC_ACCESS_USER),
};

const rpc_service catalog_rpc_service = {
    .name = "library.catalog.v1.CatalogService",
    .methods = catalog_methods,
    .method_count = sizeof catalog_methods / sizeof catalog_methods[0],
};

void catalog_handlers_init(catalog_handlers *handlers, book_store *store) {
    handlers->store = store;
    handlers->service = catalog_rpc_service;
    handlers->service.state = handlers;
}
