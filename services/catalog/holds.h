/* holds.h - the catalog's part of holds. A book's queue of WAITING holds and the copies set
 * aside for READY ones live in the book record next to the copy counts, so giving a copy to a
 * hold or to the shelf is one compare-and-set: a copy can never go to two holds, and never be
 * lost between a hold and the shelf (docs/decisions.md, "Holds").
 *
 * Every change announces itself through the record's outbox: the hold events are written in
 * the same compare-and-set as the change, and published afterwards by the writer or by the
 * hold sweeper of any replica (holds_outbox_*). Pure functions over the decoded record, run
 * inside book_store_update's loop, so each may run again on a fresher record. */
#ifndef CATALOG_HOLDS_H
#define CATALOG_HOLDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "book_store.h"
#include "events.h"
#include "status.h"

/* Holds kept in holds_settled (so a late HoldPlaced is not queued again). */
enum { HOLDS_SETTLED_KEPT = 1024 };
/* The longest queue one book takes: a record must fit in one NATS message. */
enum { HOLDS_QUEUE_MAX = 2000 };

/* The longest a HoldPlaced may ask a set-aside copy to wait: ten years (no overflow). */
#define HOLDS_PICKUP_MAX_SECONDS (3650LL * 24 * 3600)

typedef struct hold_times {
    int64_t now_ms;
    int64_t pickup_ms; /* HOLD_PICKUP: how long a set-aside copy waits, unless its hold says */
} hold_times;

typedef Library__Catalog__Internal__HoldEntry hold_entry;

/* HoldPlaced: queues the hold (in place-time order) and serves the queue, so a hold on a book
 * with a free copy and nobody before it is READY at once. The copy set aside for it waits the
 * HoldPlaced's pickup_seconds (the holder's policy), or HOLD_PICKUP when that is 0. A hold the record already knows is
 * announced again as it stands (HoldQueued or HoldReady, with the cause's attempt); a settled
 * one is left alone. RESOURCE_EXHAUSTED (QUEUE_FULL) past HOLDS_QUEUE_MAX. */
status_code holds_place(arena *a, book_record *record, const Library__Events__V1__HoldPlaced *placed,
                        uint32_t attempt, const hold_times *times, bool *changed, status *st);

/* HoldCanceled: takes the hold out of the queue, or gives its set-aside copy to the next hold
 * or the shelf, and announces HoldReleased (also for a hold the record never saw, which then
 * counts as settled, so a HoldPlaced arriving after its cancel queues nothing). */
status_code holds_release(arena *a, book_record *record, const Library__Events__V1__HoldCanceled *canceled,
                          uint32_t attempt, const hold_times *times, bool *changed, status *st);

/* Gives free copies (available_copies) to the first WAITING holds: READY, announced with
 * HoldReady. Call after anything that put a copy on the shelf. *first (may be NULL) is the
 * first hold served, or NULL. */
status_code holds_serve(arena *a, book_record *record, const hold_times *times, const char **first,
                        bool *changed, status *st);

/* The READY hold of user_id, whose set-aside copy a loan of that user takes: it leaves
 * holds_ready (the copy now counts as on loan; available_copies does not change). NULL when
 * the user has none. */
const char *holds_take_for_loan(arena *a, book_record *record, const char *user_id, status *st);

/* READY holds past their expire time: EXPIRED (HoldExpired), the copy to the next hold or the
 * shelf. */
status_code holds_expire(arena *a, book_record *record, const hold_times *times, bool *changed, status *st);

/* The earliest expire time of the record's READY holds (Unix ms), or 0. */
int64_t holds_next_expiry(const book_record *record);

/* Takes the events with these ids out of the outbox (they were published). True when one was. */
bool holds_outbox_remove(book_record *record, char *const *event_ids, size_t count);

/* The record after any change: book.on_hold_copies follows holds_ready, and the events added
 * to the outbox since it held `outbox_before` carry the queue as it is now. */
status_code holds_finish(arena *a, book_record *record, size_t outbox_before, status *st);

#endif
