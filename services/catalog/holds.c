/* holds.c - the queue of holds and the set-aside copies in a book record. */
#include "holds.h"

#include <string.h>

#include "timestamp.h"

static status_code out_of_memory(status *st) {
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

static ssize_t find_entry(hold_entry *const *list, size_t count, const char *hold_id) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(list[i]->hold_id, hold_id) == 0)
            return (ssize_t)i;
    return -1;
}

static bool is_settled(const book_record *record, const char *hold_id) {
    for (size_t i = 0; i < record->n_holds_settled; i++)
        if (strcmp(record->holds_settled[i], hold_id) == 0)
            return true;
    return false;
}

/* Removing keeps the order; the list shrinks in place. */
static hold_entry *remove_entry(hold_entry **list, size_t *count, size_t at) {
    hold_entry *entry = list[at];
    memmove(list + at, list + at + 1, (*count - at - 1) * sizeof *list);
    (*count)--;
    return entry;
}

/* A new list from a with entry inserted at `at`. */
static hold_entry **insert_entry(arena *a, hold_entry **list, size_t *count, size_t at, hold_entry *entry) {
    hold_entry **grown = arena_alloc(a, (*count + 1) * sizeof *grown);
    if (grown == NULL)
        return NULL;
    if (at)
        memcpy(grown, list, at * sizeof *grown);
    grown[at] = entry;
    if (*count > at)
        memcpy(grown + at + 1, list + at, (*count - at) * sizeof *grown);
    (*count)++;
    return grown;
}

static bool settle(arena *a, book_record *record, const char *hold_id) {
    char *copy = arena_strdup(a, hold_id);
    return copy != NULL &&
           arena_append_kept(a, &record->holds_settled, &record->n_holds_settled, copy, HOLDS_SETTLED_KEPT);
}

/* Appends an event of this type about the hold to the outbox; its body is set by the caller
 * (the queue snapshot by holds_finish). */
static event *announce(arena *a, book_record *record, event_type type, const char *hold_id, uint32_t attempt,
                       int64_t now_ms) {
    char event_id[EVENT_ID_MAX];
    if (!events_format_id(event_id, sizeof event_id, type, hold_id, attempt))
        return NULL;
    event *e = (void *)arena_new_message(a, &library__events__v1__event__descriptor);
    event **outbox = arena_alloc(a, (record->n_outbox + 1) * sizeof *outbox);
    if (e == NULL || outbox == NULL)
        return NULL;
    e->event_id = arena_strdup(a, event_id);
    e->occur_time = timestamp_from_ms(a, now_ms);
    e->correlation_id = arena_strdup(a, hold_id);
    e->attempt = attempt;
    e->body_case = type;
    if (e->event_id == NULL || e->occur_time == NULL || e->correlation_id == NULL)
        return NULL;
    if (record->n_outbox)
        memcpy(outbox, record->outbox, record->n_outbox * sizeof *outbox);
    outbox[record->n_outbox++] = e;
    record->outbox = outbox;
    return e;
}

#define NEW_BODY(a, name) ((void *)arena_new_message((a), &library__events__v1__##name##__descriptor))

/* The hold's place time for its events (mypage orders holds by it); NULL when unknown. */
static Google__Protobuf__Timestamp *place_time(arena *a, int64_t place_time_ms) {
    return place_time_ms > 0 ? timestamp_from_ms(a, place_time_ms) : NULL;
}

static bool announce_queued(arena *a, book_record *record, const hold_entry *hold, uint32_t attempt,
                            int64_t now_ms) {
    Library__Events__V1__HoldQueued *body = NEW_BODY(a, hold_queued);
    event *e = announce(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED, hold->hold_id, attempt, now_ms);
    if (body == NULL || e == NULL)
        return false;
    body->hold_id = hold->hold_id;
    body->user_id = hold->user_id;
    body->book_id = record->book->book_id;
    body->place_time = place_time(a, hold->place_time_ms);
    e->hold_queued = body;
    return true;
}

static bool announce_ready(arena *a, book_record *record, const hold_entry *hold, uint32_t attempt,
                           int64_t now_ms) {
    Library__Events__V1__HoldReady *body = NEW_BODY(a, hold_ready);
    event *e = announce(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY, hold->hold_id, attempt, now_ms);
    if (body == NULL || e == NULL)
        return false;
    body->hold_id = hold->hold_id;
    body->user_id = hold->user_id;
    body->book_id = record->book->book_id;
    body->ready_time = timestamp_from_ms(a, hold->ready_time_ms);
    body->expire_time = timestamp_from_ms(a, hold->expire_time_ms);
    body->place_time = place_time(a, hold->place_time_ms);
    e->hold_ready = body;
    return body->ready_time && body->expire_time;
}

