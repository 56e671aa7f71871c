/* retention.h - when settled loans and holds are forgotten. RETENTION after its last change, a
 * settled loan (RETURNED with the copy back, or CANCELED) leaves the user's history and the
 * bucket, and a settled hold likewise (docs/decisions.md, "Retention"). The reconciler keeps
 * them in a queue ordered by the time each may go, fed from its watch on the bucket like
 * open_loans.h. An entry may be stale (the record changed again, or is gone): the visit
 * reads the record and decides.
 *
 * No I/O and no locks: the reconciler's thread alone uses it. */
#ifndef LENDING_RETENTION_H
#define LENDING_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum retention_kind { RETENTION_LOAN, RETENTION_HOLD } retention_kind;

typedef struct retention_queue retention_queue;

retention_queue *retention_queue_create(void); /* NULL when out of memory */
void retention_queue_destroy(retention_queue *queue); /* NULL is a no-op */
void retention_queue_clear(retention_queue *queue);
size_t retention_queue_count(const retention_queue *queue);

/* The record `id` of `kind` may be forgotten from due_ms on. False when out of memory. */
bool retention_queue_push(retention_queue *queue, int64_t due_ms, retention_kind kind, const char *id);

typedef void (*retention_visit)(void *arg, retention_kind kind, const char *id);

/* Takes each entry due at now_ms out of the queue, earliest first, at most max of them, and
 * visits it; returns how many. The visit may push (an entry not yet ready goes back). */
size_t retention_queue_due(retention_queue *queue, int64_t now_ms, size_t max, retention_visit visit, void *arg);

#endif
