/* kv.c - JetStream key-value over NATS.c, with the errors mapped onto status codes. */
#include "kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kv_bucket {
    nats_connection *connection;
    kvStore *store;
};

static status_code require_connection(kv_bucket *bucket, status *st) {
    if (!nats_connection_is_up(bucket->connection))
        return status_set(st, STATUS_UNAVAILABLE, "NATS_UNAVAILABLE",
                          "the store is unavailable (no connection to NATS)");
    return STATUS_OK;
}

status_code kv_bucket_open(nats_connection *connection, const char *name, int replicas,
                           kv_bucket **out, status *st) {
    kv_bucket *bucket = calloc(1, sizeof *bucket);
    if (bucket == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    bucket->connection = connection;
    jsCtx *js = nats_connection_jetstream(connection);
    natsStatus s = js_KeyValue(&bucket->store, js, name);
    if (s == NATS_NOT_FOUND) {
        kvConfig config;
        kvConfig_Init(&config);
        config.Bucket = name;
        config.History = 1;
        config.StorageType = js_FileStorage;
        config.Replicas = replicas > 0 ? replicas : 1;
        s = js_CreateKeyValue(&bucket->store, js, &config);
    }
    if (s != NATS_OK) {
        free(bucket);
        char what[96];
        snprintf(what, sizeof what, "opening bucket %s", name);
        return nats_status_to_status(s, what, st);
    }
    *out = bucket;
    return STATUS_OK;
}

void kv_bucket_close(kv_bucket *bucket) {
    if (bucket == NULL)
        return;
    kvStore_Destroy(bucket->store);
    free(bucket);
}

kvStore *kv_bucket_store(kv_bucket *bucket) {
    return bucket->store;
}

status_code kv_get(kv_bucket *bucket, const char *key, arena *a, kv_value *out, status *st) {
    if (require_connection(bucket, st) != STATUS_OK)
        return st->code;
    kvEntry *entry = NULL;
    natsStatus s = kvStore_Get(&entry, bucket->store, key);
    if (s != NATS_OK)
        return nats_status_to_status(s, "reading the store", st);
    int size = kvEntry_ValueLen(entry);
    uint8_t *copy = arena_alloc(a, size > 0 ? (size_t)size : 1);
    if (copy == NULL) {
        kvEntry_Destroy(entry);
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    if (size > 0)
        memcpy(copy, kvEntry_Value(entry), (size_t)size);
    out->data = copy;
    out->size = (size_t)(size > 0 ? size : 0);
    out->revision = kvEntry_Revision(entry);
    kvEntry_Destroy(entry);
    return STATUS_OK;
}

status_code kv_create(kv_bucket *bucket, const char *key, const void *data, size_t size,
                      uint64_t *revision, status *st) {
    if (require_connection(bucket, st) != STATUS_OK)
        return st->code;
    uint64_t written = 0;
    natsStatus s = kvStore_Create(&written, bucket->store, key, data, (int)size);
    if (s != NATS_OK) {
        status_code code = nats_status_to_status(s, "writing the store", st);
        if (code == STATUS_ABORTED)
            return status_set(st, STATUS_ALREADY_EXISTS, "ALREADY_EXISTS", "%s already exists", key);
        return code;
    }
    if (revision)
        *revision = written;
    return STATUS_OK;
}

status_code kv_update(kv_bucket *bucket, const char *key, const void *data, size_t size,
                      uint64_t expected_revision, uint64_t *revision, status *st) {
    if (require_connection(bucket, st) != STATUS_OK)
        return st->code;
    uint64_t written = 0;
    natsStatus s = kvStore_Update(&written, bucket->store, key, data, (int)size, expected_revision);
    if (s != NATS_OK)
        return nats_status_to_status(s, "writing the store", st);
    if (revision)
        *revision = written;
    return STATUS_OK;
}

status_code kv_mutate(kv_bucket *bucket, const char *key, arena *a, kv_mutation mutation,
                      void *arg, int max_attempts, uint64_t *revision, status *st) {
    for (int attempt = 0; attempt < max_attempts; attempt++) {
        kv_value current;
        status_code code = kv_get(bucket, key, a, &current, st);
        if (code != STATUS_OK && code != STATUS_NOT_FOUND)
            return code;
        bool exists = code == STATUS_OK;
        uint8_t *next = NULL;
        size_t next_size = 0;
        code = mutation(arg, a, exists ? &current : NULL, &next, &next_size, st);
        if (code != STATUS_OK)
            return code;
        if (next == NULL) {
            if (revision)
                *revision = exists ? current.revision : 0;
            return STATUS_OK;
        }
        code = exists ? kv_update(bucket, key, next, next_size, current.revision, revision, st)
                      : kv_create(bucket, key, next, next_size, revision, st);
        if (code == STATUS_OK)
            return STATUS_OK;
        if (code != STATUS_ABORTED && code != STATUS_ALREADY_EXISTS)
            return code;
    }
    return status_set(st, STATUS_ABORTED, "CONCURRENT_UPDATE",
                      "%s kept changing concurrently; try again", key);
}
