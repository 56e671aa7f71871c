/* restated.c - loans' final events waiting to be announced again: a FIFO of packed events. */
#include "restated.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    int64_t due_ms;
    size_t size;
    uint8_t packed[];
} entry;

struct restated_queue {
    entry *head, *tail;
    size_t count, max;
};

restated_queue *restated_create(size_t max) {
    restated_queue *queue = calloc(1, sizeof *queue);
    if (queue != NULL)
        queue->max = max;
    return queue;
}

void restated_destroy(restated_queue *queue) {
    if (queue == NULL)
        return;
    restated_drop(queue, queue->count);
    free(queue);
}

size_t restated_count(const restated_queue *queue) {
    return queue->count;
}

bool restated_push(restated_queue *queue, int64_t due_ms, const uint8_t *packed, size_t size) {
    if (queue->count >= queue->max)
        return true;
    entry *e = malloc(sizeof *e + size);
    if (e == NULL)
        return false;
    e->next = NULL;
    e->due_ms = due_ms;
    e->size = size;
    memcpy(e->packed, packed, size);
    if (queue->tail)
        queue->tail->next = e;
    else
        queue->head = e;
    queue->tail = e;
    queue->count++;
    return true;
}

size_t restated_due(const restated_queue *queue, int64_t now_ms, ProtobufCBinaryData *out, size_t max) {
    size_t count = 0;
    for (const entry *e = queue->head; e != NULL && e->due_ms <= now_ms && count < max; e = e->next)
        out[count++] = (ProtobufCBinaryData){.len = e->size, .data = (uint8_t *)e->packed};
    return count;
}

void restated_drop(restated_queue *queue, size_t count) {
    for (; count > 0 && queue->head != NULL; count--) {
        entry *e = queue->head;
        queue->head = e->next;
        queue->count--;
        free(e);
    }
    if (queue->head == NULL)
        queue->tail = NULL;
}
