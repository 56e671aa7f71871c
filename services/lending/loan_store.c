/* loan_store.c - the loans bucket. */
#include "loan_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

enum { UPDATE_ATTEMPTS = 32, KEY_MAX = 256 };

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

status_code loan_store_get(loan_store *store, const char *loan_id, arena *a, loan_record **out,
                           status *st) {
    char key[KEY_MAX];
    loan_key(loan_id, key);
    kv_value value;
    status_code code = kv_get(store->bucket, key, a, &value, st);
    if (code == STATUS_NOT_FOUND)
        return status_set(st, STATUS_NOT_FOUND, "LOAN_NOT_FOUND", "no loan with id %s", loan_id);
    if (code != STATUS_OK)
        return code;
    loan_record *record = (void *)arena_unpack(a, &library__lending__internal__loan_record__descriptor, value.data, value.size);
    if (record == NULL || record->loan == NULL)
        return status_set(st, STATUS_DATA_LOSS, "CORRUPT_RECORD", "a stored loan does not parse");
    *out = record;
    return STATUS_OK;
}

status_code loan_store_create(loan_store *store, const loan_record *record, arena *a, status *st) {
    char key[KEY_MAX];
    loan_key(record->loan->loan_id, key);
    size_t size = 0;
    uint8_t *bytes = arena_pack(a, &record->base, &size);
    if (bytes == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    return kv_create(store->bucket, key, bytes, size, NULL, st);
}

/* One read-modify-write job for either record type. */
typedef struct record_job {
    const ProtobufCMessageDescriptor *type;
    loan_change change_loan; /* exactly one of the two is set */
    user_change change_user;
    void *arg;
    bool create_if_missing;
    ProtobufCMessage *result;
} record_job;

static status_code record_mutation(void *arg, arena *a, const kv_value *current, uint8_t **next,
                                   size_t *next_size, status *st) {
    record_job *job = arg;
    ProtobufCMessage *record = NULL;
    if (current != NULL) {
        record = arena_unpack(a, job->type, current->data, current->size);
        if (record == NULL)
            return status_set(st, STATUS_DATA_LOSS, "CORRUPT_RECORD", "a stored record does not parse");
    } else if (job->create_if_missing) {
        record = arena_new_message(a, job->type);
        if (record == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    } else {
        return status_set(st, STATUS_NOT_FOUND, "LOAN_NOT_FOUND", "no such loan");
    }
    bool changed = true;
    status_code code = job->change_loan
                           ? job->change_loan(job->arg, a, (loan_record *)record, &changed, st)
                           : job->change_user(job->arg, a, (user_record *)record, &changed, st);
    if (code != STATUS_OK)
        return code;
    job->result = record;
    if (!changed)
        return STATUS_OK;
    *next = arena_pack(a, record, next_size);
    return *next ? STATUS_OK : status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

status_code loan_store_update(loan_store *store, const char *loan_id, arena *a, loan_change change,
                              void *arg, loan_record **out, status *st) {
    char key[KEY_MAX];
    loan_key(loan_id, key);
    record_job job = {.type = &library__lending__internal__loan_record__descriptor,
                      .change_loan = change, .arg = arg};
    status_code code = kv_mutate(store->bucket, key, a, record_mutation, &job, UPDATE_ATTEMPTS, NULL, st);
    if (code == STATUS_OK && out)
        *out = (loan_record *)job.result;
    return code;
}

status_code loan_store_get_user(loan_store *store, const char *user_id, arena *a, user_record **out,
                                status *st) {
    char key[KEY_MAX];
    if (!user_key(a, user_id, key))
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED", "user_id is too long");
    kv_value value;
    status_code code = kv_get(store->bucket, key, a, &value, st);
    if (code == STATUS_NOT_FOUND) {
        *out = (void *)arena_new_message(a, &library__lending__internal__user_record__descriptor);
        return *out ? STATUS_OK : status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    if (code != STATUS_OK)
        return code;
    *out = (void *)arena_unpack(a, &library__lending__internal__user_record__descriptor, value.data, value.size);
    return *out ? STATUS_OK : status_set(st, STATUS_DATA_LOSS, "CORRUPT_RECORD", "a user record does not parse");
}

status_code loan_store_update_user(loan_store *store, const char *user_id, arena *a,
                                   user_change change, void *arg, user_record **out, status *st) {
    char key[KEY_MAX];
    if (!user_key(a, user_id, key))
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED", "user_id is too long");
    record_job job = {.type = &library__lending__internal__user_record__descriptor,
                      .change_user = change, .arg = arg, .create_if_missing = true};
    status_code code = kv_mutate(store->bucket, key, a, record_mutation, &job, UPDATE_ATTEMPTS, NULL, st);
    if (code == STATUS_OK && out)
        *out = (user_record *)job.result;
    return code;
}
