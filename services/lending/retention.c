/* retention.c - a binary min-heap of (due time, record) for the reconciler. */
#include "retention.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    int64_t due_ms;
    retention_kind kind;
    char *id;
} entry;

struct retention_queue {
    entry *entries;
    size_t count, capacity;
};

retention_queue *retention_queue_create(void) {
    return calloc(1, sizeof(retention_queue));
}

void retention_queue_clear(retention_queue *queue) {
    for (size_t i = 0; i < queue->count; i++)
        free(queue->entries[i].id);
    queue->count = 0;
}

void retention_queue_destroy(retention_queue *queue) {
    if (queue == NULL)
        return;
    retention_queue_clear(queue);
    free(queue->entries);
    free(queue);
}

size_t retention_queue_count(const retention_queue *queue) {
    return queue->count;
}

static void swap(entry *x, entry *y) {
    entry t = *x;
    *x = *y;
    *y = t;
}

bool retention_queue_push(retention_queue *queue, int64_t due_ms, retention_kind kind, const char *id) {
    if (queue->count == queue->capacity) {
        size_t capacity = queue->capacity ? queue->capacity * 2 : 64;
        entry *grown = realloc(queue->entries, capacity * sizeof *grown);
        if (grown == NULL)
            return false;
        queue->entries = grown;
        queue->capacity = capacity;
    }
    char *copy = strdup(id);
    if (copy == NULL)
        return false;
    size_t i = queue->count++;
    queue->entries[i] = (entry){.due_ms = due_ms, .kind = kind, .id = copy};
    while (i > 0 && queue->entries[(i - 1) / 2].due_ms > queue->entries[i].due_ms) {
        swap(&queue->entries[(i - 1) / 2], &queue->entries[i]);
        i = (i - 1) / 2;
    }
    return true;
}

/* Takes the earliest entry out; the caller frees its id. */
static entry pop(retention_queue *queue) {
    entry top = queue->entries[0];
    queue->entries[0] = queue->entries[--queue->count];
    for (size_t i = 0;;) {
        size_t smallest = i, left = 2 * i + 1, right = left + 1;
        if (left < queue->count && queue->entries[left].due_ms < queue->entries[smallest].due_ms)
            smallest = left;
        if (right < queue->count && queue->entries[right].due_ms < queue->entries[smallest].due_ms)
            smallest = right;
        if (smallest == i)
            break;
        swap(&queue->entries[i], &queue->entries[smallest]);
        i = smallest;
    }
    return top;
}

size_t retention_queue_due(retention_queue *queue, int64_t now_ms, size_t max, retention_visit visit, void *arg) {
    size_t visited = 0;
    while (visited < max && queue->count > 0 && queue->entries[0].due_ms <= now_ms) {
        entry e = pop(queue);
        visit(arg, e.kind, e.id);
        free(e.id);
        visited++;
    }
    return visited;
}
