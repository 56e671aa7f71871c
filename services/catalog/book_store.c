/* book_store.c - the books bucket and its watcher. */
#include "book_store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decisions.h"
#include "holds.h"
#include "kv.h"
#include "kv_record.h"
#include "log.h"
#include "timestamp.h"

enum { KEY_MAX = 80 };

struct book_store {
    kv_bucket *bucket;
    book_index *index;
    kv_follow *follow;
    pthread_t watch_thread;
    bool watching;
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

static void apply_watch_entry(book_store *store, const kv_change *change) {
    if (strncmp(change->key, "book.", 5) != 0)
        return;
    if (!change->deleted)
        index_record(store, change->value, change->size, change->revision);
    else
        book_index_remove(store->index, change->key + 5, change->revision);
}

/* Loads the current books: the watch delivers every one, then says it caught up. */
static status_code load_initial(book_store *store, status *st) {
    enum { LOAD_TIMEOUT_MS = 10000 };
    for (int64_t waited_ms = 0;;) {
        kv_change change;
        int64_t before = timestamp_monotonic_ms();
        switch (kv_follow_next(store->follow, LOAD_TIMEOUT_MS - waited_ms, &change)) {
        case KV_FOLLOW_ENTRY:
            apply_watch_entry(store, &change);
            break;
        case KV_FOLLOW_CAUGHT_UP:
            return STATUS_OK;
        case KV_FOLLOW_RESTART: /* the index keeps the newest revision: nothing to drop */
        case KV_FOLLOW_IDLE:
            break;
        case KV_FOLLOW_STOPPED:
            return status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE", "loading the books was stopped");
        }
        waited_ms += timestamp_monotonic_ms() - before;
        if (waited_ms >= LOAD_TIMEOUT_MS)
            return status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE",
                              "loading the books: NATS did not deliver them in %d s", LOAD_TIMEOUT_MS / 1000);
    }
}

/* Follows the bucket for good (kv_follow renews a watch that fails or outlived a NATS
 * reconnect). A new watch delivers every book again; the index keeps the newest revision of
 * each, and books are never deleted, so nothing is lost in between. */
static void *watch_main(void *arg) {
    book_store *store = arg;
    for (;;) {
        kv_change change;
        kv_follow_event what = kv_follow_next(store->follow, 500, &change);
        if (what == KV_FOLLOW_STOPPED)
            return NULL;
        if (what == KV_FOLLOW_ENTRY)
            apply_watch_entry(store, &change);
    }
}

status_code book_store_open(nats_connection *connection, int replicas, book_store **out,
                            status *st) {
    book_store *store = calloc(1, sizeof *store);
    if (store == NULL || (store->index = book_index_create()) == NULL) {
        free(store);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    status_code code = kv_bucket_open(connection, "books", replicas, &store->bucket, st);
    if (code == STATUS_OK && (store->follow = kv_follow_start(store->bucket, 0)) == NULL)
        code = status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (code == STATUS_OK)
        code = load_initial(store, st);
    if (code == STATUS_OK) {
        if (pthread_create(&store->watch_thread, NULL, watch_main, store) == 0)
            store->watching = true;
        else
            code = status_set(st, STATUS_INTERNAL, "THREAD", "cannot start the book watcher");
    }
    if (code != STATUS_OK) {
        book_store_close(store);
        return code;
    }
    LOG_INFO("loaded %zu books", book_index_count(store->index));
    *out = store;
    return STATUS_OK;
}

void book_store_close(book_store *store) {
    if (store == NULL)
        return;
    if (store->follow)
        kv_follow_stop(store->follow); /* ends the watch thread's wait */
    if (store->watching)
        pthread_join(store->watch_thread, NULL);
    kv_follow_close(store->follow);
    kv_bucket_close(store->bucket);
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
