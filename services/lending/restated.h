/* restated.h - loans' final events waiting to be announced again. The reconciler queues the
 * final event (packed) of each loan its watch sees settle, due RECONCILE_AFTER later, and
 * sends what is due in one EventsRestated per batch (saga.c; docs/decisions.md, "A final event
 * mypage missed is announced again").
 *
 * No I/O and no locks: the reconciler's thread alone uses it. */
#ifndef LENDING_RESTATED_H
#define LENDING_RESTATED_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct restated_queue restated_queue;

/* Holds at most max events; NULL when out of memory. */
restated_queue *restated_create(size_t max);
void restated_destroy(restated_queue *queue); /* NULL is a no-op */
size_t restated_count(const restated_queue *queue);

/* Queues a copy of the packed event, due at due_ms. True when queued or when the queue is full
 * (the event is not restated then); false when out of memory. */
bool restated_push(restated_queue *queue, int64_t due_ms, const uint8_t *packed, size_t size);

/* The first events in the queue that are due at now_ms, at most max, in the order they came
 * (out[i] points into the queue until restated_drop); how many. An event due later stops the
 * batch even if one behind it is due: the next round takes both. */
size_t restated_due(const restated_queue *queue, int64_t now_ms, ProtobufCBinaryData *out, size_t max);

/* Removes the first count events (those restated_due gave and that were sent). */
void restated_drop(restated_queue *queue, size_t count);

#endif
