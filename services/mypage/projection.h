/* projection.h - keeps the mypage read model up to date from the loan, hold and account events
 * (CQRS).
 *
 * A durable consumer "mypage" on library.events.> (lending's loan, hold and fine events, the
 * catalog's hold answers; the other copy events are acked unread) applies each event to
 * Redis (page_store_apply: atomic and idempotent) and acks it only once Redis has it, so a Redis
 * outage pauses the projection and nothing is lost. After a change it announces the user on
 * the plain NATS subject MYPAGE_CHANGED_SUBJECT, where every replica's WatchMypage streams
 * listen. The rebuild replays the whole stream into a fresh generation and switches to it. */
#ifndef MYPAGE_PROJECTION_H
#define MYPAGE_PROJECTION_H

#include <stdint.h>

#include "nats_connection.h"
#include "page_store.h"
#include "status.h"

/* Payload: the user id whose page changed, or "" for "every page" (after a rebuild). */
#define MYPAGE_CHANGED_SUBJECT "library.mypage.changed"

typedef struct projection projection;

/* Tells every replica's WatchMypage streams that user_id's page changed ("": every page).
 * Best effort: a lost announcement delays a watcher's update only. */
void projection_announce(nats_connection *connection, const char *user_id);

status_code projection_start(nats_connection *connection, page_store *store, int64_t ack_wait_ms,
                             int workers,
                             projection **out, status *st);
void projection_stop(projection *p); /* NULL is a no-op */

/* Replays the LIBRARY stream into a fresh generation of pages and switches over; the pages in
 * use keep answering meanwhile. *events (may be NULL) is the number replayed. */
status_code projection_rebuild(nats_connection *connection, page_store *store, uint64_t *events,
                               status *st);

#endif
