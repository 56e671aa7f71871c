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

/* A store's typed change as kv_record_update calls it: exactly one of the two is set. */
typedef struct typed_change {
    loan_change loan;
    user_change user;
    void *arg;
} typed_change;

static status_code change_record(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st) {
    typed_change *typed = arg;
    return typed->loan ? typed->loan(typed->arg, a, (loan_record *)record, changed, st)
                       : typed->user(typed->arg, a, (user_record *)record, changed, st);
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
