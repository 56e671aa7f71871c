/* loan_store.c - the loans bucket. */
#include "loan_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_record.h"
#include "text.h"

enum { KEY_MAX = 256 };

struct loan_store {
    kv_bucket *bucket;
};

status_code loan_store_open(nats_connection *connection, int replicas, loan_store **out,
                            status *st) {
    loan_store *store = calloc(1, sizeof *store);
    if (store == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    status_code code = kv_bucket_open(connection, "loans", replicas, &store->bucket, st);
    if (code != STATUS_OK) {
        free(store);
        return code;
    }
    *out = store;
    return STATUS_OK;
}

void loan_store_close(loan_store *store) {
    if (store == NULL)
        return;
    kv_bucket_close(store->bucket);
    free(store);
}

kv_bucket *loan_store_bucket(loan_store *store) {
    return store->bucket;
}

/* User ids are token subjects (any text): base64url keeps them inside the key alphabet. */
static bool user_key(arena *a, const char *user_id, char key[KEY_MAX]) {
    char *encoded = text_base64url_encode(a, (const uint8_t *)user_id, strlen(user_id));
    if (encoded == NULL || strlen(encoded) + 6 >= KEY_MAX)
        return false;
    snprintf(key, KEY_MAX, "user.%s", encoded);
    return true;
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
    return kv_record_get(store->bucket, &loan_type, key, loan_id, a, (ProtobufCMessage **)out, st);
}

status_code loan_store_create(loan_store *store, const loan_record *record, arena *a, status *st) {
    char key[KEY_MAX];
    loan_key(record->loan->loan_id, key);
    return kv_record_create(store->bucket, key, &record->base, a, NULL, st);
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
