/* book_store.c - the books bucket, and the index that a view of it (kv_view) keeps. */
#include "book_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decisions.h"
#include "holds.h"
#include "kv.h"
#include "kv_record.h"
#include "kv_view.h"
#include "log.h"
#include "timestamp.h"

enum { KEY_MAX = 80 };

struct book_store {
    kv_view *view;     /* the bucket, followed into the index */
    kv_bucket *bucket; /* the view's */
    book_index *index;
};

static void book_key(const char *book_id, char key[KEY_MAX]) {
    snprintf(key, KEY_MAX, "book.%s", book_id);
}

static book_entry entry_of(const book_record *record, uint64_t revision) {
    const Library__Catalog__V1__Book *book = record->book;
    book_entry entry = {
        .book_id = book->book_id, .isbn = book->isbn, .title = book->title, .author = book->author,
        .total_copies = book->total_copies, .available_copies = book->available_copies,
        .on_hold_copies = book->on_hold_copies, .outbox_count = (int32_t)record->n_outbox,
        .next_expiry_ms = holds_next_expiry(record), .revision = revision,
    };
    if (book->create_time) {
        entry.create_seconds = book->create_time->seconds;
        entry.create_nanos = book->create_time->nanos;
    }
    if (book->update_time) {
        entry.update_seconds = book->update_time->seconds;
        entry.update_nanos = book->update_time->nanos;
    }
    return entry;
}

static void index_record(book_store *store, const uint8_t *data, size_t size, uint64_t revision) {
    book_record *record = library__catalog__internal__book_record__unpack(NULL, size, data);
    if (record == NULL || record->book == NULL) {
        LOG_ERROR("a stored book record at revision %llu does not parse; skipping it",
                  (unsigned long long)revision);
    } else {
        book_entry entry = entry_of(record, revision);
        status st;
        if (book_index_put(store->index, &entry, &st) != STATUS_OK)
            LOG_ERROR("cannot index book %s: %s", entry.book_id, st.message);
    }
    if (record)
        library__catalog__internal__book_record__free_unpacked(record, NULL);
}

/* One change of the bucket into the index (a failure to index one book is logged). */
static bool apply_watch_entry(void *arg, arena *a, const kv_change *change) {
    book_store *store = arg;
    (void)a;
    if (strncmp(change->key, "book.", 5) != 0)
        return true;
    if (!change->deleted)
        index_record(store, change->value, change->size, change->revision);
    else
        book_index_remove(store->index, change->key + 5, change->revision);
    return true;
}

/* The index holds every book before the catalog serves (open waits up to 10 s for them), and
 * follows the bucket after: a new watch delivers every book again; the index keeps the newest
 * revision of each, and books are never deleted, so nothing is lost in between. */
status_code book_store_open(nats_connection *connection, int replicas, book_store **out,
                            status *st) {
    book_store *store = calloc(1, sizeof *store);
    if (store == NULL || (store->index = book_index_create()) == NULL) {
        free(store);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    kv_view_options options = {.bucket = "books", .replicas = replicas, .load_timeout_ms = 10000};
    kv_view_handlers handlers = {.on_change = apply_watch_entry, .arg = store};
    status_code code = kv_view_open(connection, &options, &handlers, &store->view, st);
    if (code != STATUS_OK) {
        book_store_close(store);
        return code;
    }
    store->bucket = kv_view_bucket(store->view);
    LOG_INFO("loaded %zu books", book_index_count(store->index));
    *out = store;
    return STATUS_OK;
}

void book_store_close(book_store *store) {
    if (store == NULL)
        return;
    kv_view_close(store->view);
    book_index_destroy(store->index);
    free(store);
}

book_index *book_store_index(book_store *store) {
    return store->index;
}

static bool book_whole(const ProtobufCMessage *record) {
    return ((const book_record *)record)->book != NULL;
}

static const kv_record_type book_type = {.descriptor = &library__catalog__internal__book_record__descriptor,
                                         .name = "book", .whole = book_whole,
                                         .not_found_reason = "BOOK_NOT_FOUND"};

status_code book_store_get(book_store *store, const char *book_id, arena *a, book_record **out,
                           status *st) {
    char key[KEY_MAX];
    book_key(book_id, key);
    return kv_record_get(store->bucket, &book_type, key, book_id, a, (ProtobufCMessage **)out, st);
}

status_code book_store_create(book_store *store, const book_record *record, arena *a, status *st) {
    char key[KEY_MAX];
    book_key(record->book->book_id, key);
    kv_record_written written;
    status_code code = kv_record_create(store->bucket, key, &record->base, a, &written, st);
    if (code == STATUS_OK)
        index_record(store, written.bytes, written.size, written.revision);
    return code;
}

typedef struct typed_change {
    book_change change;
    void *arg;
} typed_change;

static status_code change_book(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st) {
    typed_change *typed = arg;
    return typed->change(typed->arg, a, (book_record *)record, changed, st);
}

status_code book_store_update(book_store *store, const char *book_id, arena *a, book_change change,
                              void *arg, book_record **out, status *st) {
    char key[KEY_MAX];
    book_key(book_id, key);
    typed_change typed = {change, arg};
    kv_record_written written;
    status_code code = kv_record_update(store->bucket, &book_type, key, book_id, false, change_book, &typed, a,
                                        &written, st);
    if (code != STATUS_OK)
        return code;
    if (written.bytes)
        index_record(store, written.bytes, written.size, written.revision);
    if (out)
        *out = (book_record *)written.record;
    return STATUS_OK;
}

/* --- the decision archive ("decided.<book_id>", decisions.h) -------------------------------- */

static const kv_record_type archive_type = {
    .descriptor = &library__catalog__internal__decision_archive__descriptor, .name = "decision archive",
    .not_found_reason = "ARCHIVE_NOT_FOUND"};

static void archive_key(const char *book_id, char key[KEY_MAX]) {
    snprintf(key, KEY_MAX, "decided.%s", book_id);
}

status_code book_store_get_archive(book_store *store, const char *book_id, arena *a, decision_archive **out,
                                   uint64_t *revision, status *st) {
    char key[KEY_MAX];
    archive_key(book_id, key);
    status_code code =
        kv_record_get_revision(store->bucket, &archive_type, key, book_id, a, (ProtobufCMessage **)out, revision, st);
    if (code != STATUS_NOT_FOUND)
        return code;
    *revision = 0;
    *out = (void *)arena_new_message(a, &library__catalog__internal__decision_archive__descriptor);
    return *out ? STATUS_OK : status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

typedef struct window_job {
    loan_decision *const *window;
    size_t count;
} window_job;

static status_code merge_window(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st) {
    window_job *job = arg;
    if (!decisions_archive_merge(a, (decision_archive *)record, job->window, job->count, changed))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    return STATUS_OK;
}

status_code book_store_archive(book_store *store, const char *book_id, loan_decision *const *window, size_t count,
                               arena *a, decision_archive **out, uint64_t *revision, status *st) {
    char key[KEY_MAX];
    archive_key(book_id, key);
    window_job job = {window, count};
    kv_record_written written;
    status_code code = kv_record_update(store->bucket, &archive_type, key, book_id, true, merge_window, &job, a,
                                        &written, st);
    if (code != STATUS_OK)
        return code;
    *out = (decision_archive *)written.record;
    *revision = written.revision;
    return STATUS_OK;
}