static bool announce_expired(arena *a, book_record *record, const hold_entry *hold, int64_t now_ms) {
    Library__Events__V1__HoldExpired *body = NEW_BODY(a, hold_expired);
    event *e = announce(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED, hold->hold_id, 0, now_ms);
    if (body == NULL || e == NULL)
        return false;
    body->hold_id = hold->hold_id;
    body->user_id = hold->user_id;
    body->book_id = record->book->book_id;
    body->place_time = place_time(a, hold->place_time_ms);
    e->hold_expired = body;
    return true;
}

static bool announce_released(arena *a, book_record *record, const char *hold_id, const char *user_id,
                              Google__Protobuf__Timestamp *placed, uint32_t attempt, int64_t now_ms) {
    Library__Events__V1__HoldReleased *body = NEW_BODY(a, hold_released);
    event *e = announce(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED, hold_id, attempt, now_ms);
    if (body == NULL || e == NULL)
        return false;
    body->hold_id = (char *)hold_id;
    body->user_id = (char *)user_id;
    body->book_id = record->book->book_id;
    body->place_time = placed;
    e->hold_released = body;
    return true;
}

status_code holds_serve(arena *a, book_record *record, const hold_times *times, const char **first,
                        bool *changed, status *st) {
    if (first)
        *first = NULL;
    while (record->book->available_copies > 0 && record->n_hold_queue > 0) {
        hold_entry *hold = remove_entry(record->hold_queue, &record->n_hold_queue, 0);
        record->queue_version++;
        hold->ready_time_ms = times->now_ms;
        hold->expire_time_ms = times->now_ms + (hold->pickup_seconds > 0 ? hold->pickup_seconds * 1000
                                                                          : times->pickup_ms);
        hold_entry **ready = insert_entry(a, record->holds_ready, &record->n_holds_ready,
                                          record->n_holds_ready, hold);
        if (ready == NULL || !announce_ready(a, record, hold, 0, times->now_ms))
            return out_of_memory(st);
        record->holds_ready = ready;
        record->book->available_copies--;
        *changed = true;
        if (first && *first == NULL)
            *first = hold->hold_id;
    }
    return STATUS_OK;
}

/* Queue order: place time, then hold id (so every replica and reader agrees). */
static bool queued_before(const hold_entry *x, int64_t place_ms, const char *hold_id) {
    return x->place_time_ms < place_ms || (x->place_time_ms == place_ms && strcmp(x->hold_id, hold_id) < 0);
}

status_code holds_place(arena *a, book_record *record, const Library__Events__V1__HoldPlaced *placed,
                        uint32_t attempt, const hold_times *times, bool *changed, status *st) {
    *changed = false;
    ssize_t at = find_entry(record->hold_queue, record->n_hold_queue, placed->hold_id);
    if (at >= 0) { /* asked again: the same answer, under the asking attempt's id */
        *changed = announce_queued(a, record, record->hold_queue[at], attempt, times->now_ms);
        return *changed ? STATUS_OK : out_of_memory(st);
    }
    at = find_entry(record->holds_ready, record->n_holds_ready, placed->hold_id);
    if (at >= 0) {
        *changed = announce_ready(a, record, record->holds_ready[at], attempt, times->now_ms);
        return *changed ? STATUS_OK : out_of_memory(st);
    }
    if (is_settled(record, placed->hold_id))
        return STATUS_OK;
    if (record->n_hold_queue >= HOLDS_QUEUE_MAX)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "QUEUE_FULL",
                          "book %s has %d holds waiting, the most one book takes", record->book->book_id,
                          HOLDS_QUEUE_MAX);
    hold_entry *hold = (void *)arena_new_message(a, &library__catalog__internal__hold_entry__descriptor);
    if (hold == NULL)
        return out_of_memory(st);
    hold->hold_id = placed->hold_id;
    hold->user_id = placed->user_id;
    hold->pickup_seconds = placed->pickup_seconds; /* checked: 0 .. HOLDS_PICKUP_MAX_SECONDS */
    hold->place_time_ms = timestamp_to_ms(placed->place_time, times->now_ms); /* missing or out of range: now */
    size_t position = record->n_hold_queue;
    while (position > 0 && !queued_before(record->hold_queue[position - 1], hold->place_time_ms, hold->hold_id))
        position--;
    hold_entry **queue = insert_entry(a, record->hold_queue, &record->n_hold_queue, position, hold);
    if (queue == NULL)
        return out_of_memory(st);
    record->hold_queue = queue;
    record->queue_version++;
    *changed = true;
    if (holds_serve(a, record, times, NULL, changed, st) != STATUS_OK)
        return st->code;
    if (find_entry(record->hold_queue, record->n_hold_queue, hold->hold_id) >= 0 &&
        !announce_queued(a, record, hold, attempt, times->now_ms))
        return out_of_memory(st);
    return STATUS_OK;
}

