/* loan_store.c - the loans bucket, and the read index that a view of it (kv_view) keeps. */
#include "loan_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_record.h"
#include "kv_view.h"
#include "loan_index.h"
#include "log.h"
#include "text.h"

enum { KEY_MAX = 256 };

struct loan_store {
    kv_view *view;     /* the bucket, followed into the index */
    kv_bucket *bucket; /* the view's */
    loan_index *index;
};

/* --- the read index --------------------------------------------------------------------------- */

/* Keeps the loan as read or written at revision; a failure only leaves the index behind (GetLoan
 * then reads what it holds, or the bucket on a miss), so it is logged, not returned. */
static bool index_loan(loan_store *store, arena *a, const loan_message *loan, uint64_t revision) {
    size_t size = 0;
    uint8_t *packed = arena_pack(a, &loan->base, &size);
    if (packed != NULL && loan_index_put_loan(store->index, loan->loan_id, packed, size, revision))
        return true;
    LOG_WARN("out of memory: the loan index misses loan %s at revision %llu", loan->loan_id,
             (unsigned long long)revision);
    return false;
}

static bool index_user(loan_store *store, const char *key, const user_record *user, uint64_t revision) {
    if (loan_index_put_user(store->index, key, (const char *const *)user->history, user->n_history, revision))
        return true;
    LOG_WARN("out of memory: the loan index misses user %s at revision %llu", key,
             (unsigned long long)revision);
    return false;
}

/* One change of the bucket: loans and user records are indexed, holds and queues are not.
 * False when the index missed it. */
static bool index_change(void *arg, arena *a, const kv_change *change) {
    loan_store *store = arg;
    bool loan = strncmp(change->key, "loan.", 5) == 0, user = strncmp(change->key, "user.", 5) == 0;
    const char *id = change->key + 5;
    if (!loan && !user)
        return true;
    if (change->deleted) {
        if (loan)
            loan_index_remove_loan(store->index, id, change->revision);
        else
            loan_index_remove_user(store->index, id, change->revision);
        return true;
    }
    const ProtobufCMessageDescriptor *type = loan ? &library__lending__internal__loan_record__descriptor
                                                  : &library__lending__internal__user_record__descriptor;
    ProtobufCMessage *record = arena_unpack(a, type, change->value, change->size);
    if (record == NULL || (loan && ((loan_record *)record)->loan == NULL)) {
        LOG_ERROR("a stored record %s at revision %llu does not parse; not indexed", change->key,
                  (unsigned long long)change->revision);
        return true;
    }
    if (loan)
        return index_loan(store, a, ((loan_record *)record)->loan, change->revision);
    return index_user(store, id, (user_record *)record, change->revision);
}

/* The index holds every key's newest revision, so a fresh watch (kv_follow renews one that
 * failed, outlived a NATS reconnect or is LOAN_STORE_REWATCH_MS old) that delivers every key
 * again needs nothing dropped. */
static void index_caught_up(void *arg) {
    loan_store *store = arg;
    LOG_INFO("loan index: %zu loans, %zu users, %zu bytes", loan_index_loan_count(store->index),
             loan_index_user_count(store->index), loan_index_bytes(store->index));
}

/* The index fills in the background while GetLoan and ListLoans read the bucket for what it
 * does not hold yet. The reconciler reads the same watch through loan_store_follow. */
