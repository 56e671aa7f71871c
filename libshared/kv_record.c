/* kv_record.c - protobuf records over kv_get / kv_create / kv_mutate. */
#include "kv_record.h"

enum { UPDATE_ATTEMPTS = 32 };

static status_code not_found(const kv_record_type *type, const char *id, status *st) {
    return status_set(st, STATUS_NOT_FOUND, type->not_found_reason, "no %s with id %.64s", type->name,
                      id ? id : "");
}

static status_code decode(const kv_record_type *type, arena *a, const uint8_t *data, size_t size,
                          ProtobufCMessage **out, status *st) {
    ProtobufCMessage *record = arena_unpack(a, type->descriptor, data, size);
    if (record == NULL || (type->whole != NULL && !type->whole(record)))
        return status_set(st, STATUS_DATA_LOSS, "CORRUPT_RECORD", "a stored %s does not parse", type->name);
    *out = record;
    return STATUS_OK;
}

status_code kv_record_get_revision(kv_bucket *bucket, const kv_record_type *type, const char *key, const char *id,
                                   arena *a, ProtobufCMessage **out, uint64_t *revision, status *st) {
    kv_value value;
    status_code code = kv_get(bucket, key, a, &value, st);
    if (code == STATUS_NOT_FOUND)
        return not_found(type, id, st);
    if (code != STATUS_OK)
        return code;
    code = decode(type, a, value.data, value.size, out, st);
    if (code == STATUS_OK)
        *revision = value.revision;
    return code;
}

status_code kv_record_get(kv_bucket *bucket, const kv_record_type *type, const char *key, const char *id, arena *a,
                          ProtobufCMessage **out, status *st) {
    uint64_t revision = 0;
    return kv_record_get_revision(bucket, type, key, id, a, out, &revision, st);
}

status_code kv_record_create(kv_bucket *bucket, const char *key, const ProtobufCMessage *record, arena *a,
                             kv_record_written *written, status *st) {
    size_t size = 0;
    uint8_t *bytes = arena_pack(a, record, &size);
    if (bytes == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    uint64_t revision = 0;
    status_code code = kv_create(bucket, key, bytes, size, &revision, st);
    if (code == STATUS_OK && written != NULL)
        *written = (kv_record_written){.record = (ProtobufCMessage *)record, .bytes = bytes, .size = size,
                                       .revision = revision};
    return code;
}

typedef struct update_job {
    const kv_record_type *type;
    const char *id;
    bool create_if_missing;
    kv_record_change change;
    void *arg;
    kv_record_written result; /* of the last run of the mutation */
} update_job;

static status_code mutation(void *arg, arena *a, const kv_value *current, uint8_t **next, size_t *next_size,
                            status *st) {
    update_job *job = arg;
    ProtobufCMessage *record = NULL;
    job->result = (kv_record_written){0};
    status_code code = STATUS_OK;
    if (current != NULL)
        code = decode(job->type, a, current->data, current->size, &record, st);
    else if (!job->create_if_missing)
        code = not_found(job->type, job->id, st);
    else if ((record = arena_new_message(a, job->type->descriptor)) == NULL)
        code = status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (code != STATUS_OK)
        return code;
    bool changed = true;
    code = job->change(job->arg, a, record, &changed, st);
    if (code != STATUS_OK)
        return code;
    job->result.record = record;
    if (!changed)
        return STATUS_OK;
    *next = arena_pack(a, record, next_size);
    if (*next == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    job->result.bytes = *next;
    job->result.size = *next_size;
    return STATUS_OK;
}

status_code kv_record_update(kv_bucket *bucket, const kv_record_type *type, const char *key, const char *id,
                             bool create_if_missing, kv_record_change change, void *arg, arena *a,
                             kv_record_written *written, status *st) {
    update_job job = {.type = type, .id = id, .create_if_missing = create_if_missing, .change = change, .arg = arg};
    uint64_t revision = 0;
    status_code code = kv_mutate(bucket, key, a, mutation, &job, UPDATE_ATTEMPTS, &revision, st);
    if (code != STATUS_OK)
        return code;
    job.result.revision = revision;
    if (written != NULL)
        *written = job.result;
    return STATUS_OK;
}