status_code holds_release(arena *a, book_record *record, const Library__Events__V1__HoldCanceled *canceled,
                          uint32_t attempt, const hold_times *times, bool *changed, status *st) {
    *changed = false;
    Google__Protobuf__Timestamp *placed = canceled->place_time;
    ssize_t at = find_entry(record->hold_queue, record->n_hold_queue, canceled->hold_id);
    if (at >= 0) {
        placed = place_time(a, remove_entry(record->hold_queue, &record->n_hold_queue, (size_t)at)->place_time_ms);
        record->queue_version++;
    } else if ((at = find_entry(record->holds_ready, record->n_holds_ready, canceled->hold_id)) >= 0) {
        placed = place_time(a, remove_entry(record->holds_ready, &record->n_holds_ready, (size_t)at)->place_time_ms);
        record->book->available_copies++; /* the set-aside copy goes on */
    }
    bool known = at >= 0 || is_settled(record, canceled->hold_id);
    if (!known || at >= 0) {
        if (!settle(a, record, canceled->hold_id))
            return out_of_memory(st);
    }
    if (!announce_released(a, record, canceled->hold_id, canceled->user_id, placed, attempt, times->now_ms))
        return out_of_memory(st);
    *changed = true;
    return holds_serve(a, record, times, NULL, changed, st);
}

const char *holds_take_for_loan(arena *a, book_record *record, const char *user_id, status *st) {
    for (size_t i = 0; i < record->n_holds_ready; i++) {
        if (strcmp(record->holds_ready[i]->user_id, user_id) != 0)
            continue;
        hold_entry *hold = remove_entry(record->holds_ready, &record->n_holds_ready, i);
        if (!settle(a, record, hold->hold_id)) {
            out_of_memory(st);
            return NULL;
        }
        return hold->hold_id;
    }
    return NULL;
}

status_code holds_expire(arena *a, book_record *record, const hold_times *times, bool *changed, status *st) {
    for (size_t i = 0; i < record->n_holds_ready;) {
        hold_entry *hold = record->holds_ready[i];
        if (hold->expire_time_ms > times->now_ms) {
            i++;
            continue;
        }
        remove_entry(record->holds_ready, &record->n_holds_ready, i);
        record->book->available_copies++;
        if (!settle(a, record, hold->hold_id) || !announce_expired(a, record, hold, times->now_ms))
            return out_of_memory(st);
        *changed = true;
    }
    return holds_serve(a, record, times, NULL, changed, st);
}

int64_t holds_next_expiry(const book_record *record) {
    int64_t next = 0;
    for (size_t i = 0; i < record->n_holds_ready; i++)
        if (next == 0 || record->holds_ready[i]->expire_time_ms < next)
            next = record->holds_ready[i]->expire_time_ms;
    return next;
}

bool holds_outbox_remove(book_record *record, char *const *event_ids, size_t count) {
    size_t kept = 0;
    for (size_t i = 0; i < record->n_outbox; i++) {
        bool published = false;
        for (size_t j = 0; j < count && !published; j++)
            published = strcmp(record->outbox[i]->event_id, event_ids[j]) == 0;
        if (!published)
            record->outbox[kept++] = record->outbox[i];
    }
    bool removed = kept != record->n_outbox;
    record->n_outbox = kept;
    return removed;
}

status_code holds_finish(arena *a, book_record *record, size_t outbox_before, status *st) {
    record->book->on_hold_copies = (int32_t)record->n_holds_ready;
    if (outbox_before >= record->n_outbox)
        return STATUS_OK;
    Library__Events__V1__HoldQueue *queue = NEW_BODY(a, hold_queue);
    char **ids = record->n_hold_queue ? arena_alloc(a, record->n_hold_queue * sizeof *ids) : NULL;
    if (queue == NULL || (record->n_hold_queue && ids == NULL))
        return out_of_memory(st);
    for (size_t i = 0; i < record->n_hold_queue; i++)
        ids[i] = record->hold_queue[i]->hold_id;
    queue->book_id = record->book->book_id;
    queue->version = record->queue_version;
    queue->hold_ids = ids;
    queue->n_hold_ids = record->n_hold_queue;
    for (size_t i = outbox_before; i < record->n_outbox; i++) {
        event *e = record->outbox[i];
        switch (e->body_case) {
        case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED: e->hold_queued->queue = queue; break;
        case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY: e->hold_ready->queue = queue; break;
        case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED: e->hold_expired->queue = queue; break;
        case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED: e->hold_released->queue = queue; break;
        default: break;
        }
    }
    return STATUS_OK;
}
