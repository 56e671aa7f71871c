/* loan_index.c - two open-addressing hash tables (loans by id, users by key) under one
 * rwlock. Each entry is one allocation: its payload, then its key. */
#include "loan_index.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

typedef struct entry {
    uint64_t revision;
    size_t count; /* a user: the ids in data */
    size_t size;  /* bytes of data: a loan's packed Loan; a user's ids, each NUL-terminated, oldest first */
    char *key;    /* after the payload, in data */
    uint8_t data[];
} entry;

/* Power-of-two size, linear probing, at most half full; deletion re-seats the probe run. */
typedef struct table {
    entry **slots;
    size_t slot_count, count, bytes;
} table;

struct loan_index {
    pthread_rwlock_t lock;
    table loans, users;
};

static size_t slot_find(const table *t, const char *key) {
    size_t mask = t->slot_count - 1;
    size_t i = text_hash(key) & mask;
    while (t->slots[i] != NULL && strcmp(t->slots[i]->key, key) != 0)
        i = (i + 1) & mask;
    return i;
}

static bool table_grow(table *t) {
    size_t count = t->slot_count ? t->slot_count * 2 : 64;
    entry **old = t->slots;
    size_t old_count = t->slot_count;
    t->slots = calloc(count, sizeof *t->slots);
    if (t->slots == NULL) {
        t->slots = old;
        return false;
    }
    t->slot_count = count;
    for (size_t i = 0; i < old_count; i++)
        if (old[i])
            t->slots[slot_find(t, old[i]->key)] = old[i];
    free(old);
    return true;
}

static void table_free(table *t) {
    for (size_t i = 0; i < t->slot_count; i++)
        free(t->slots[i]);
    free(t->slots);
}

static size_t entry_bytes(const entry *e) {
    return sizeof *e + e->size + strlen(e->key) + 1;
}

/* Takes fresh unless the table holds the same or a newer revision (then fresh is freed).
 * False when out of memory (fresh is freed). */
static bool table_put(table *t, entry *fresh) {
    if ((t->count + 1) * 2 > t->slot_count && !table_grow(t)) {
        free(fresh);
        return false;
    }
    size_t slot = slot_find(t, fresh->key);
    entry *old = t->slots[slot];
    if (old != NULL && old->revision >= fresh->revision) {
        free(fresh);
        return true;
    }
    if (old != NULL) {
        t->bytes -= entry_bytes(old);
        free(old);
    } else {
        t->count++;
    }
    t->slots[slot] = fresh;
    t->bytes += entry_bytes(fresh);
    return true;
}

static void table_remove(table *t, const char *key, uint64_t revision) {
    size_t mask = t->slot_count - 1, slot = slot_find(t, key);
    entry *old = t->slots[slot];
    if (old == NULL || old->revision >= revision)
        return;
    t->bytes -= entry_bytes(old);
    free(old);
    t->count--;
    t->slots[slot] = NULL;
    for (size_t j = (slot + 1) & mask; t->slots[j] != NULL; j = (j + 1) & mask) {
        entry *moved = t->slots[j];
        t->slots[j] = NULL;
        t->slots[slot_find(t, moved->key)] = moved;
    }
}

static entry *entry_new(const char *key, size_t size, uint64_t revision) {
    size_t key_size = strlen(key) + 1;
    entry *e = malloc(sizeof *e + size + key_size);
    if (e == NULL)
        return NULL;
    e->revision = revision;
    e->count = 0;
    e->size = size;
    e->key = memcpy((char *)e->data + size, key, key_size);
    return e;
}

loan_index *loan_index_create(void) {
    loan_index *index = calloc(1, sizeof *index);
    if (index == NULL)
        return NULL;
    if (!table_grow(&index->loans) || !table_grow(&index->users)) {
        table_free(&index->loans);
        free(index);
        return NULL;
    }
    pthread_rwlock_init(&index->lock, NULL);
    return index;
}

void loan_index_destroy(loan_index *index) {
    if (index == NULL)
        return;
    table_free(&index->loans);
    table_free(&index->users);
    pthread_rwlock_destroy(&index->lock);
    free(index);
}