status_code loan_store_open(nats_connection *connection, int replicas, loan_store **out,
                            status *st) {
    loan_store *store = calloc(1, sizeof *store);
    if (store == NULL || (store->index = loan_index_create()) == NULL) {
        free(store);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    kv_view_options options = {.bucket = "loans", .replicas = replicas, .renew_ms = LOAN_STORE_REWATCH_MS};
    kv_view_handlers handlers = {.on_change = index_change, .on_caught_up = index_caught_up, .arg = store};
    status_code code = kv_view_open(connection, &options, &handlers, &store->view, st);
    if (code != STATUS_OK) {
        loan_store_close(store);
        return code;
    }
    store->bucket = kv_view_bucket(store->view);
    *out = store;
    return STATUS_OK;
}

void loan_store_close(loan_store *store) {
    if (store == NULL)
        return;
    kv_view_close(store->view);
    loan_index_destroy(store->index);
    free(store);
}

kv_follow *loan_store_follow(loan_store *store) {
    return kv_view_branch(store->view);
}

/* "<prefix><user key>": user ids are token subjects (any text), and base64url keeps them
 * inside the key alphabet. */
static bool user_key_with(arena *a, const char *prefix, const char *user_id, char key[KEY_MAX]) {
    char *encoded = text_base64url_encode(a, (const uint8_t *)user_id, strlen(user_id));
    if (encoded == NULL)
        return false;
    size_t prefix_length = strlen(prefix), length = strlen(encoded);
    if (prefix_length + length + 1 >= KEY_MAX)
        return false;
    memcpy(key, prefix, prefix_length);
    memcpy(key + prefix_length, encoded, length + 1);
    return true;
}

static bool user_key(arena *a, const char *user_id, char key[KEY_MAX]) {
    return user_key_with(a, "user.", user_id, key);
}

static void loan_key(const char *loan_id, char key[KEY_MAX]) {
    snprintf(key, KEY_MAX, "loan.%s", loan_id);
}

static bool loan_whole(const ProtobufCMessage *record) {
    return ((const loan_record *)record)->loan != NULL;
}

static const kv_record_type loan_type = {.descriptor = &library__lending__internal__loan_record__descriptor,
                                         .name = "loan", .whole = loan_whole,
                                         .not_found_reason = "LOAN_NOT_FOUND"};
static const kv_record_type user_type = {.descriptor = &library__lending__internal__user_record__descriptor,
                                         .name = "user record", .not_found_reason = "USER_NOT_FOUND"};

status_code loan_store_get(loan_store *store, const char *loan_id, arena *a, loan_record **out,
                           status *st) {
    char key[KEY_MAX];
    loan_key(loan_id, key);
    uint64_t revision = 0;
    status_code code = kv_record_get_revision(store->bucket, &loan_type, key, loan_id, a, (ProtobufCMessage **)out,
                                              &revision, st);
    if (code == STATUS_OK) /* what a caller answers with, the index must not show older */
        index_loan(store, a, (*out)->loan, revision);
    return code;
}

status_code loan_store_create(loan_store *store, const loan_record *record, arena *a, status *st) {
    char key[KEY_MAX];
    loan_key(record->loan->loan_id, key);
    kv_record_written written;
    status_code code = kv_record_create(store->bucket, key, &record->base, a, &written, st);
    if (code == STATUS_OK)
        index_loan(store, a, record->loan, written.revision);
    return code;
}

bool loan_store_find_loan(loan_store *store, const char *loan_id, arena *a, loan_message **out) {
    uint8_t *packed = NULL;
    size_t size = 0;
    if (!loan_index_get_loan(store->index, loan_id, a, &packed, &size))
        return false;
    loan_message *loan = (loan_message *)arena_unpack(a, &library__lending__v1__loan__descriptor, packed, size);
    if (loan == NULL)
        return false;
    *out = loan;
    return true;
}

bool loan_store_find_history(loan_store *store, const char *user_id, arena *a, char ***history, size_t *count) {
    char key[KEY_MAX];
    return user_key(a, user_id, key) && loan_index_get_user(store->index, key + 5, a, history, count);
}

/* --- the older part of a user's history ("history.<user key>", user_record.h) ------------------- */

static const kv_record_type history_type = {
    .descriptor = &library__lending__internal__user_history__descriptor, .name = "user history",
    .not_found_reason = "HISTORY_NOT_FOUND"};

status_code loan_store_get_history(loan_store *store, const char *user_id, arena *a, user_history **out,
                                   uint64_t *revision, status *st) {
    char key[KEY_MAX];
    if (!user_key_with(a, "history.", user_id, key))
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED", "user_id is too long");
    status_code code =
        kv_record_get_revision(store->bucket, &history_type, key, user_id, a, (ProtobufCMessage **)out, revision, st);
    if (code != STATUS_NOT_FOUND)
        return code;
    *revision = 0;
    *out = (void *)arena_new_message(a, history_type.descriptor); /* nothing moved yet */
    return *out ? STATUS_OK : status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

status_code loan_store_update_history(loan_store *store, const char *user_id, arena *a, history_change change,
                                      void *arg, user_history **out, uint64_t *revision, status *st) {
    char key[KEY_MAX];
    if (!user_key_with(a, "history.", user_id, key))
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED", "user_id is too long");
    kv_record_written written;
    status_code code =
        kv_record_update(store->bucket, &history_type, key, user_id, true, change, arg, a, &written, st);
    if (code != STATUS_OK)
        return code;
    if (out)
        *out = (user_history *)written.record;
    if (revision)
        *revision = written.revision;
    return STATUS_OK;
}

/* A store's typed change as kv_record_update calls it: exactly one is set. */
typedef struct typed_change {
    loan_change loan;
    user_change user;
    hold_change hold;
    void *arg;
} typed_change;

static status_code change_record(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st) {
    typed_change *typed = arg;
    if (typed->loan)
        return typed->loan(typed->arg, a, (loan_record *)record, changed, st);
    if (typed->hold)
        return typed->hold(typed->arg, a, (hold_record *)record, changed, st);
    return typed->user(typed->arg, a, (user_record *)record, changed, st);
}

status_code loan_store_update(loan_store *store, const char *loan_id, arena *a, loan_change change,
                              void *arg, loan_record **out, status *st) {
    char key[KEY_MAX];
    loan_key(loan_id, key);
    typed_change typed = {.loan = change, .arg = arg};
    kv_record_written written;
    status_code code = kv_record_update(store->bucket, &loan_type, key, loan_id, false, change_record, &typed, a,
                                        &written, st);
    if (code == STATUS_OK) /* written or not, the record is the bucket's at that revision */
        index_loan(store, a, ((loan_record *)written.record)->loan, written.revision);
    if (code == STATUS_OK && out)
        *out = (loan_record *)written.record;
    return code;
}

status_code loan_store_get_user(loan_store *store, const char *user_id, arena *a, user_record **out,
                                status *st) {
    char key[KEY_MAX];
    if (!user_key(a, user_id, key))
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED", "user_id is too long");
    status_code code = kv_record_get(store->bucket, &user_type, key, user_id, a, (ProtobufCMessage **)out, st);
    if (code != STATUS_NOT_FOUND)
        return code;
    *out = (void *)arena_new_message(a, user_type.descriptor); /* a user who never borrowed */
    return *out ? STATUS_OK : status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

status_code loan_store_update_user(loan_store *store, const char *user_id, arena *a,
                                   user_change change, void *arg, user_record **out, status *st) {
    char key[KEY_MAX];
    if (!user_key(a, user_id, key))
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED", "user_id is too long");
    typed_change typed = {.user = change, .arg = arg};
    kv_record_written written;
    status_code code = kv_record_update(store->bucket, &user_type, key, user_id, true, change_record, &typed, a,
                                        &written, st);
    if (code == STATUS_OK && written.bytes) /* ListLoans on this replica reads its own borrows */
        index_user(store, key + 5, (user_record *)written.record, written.revision);
    if (code == STATUS_OK && out)
        *out = (user_record *)written.record;
    return code;
}

/* --- holds and the queues they wait in ------------------------------------------------------ */

static bool hold_whole(const ProtobufCMessage *record) {
    return ((const hold_record *)record)->hold != NULL;
}

static const kv_record_type hold_type = {.descriptor = &library__lending__internal__hold_record__descriptor,
                                         .name = "hold", .whole = hold_whole,
                                         .not_found_reason = "HOLD_NOT_FOUND"};
static const kv_record_type queue_type = {.descriptor = &library__lending__internal__book_queue__descriptor,
                                          .name = "hold queue", .not_found_reason = "BOOK_NOT_FOUND"};

status_code loan_store_get_hold(loan_store *store, const char *hold_id, arena *a, hold_record **out,
                                status *st) {
    char key[KEY_MAX];
    snprintf(key, KEY_MAX, "hold.%s", hold_id);
    return kv_record_get(store->bucket, &hold_type, key, hold_id, a, (ProtobufCMessage **)out, st);
}

status_code loan_store_forget_loan(loan_store *store, const char *loan_id, status *st) {
    char key[KEY_MAX];
    loan_key(loan_id, key);
    return kv_purge(store->bucket, key, st);
}

status_code loan_store_forget_hold(loan_store *store, const char *hold_id, status *st) {
    char key[KEY_MAX];
    snprintf(key, KEY_MAX, "hold.%s", hold_id);
    return kv_purge(store->bucket, key, st);
}

status_code loan_store_create_hold(loan_store *store, const hold_record *record, arena *a, status *st) {
    char key[KEY_MAX];
    snprintf(key, KEY_MAX, "hold.%s", record->hold->hold_id);
    return kv_record_create(store->bucket, key, &record->base, a, NULL, st);
}

status_code loan_store_update_hold(loan_store *store, const char *hold_id, arena *a, hold_change change,
                                   void *arg, hold_record **out, status *st) {
    char key[KEY_MAX];
    snprintf(key, KEY_MAX, "hold.%s", hold_id);
    typed_change typed = {.hold = change, .arg = arg};
    kv_record_written written;
    status_code code = kv_record_update(store->bucket, &hold_type, key, hold_id, false, change_record, &typed, a,
                                        &written, st);
    if (code == STATUS_OK && out)
        *out = (hold_record *)written.record;
    return code;
}

status_code loan_store_get_queue(loan_store *store, const char *book_id, arena *a, book_queue **out,
                                 status *st) {
    char key[KEY_MAX];
    snprintf(key, KEY_MAX, "queue.%s", book_id);
    status_code code = kv_record_get(store->bucket, &queue_type, key, book_id, a, (ProtobufCMessage **)out, st);
    if (code != STATUS_NOT_FOUND)
        return code;
    *out = (void *)arena_new_message(a, queue_type.descriptor); /* nobody ever waited */
    return *out ? STATUS_OK : status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

static status_code keep_newer(void *arg, arena *a, ProtobufCMessage *message, bool *changed, status *st) {
    const Library__Events__V1__HoldQueue *seen = arg;
    book_queue *queue = (book_queue *)message;
    (void)a;
    (void)st;
    *changed = seen->version > queue->version;
    if (*changed) {
        queue->version = seen->version;
        queue->hold_ids = seen->hold_ids;
        queue->n_hold_ids = seen->n_hold_ids;
    }
    return STATUS_OK;
}

status_code loan_store_follow_queue(loan_store *store, const Library__Events__V1__HoldQueue *seen, arena *a,
                                    status *st) {
    char key[KEY_MAX];
    snprintf(key, KEY_MAX, "queue.%s", seen->book_id);
    kv_record_written written;
    return kv_record_update(store->bucket, &queue_type, key, seen->book_id, true, keep_newer, (void *)seen, a,
                            &written, st);
}