/* Built outside the lock, swapped in under it. */
static bool put(loan_index *index, table *t, entry *fresh) {
    if (fresh == NULL)
        return false;
    pthread_rwlock_wrlock(&index->lock);
    bool stored = table_put(t, fresh);
    pthread_rwlock_unlock(&index->lock);
    return stored;
}

bool loan_index_put_loan(loan_index *index, const char *loan_id, const uint8_t *loan, size_t size,
                         uint64_t revision) {
    entry *fresh = entry_new(loan_id, size, revision);
    if (fresh != NULL && size > 0)
        memcpy(fresh->data, loan, size);
    return put(index, &index->loans, fresh);
}

bool loan_index_put_user(loan_index *index, const char *user_key, const char *const *history, size_t count,
                         uint64_t revision) {
    size_t size = 0;
    for (size_t i = 0; i < count; i++)
        size += strlen(history[i]) + 1;
    entry *fresh = entry_new(user_key, size, revision);
    if (fresh == NULL)
        return false;
    fresh->count = count;
    char *at = (char *)fresh->data;
    for (size_t i = 0; i < count; i++) {
        size_t length = strlen(history[i]) + 1;
        memcpy(at, history[i], length);
        at += length;
    }
    return put(index, &index->users, fresh);
}

void loan_index_remove_loan(loan_index *index, const char *loan_id, uint64_t revision) {
    pthread_rwlock_wrlock(&index->lock);
    table_remove(&index->loans, loan_id, revision);
    pthread_rwlock_unlock(&index->lock);
}

void loan_index_remove_user(loan_index *index, const char *user_key, uint64_t revision) {
    pthread_rwlock_wrlock(&index->lock);
    table_remove(&index->users, user_key, revision);
    pthread_rwlock_unlock(&index->lock);
}

bool loan_index_get_loan(loan_index *index, const char *loan_id, arena *a, uint8_t **loan, size_t *size) {
    bool found = false;
    pthread_rwlock_rdlock(&index->lock);
    const entry *e = index->loans.slots[slot_find(&index->loans, loan_id)];
    uint8_t *copy = e ? arena_alloc(a, e->size ? e->size : 1) : NULL;
    if (copy != NULL) {
        memcpy(copy, e->data, e->size);
        *loan = copy;
        *size = e->size;
        found = true;
    }
    pthread_rwlock_unlock(&index->lock);
    return found;
}

bool loan_index_get_user(loan_index *index, const char *user_key, arena *a, char ***history, size_t *count) {
    bool found = false;
    pthread_rwlock_rdlock(&index->lock);
    const entry *e = index->users.slots[slot_find(&index->users, user_key)];
    char *ids = e ? arena_alloc(a, e->size ? e->size : 1) : NULL;
    char **list = e ? arena_alloc(a, (e->count ? e->count : 1) * sizeof *list) : NULL;
    if (ids != NULL && list != NULL) {
        memcpy(ids, e->data, e->size);
        for (size_t i = 0; i < e->count; i++) {
            list[i] = ids;
            ids += strlen(ids) + 1;
        }
        *history = list;
        *count = e->count;
        found = true;
    }
    pthread_rwlock_unlock(&index->lock);
    return found;
}

uint64_t loan_index_loan_revision(loan_index *index, const char *loan_id) {
    pthread_rwlock_rdlock(&index->lock);
    const entry *e = index->loans.slots[slot_find(&index->loans, loan_id)];
    uint64_t revision = e ? e->revision : 0;
    pthread_rwlock_unlock(&index->lock);
    return revision;
}

size_t loan_index_loan_count(loan_index *index) {
    pthread_rwlock_rdlock(&index->lock);
    size_t count = index->loans.count;
    pthread_rwlock_unlock(&index->lock);
    return count;
}

size_t loan_index_user_count(loan_index *index) {
    pthread_rwlock_rdlock(&index->lock);
    size_t count = index->users.count;
    pthread_rwlock_unlock(&index->lock);
    return count;
}

size_t loan_index_bytes(loan_index *index) {
    pthread_rwlock_rdlock(&index->lock);
    size_t bytes = sizeof *index + index->loans.bytes + index->users.bytes +
                   (index->loans.slot_count + index->users.slot_count) * sizeof(entry *);
    pthread_rwlock_unlock(&index->lock);
    return bytes;
}
