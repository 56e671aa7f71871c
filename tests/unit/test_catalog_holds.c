/* test_catalog_holds.c - the catalog's hold rules (holds.c) on a book record, called directly
 * the way the saga and the sweeper call them: each change, then holds_finish, then the
 * invariant available + on_hold + loans on hand == total. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "holds.h"
#include "saga.h"
#include "timestamp.h"

enum { PICKUP_MS = 4000 };

/* A book of `total` copies with `on_loan` of them out ("loan-1", "loan-2", ...). */
static book_record *new_book(arena *a, int32_t total, int32_t on_loan) {
    book_record *record = (void *)arena_new_message(a, &library__catalog__internal__book_record__descriptor);
    Library__Catalog__V1__Book *book = (void *)arena_new_message(a, &library__catalog__v1__book__descriptor);
    cr_assert(record && book);
    book->book_id = "b-001";
    book->title = "Dune";
    book->total_copies = total;
    book->available_copies = total - on_loan;
    record->book = book;
    record->loans_on_hand = arena_alloc(a, (size_t)(on_loan + 1) * sizeof *record->loans_on_hand);
    for (int32_t i = 0; i < on_loan; i++) {
        char id[16];
        snprintf(id, sizeof id, "loan-%d", i + 1);
        record->loans_on_hand[i] = arena_strdup(a, id);
    }
    record->n_loans_on_hand = (size_t)on_loan;
    return record;
}

static void check_invariant(const book_record *record) {
    const Library__Catalog__V1__Book *book = record->book;
    cr_assert_geq(book->available_copies, 0);
    cr_assert_eq((size_t)book->on_hold_copies, record->n_holds_ready);
    cr_assert_eq((size_t)book->available_copies + (size_t)book->on_hold_copies + record->n_loans_on_hand,
                 (size_t)book->total_copies, "available %d + on hold %d + on loan %zu != total %d",
                 book->available_copies, book->on_hold_copies, record->n_loans_on_hand, book->total_copies);
}

static Library__Events__V1__HoldPlaced *placed(arena *a, const char *hold_id, const char *user_id,
                                               int64_t place_ms) {
    Library__Events__V1__HoldPlaced *p = (void *)arena_new_message(a, &library__events__v1__hold_placed__descriptor);
    p->hold_id = (char *)hold_id;
    p->user_id = (char *)user_id;
    p->book_id = "b-001";
    p->place_time = timestamp_from_ms(a, place_ms);
    return p;
}

/* holds_place and holds_finish, as the saga runs them; the place's status. */
static status_code place(arena *a, book_record *record, const char *hold_id, const char *user_id, int64_t place_ms,
                         int64_t now_ms, bool *changed, status *st) {
    hold_times times = {.now_ms = now_ms, .pickup_ms = PICKUP_MS};
    size_t before = record->n_outbox;
    status_code code = holds_place(a, record, placed(a, hold_id, user_id, place_ms), 1, &times, changed, st);
    if (code == STATUS_OK && *changed)
        cr_assert_eq(holds_finish(a, record, before, st), STATUS_OK);
    check_invariant(record);
    return code;
}

static void release(arena *a, book_record *record, const char *hold_id, const char *user_id, int64_t now_ms) {
    Library__Events__V1__HoldCanceled *c = (void *)arena_new_message(a, &library__events__v1__hold_canceled__descriptor);
    c->hold_id = (char *)hold_id;
    c->user_id = (char *)user_id;
    c->book_id = "b-001";
    hold_times times = {.now_ms = now_ms, .pickup_ms = PICKUP_MS};
    size_t before = record->n_outbox;
    bool changed = false;
    status st;
    cr_assert_eq(holds_release(a, record, c, 1, &times, &changed, &st), STATUS_OK);
    cr_assert(changed, "a release always announces itself");
    cr_assert_eq(holds_finish(a, record, before, &st), STATUS_OK);
    check_invariant(record);
}

/* LoanReturned through the saga's decision: the copy goes to the first WAITING hold or the
 * shelf. The hold it went to, or NULL. */
static const char *give_back(arena *a, book_record *record, const char *loan_id, int64_t now_ms) {
    catalog_decision job = {.loan_id = loan_id, .reserve = false, .times = {now_ms, PICKUP_MS}};
    bool changed = false;
    status st;
    cr_assert_eq(catalog_saga_decide(&job, a, record, &changed, &st), STATUS_OK);
    cr_assert(changed);
    check_invariant(record);
    return job.hold_id;
}

/* LoanRequested through the saga's decision. */
static catalog_decision borrow(arena *a, book_record *record, const char *loan_id, const char *user_id) {
    catalog_decision job = {.loan_id = loan_id, .reserve = true, .user_id = user_id};
    bool changed = false;
    status st;
    cr_assert_eq(catalog_saga_decide(&job, a, record, &changed, &st), STATUS_OK);
    check_invariant(record);
    return job;
}

/* The queue's hold ids joined by ',' (in a static buffer). */
static const char *queue_of(const book_record *record) {
    static char text[256];
    text[0] = '\0';
    for (size_t i = 0; i < record->n_hold_queue; i++) {
        if (i)
            strcat(text, ",");
        strcat(text, record->hold_queue[i]->hold_id);
    }
    return text;
}

static const char *ready_of(const book_record *record) {
    static char text[256];
    text[0] = '\0';
    for (size_t i = 0; i < record->n_holds_ready; i++) {
        if (i)
            strcat(text, ",");
        strcat(text, record->holds_ready[i]->hold_id);
    }
    return text;
}

static const event *last_event(const book_record *record) {
    cr_assert_gt(record->n_outbox, 0);
    return record->outbox[record->n_outbox - 1];
}

/* The queue snapshot an event carries, as "id,id" (NULL for events without one). */
static const char *snapshot_of(const event *e, uint64_t *version) {
    const Library__Events__V1__HoldQueue *queue = NULL;
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED: queue = e->hold_queued->queue; break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY: queue = e->hold_ready->queue; break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED: queue = e->hold_expired->queue; break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED: queue = e->hold_released->queue; break;
    default: return NULL;
    }
    cr_assert_not_null(queue, "every hold event carries the queue");
    static char text[256];
    text[0] = '\0';
    for (size_t i = 0; i < queue->n_hold_ids; i++) {
        if (i)
            strcat(text, ",");
        strcat(text, queue->hold_ids[i]);
    }
    *version = queue->version;
    return text;
}

Test(holds, place_on_a_free_copy_is_ready_at_once) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 2, 1);
    bool changed = false;
    status st;
    cr_assert_eq(place(a, record, "h-1", "alice", 1000, 5000, &changed, &st), STATUS_OK);
    cr_assert(changed);
    cr_assert_eq(record->book->available_copies, 0);
    cr_assert_eq(record->book->on_hold_copies, 1);
    cr_assert_str_eq(ready_of(record), "h-1");
    cr_assert_str_eq(queue_of(record), "");
    cr_assert_eq(record->holds_ready[0]->ready_time_ms, 5000);
    cr_assert_eq(record->holds_ready[0]->expire_time_ms, 5000 + PICKUP_MS);
    cr_assert_eq(record->n_outbox, 1, "HoldReady only, no HoldQueued");
    const event *e = last_event(record);
    cr_assert_eq(e->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY);
    cr_assert_str_eq(e->hold_ready->hold_id, "h-1");
    cr_assert_str_eq(e->hold_ready->user_id, "alice");
    cr_assert_str_eq(e->hold_ready->book_id, "b-001");
    cr_assert_eq(e->hold_ready->expire_time->seconds, 9);
    uint64_t version = 0;
    cr_assert_str_eq(snapshot_of(e, &version), "");
    cr_assert_eq(version, record->queue_version);
    cr_assert_eq(holds_next_expiry(record), 5000 + PICKUP_MS);
    arena_destroy(a);
}

Test(holds, queue_in_place_time_order_ties_by_hold_id) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    bool changed = false;
    status st;
    /* arriving out of order: the queue is by place time, then hold id */
    cr_assert_eq(place(a, record, "h-c", "carol", 3000, 9000, &changed, &st), STATUS_OK);
    cr_assert_eq(place(a, record, "h-a", "alice", 1000, 9001, &changed, &st), STATUS_OK);
    cr_assert_eq(place(a, record, "h-z", "zoe", 2000, 9002, &changed, &st), STATUS_OK);
    cr_assert_eq(place(a, record, "h-b", "bob", 2000, 9003, &changed, &st), STATUS_OK);
    cr_assert_eq(place(a, record, "h-d", "dan", 3000, 9004, &changed, &st), STATUS_OK);
    cr_assert_str_eq(queue_of(record), "h-a,h-b,h-z,h-c,h-d");
    /* a place time outside the Timestamp range (its ms would overflow) counts as now */
    hold_times times = {.now_ms = 9005, .pickup_ms = PICKUP_MS};
    Library__Events__V1__HoldPlaced *far = placed(a, "h-far", "far", 0);
    far->place_time->seconds = INT64_MAX / 2;
    cr_assert_eq(holds_place(a, record, far, 1, &times, &changed, &st), STATUS_OK);
    cr_assert_eq(record->hold_queue[record->n_hold_queue - 1]->place_time_ms, 9005);
    release(a, record, "h-far", "far", 9006);
    cr_assert_str_eq(queue_of(record), "h-a,h-b,h-z,h-c,h-d");
    cr_assert_eq(record->book->available_copies, 0);
    cr_assert_eq(record->book->on_hold_copies, 0);
    cr_assert_eq(record->n_outbox, 7);
    const event *e = record->outbox[4];
    cr_assert_eq(e->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED);
    cr_assert_str_eq(e->hold_queued->hold_id, "h-d");
    cr_assert_str_eq(e->hold_queued->user_id, "dan");
    uint64_t version = 0;
    cr_assert_str_eq(snapshot_of(e, &version), "h-a,h-b,h-z,h-c,h-d");
    cr_assert_eq(version, 5);
    cr_assert_str_eq(snapshot_of(last_event(record), &version), "h-a,h-b,h-z,h-c,h-d");
    cr_assert_eq(version, 7);
    /* each event carries the queue as it was when it was decided */
    cr_assert_str_eq(snapshot_of(record->outbox[0], &version), "h-c");
    cr_assert_eq(version, 1);
    cr_assert_str_eq(snapshot_of(record->outbox[1], &version), "h-a,h-c");
    cr_assert_eq(version, 2);
    arena_destroy(a);
}

Test(holds, asking_again_gets_the_same_answer) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    bool changed = false;
    status st;
    cr_assert_eq(place(a, record, "h-1", "alice", 1000, 2000, &changed, &st), STATUS_OK);
    cr_assert_eq(place(a, record, "h-2", "bob", 1500, 2000, &changed, &st), STATUS_OK);
    uint64_t version = record->queue_version;
    cr_assert_eq(place(a, record, "h-1", "alice", 1000, 3000, &changed, &st), STATUS_OK);
    cr_assert(changed, "announced again");
    cr_assert_str_eq(queue_of(record), "h-1,h-2", "no second entry");
    cr_assert_eq(record->queue_version, version, "the queue did not change");
    const event *e = last_event(record);
    cr_assert_eq(e->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED);
    cr_assert_str_eq(e->hold_queued->hold_id, "h-1");
    cr_assert_eq(e->attempt, 1, "under the asking attempt");
    uint64_t snapshot_version = 0;
    cr_assert_str_eq(snapshot_of(e, &snapshot_version), "h-1,h-2");

    /* the returned copy makes h-1 READY; asking again answers READY, still one copy aside */
    cr_assert_str_eq(give_back(a, record, "loan-1", 4000), "h-1");
    cr_assert_eq(place(a, record, "h-1", "alice", 1000, 5000, &changed, &st), STATUS_OK);
    cr_assert(changed);
    e = last_event(record);
    cr_assert_eq(e->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY);
    cr_assert_eq(e->hold_ready->expire_time->seconds, (4000 + PICKUP_MS) / 1000, "the first answer's times");
    cr_assert_str_eq(ready_of(record), "h-1");
    cr_assert_str_eq(queue_of(record), "h-2");
    cr_assert_eq(record->book->on_hold_copies, 1);
    arena_destroy(a);
}

Test(holds, release_of_a_waiting_hold) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    bool changed = false;
    status st;
    place(a, record, "h-1", "alice", 1000, 1000, &changed, &st);
    place(a, record, "h-2", "bob", 2000, 2000, &changed, &st);
    place(a, record, "h-3", "carol", 3000, 3000, &changed, &st);
    release(a, record, "h-2", "bob", 4000);
    cr_assert_str_eq(queue_of(record), "h-1,h-3");
    cr_assert_eq(record->book->available_copies, 0);
    const event *e = last_event(record);
    cr_assert_eq(e->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED);
    cr_assert_str_eq(e->hold_released->hold_id, "h-2");
    cr_assert_str_eq(e->hold_released->user_id, "bob");
    uint64_t version = 0;
    cr_assert_str_eq(snapshot_of(e, &version), "h-1,h-3");
    cr_assert_eq(version, 4);
    /* released is settled: a late repeat of its place queues nothing */
    cr_assert_eq(place(a, record, "h-2", "bob", 2000, 5000, &changed, &st), STATUS_OK);
    cr_assert_not(changed);
    cr_assert_str_eq(queue_of(record), "h-1,h-3");
    /* a repeated cancel is answered again, and changes nothing else */
    size_t settled = record->n_holds_settled;
    release(a, record, "h-2", "bob", 6000);
    cr_assert_eq(record->n_holds_settled, settled);
    cr_assert_str_eq(queue_of(record), "h-1,h-3");
    arena_destroy(a);
}

Test(holds, release_of_a_ready_hold_gives_the_copy_to_the_next) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    bool changed = false;
    status st;
    place(a, record, "h-1", "alice", 1000, 1000, &changed, &st);
    place(a, record, "h-2", "bob", 2000, 2000, &changed, &st);
    cr_assert_str_eq(give_back(a, record, "loan-1", 3000), "h-1");
    cr_assert_str_eq(ready_of(record), "h-1");
    release(a, record, "h-1", "alice", 4000);
    cr_assert_str_eq(ready_of(record), "h-2", "the set-aside copy goes on");
    cr_assert_str_eq(queue_of(record), "");
    cr_assert_eq(record->book->available_copies, 0);
    cr_assert_eq(record->holds_ready[0]->expire_time_ms, 4000 + PICKUP_MS);
    /* the change announced the release, then the next hold's READY */
    const event *ready = record->outbox[record->n_outbox - 1];
    const event *released = record->outbox[record->n_outbox - 2];
    cr_assert_eq(released->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED);
    cr_assert_eq(ready->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY);
    cr_assert_str_eq(ready->hold_ready->hold_id, "h-2");
    /* and with nobody waiting, the copy goes to the shelf */
    release(a, record, "h-2", "bob", 5000);
    cr_assert_str_eq(ready_of(record), "");
    cr_assert_eq(record->book->available_copies, 1);
    cr_assert_eq(record->book->on_hold_copies, 0);
    cr_assert_eq(holds_next_expiry(record), 0);
    arena_destroy(a);
}

Test(holds, release_before_its_place) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 0);
    release(a, record, "h-1", "alice", 1000);
    cr_assert_eq(last_event(record)->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED);
    cr_assert_eq(record->n_holds_settled, 1);
    bool changed = true;
    status st;
    size_t outbox = record->n_outbox;
    cr_assert_eq(place(a, record, "h-1", "alice", 500, 2000, &changed, &st), STATUS_OK);
    cr_assert_not(changed, "a place after its cancel queues nothing");
    cr_assert_eq(record->n_outbox, outbox);
    cr_assert_str_eq(queue_of(record), "");
    cr_assert_str_eq(ready_of(record), "", "and takes no copy");
    cr_assert_eq(record->book->available_copies, 1);
    arena_destroy(a);
}

Test(holds, expiry_moves_the_copy_on) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 2, 2);
    bool changed = false;
    status st;
    place(a, record, "h-1", "alice", 1000, 1000, &changed, &st);
    place(a, record, "h-2", "bob", 2000, 2000, &changed, &st);
    place(a, record, "h-3", "carol", 3000, 3000, &changed, &st);
    cr_assert_str_eq(give_back(a, record, "loan-1", 10000), "h-1");
    cr_assert_str_eq(give_back(a, record, "loan-2", 11000), "h-2");
    cr_assert_eq(holds_next_expiry(record), 10000 + PICKUP_MS);
    hold_times times = {.now_ms = 10000 + PICKUP_MS - 1, .pickup_ms = PICKUP_MS};
    size_t before = record->n_outbox;
    changed = false;
    cr_assert_eq(holds_expire(a, record, &times, &changed, &st), STATUS_OK);
    cr_assert_not(changed, "not yet");
    cr_assert_eq(record->n_outbox, before);
    times.now_ms = 10000 + PICKUP_MS;
    cr_assert_eq(holds_expire(a, record, &times, &changed, &st), STATUS_OK);
    cr_assert(changed);
    cr_assert_eq(holds_finish(a, record, before, &st), STATUS_OK);
    check_invariant(record);
    cr_assert_str_eq(ready_of(record), "h-2,h-3");
    cr_assert_str_eq(queue_of(record), "");
    cr_assert_eq(record->n_outbox, before + 2);
    cr_assert_eq(record->outbox[before]->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED);
    cr_assert_str_eq(record->outbox[before]->hold_expired->hold_id, "h-1");
    cr_assert_eq(record->outbox[before + 1]->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY);
    cr_assert_str_eq(record->outbox[before + 1]->hold_ready->hold_id, "h-3");
    /* both past their time at once: both expire, both copies to the shelf */
    times.now_ms = 100000;
    before = record->n_outbox;
    cr_assert_eq(holds_expire(a, record, &times, &changed, &st), STATUS_OK);
    cr_assert_eq(holds_finish(a, record, before, &st), STATUS_OK);
    check_invariant(record);
    cr_assert_str_eq(ready_of(record), "");
    cr_assert_eq(record->book->available_copies, 2);
    cr_assert_eq(record->n_outbox, before + 2);
    /* an expired hold is settled: placing it again queues nothing */
    cr_assert_eq(place(a, record, "h-1", "alice", 1000, 100001, &changed, &st), STATUS_OK);
    cr_assert_not(changed);
    cr_assert_eq(record->book->available_copies, 2);
    arena_destroy(a);
}

Test(holds, the_holder_takes_the_set_aside_copy) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    bool changed = false;
    status st;
    place(a, record, "h-1", "alice", 1000, 1000, &changed, &st);
    cr_assert_str_eq(give_back(a, record, "loan-1", 2000), "h-1");
    /* someone else finds no copy: the set-aside one is alice's */
    catalog_decision other = borrow(a, record, "loan-bob", "bob");
    cr_assert_not(other.reserved);
    cr_assert_str_eq(ready_of(record), "h-1");
    /* holds_take_for_loan alone: the hold leaves holds_ready and is settled */
    book_record *copy = new_book(a, 1, 0);
    copy->book->available_copies = 0;
    copy->holds_ready = arena_alloc(a, sizeof *copy->holds_ready);
    copy->holds_ready[0] = record->holds_ready[0];
    copy->n_holds_ready = 1;
    cr_assert_null(holds_take_for_loan(a, copy, "bob", &st));
    cr_assert_eq(copy->n_holds_ready, 1);
    cr_assert_str_eq(holds_take_for_loan(a, copy, "alice", &st), "h-1");
    cr_assert_eq(copy->n_holds_ready, 0);
    cr_assert_eq(copy->n_holds_settled, 1);
    cr_assert_null(holds_take_for_loan(a, copy, "alice", &st), "taken once");
    /* the loan as the saga makes it: the copy counts as on loan, available does not change */
    catalog_decision mine = borrow(a, record, "loan-alice", "alice");
    cr_assert(mine.reserved);
    cr_assert_str_eq(mine.hold_id, "h-1");
    cr_assert_eq(record->book->available_copies, 0);
    cr_assert_eq(record->book->on_hold_copies, 0);
    cr_assert_eq(record->n_loans_on_hand, 1);
    cr_assert_eq(place(a, record, "h-1", "alice", 1000, 3000, &changed, &st), STATUS_OK);
    cr_assert_not(changed, "a fulfilled hold is settled");
    /* the loan's return goes to the shelf: nobody waits */
    cr_assert_null(give_back(a, record, "loan-alice", 4000));
    cr_assert_eq(record->book->available_copies, 1);
    arena_destroy(a);
}

Test(holds, a_full_queue_refuses) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    bool changed = false;
    status st;
    char id[32];
    for (int i = 0; i < HOLDS_QUEUE_MAX; i++) {
        snprintf(id, sizeof id, "h-%05d", i);
        hold_times times = {.now_ms = 1000, .pickup_ms = PICKUP_MS};
        cr_assert_eq(holds_place(a, record, placed(a, arena_strdup(a, id), "u", 1000 + i), 1, &times, &changed, &st),
                     STATUS_OK);
    }
    cr_assert_eq(record->n_hold_queue, HOLDS_QUEUE_MAX);
    size_t outbox = record->n_outbox;
    cr_assert_eq(place(a, record, "h-late", "u", 999999, 2000, &changed, &st), STATUS_RESOURCE_EXHAUSTED);
    cr_assert_str_eq(st.reason, "QUEUE_FULL");
    cr_assert_not(changed);
    cr_assert_eq(record->n_hold_queue, HOLDS_QUEUE_MAX);
    cr_assert_eq(record->n_outbox, outbox);
    /* a hold already in the full queue is still answered */
    cr_assert_eq(place(a, record, "h-00007", "u", 1007, 2000, &changed, &st), STATUS_OK);
    cr_assert(changed);
    /* one leaving makes room */
    release(a, record, "h-00000", "u", 3000);
    cr_assert_eq(place(a, record, "h-late", "u", 999999, 4000, &changed, &st), STATUS_OK);
    cr_assert_eq(record->n_hold_queue, HOLDS_QUEUE_MAX);
    cr_assert_str_eq(record->hold_queue[HOLDS_QUEUE_MAX - 1]->hold_id, "h-late");
    arena_destroy(a);
}

Test(holds, settled_holds_are_bounded) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 0);
    char id[32];
    for (int i = 0; i < HOLDS_SETTLED_KEPT + 10; i++) {
        snprintf(id, sizeof id, "h-%05d", i);
        release(a, record, arena_strdup(a, id), "u", 1000 + i);
    }
    cr_assert_eq(record->n_holds_settled, HOLDS_SETTLED_KEPT);
    cr_assert_str_eq(record->holds_settled[0], "h-00010", "the oldest go first");
    cr_assert_str_eq(record->holds_settled[HOLDS_SETTLED_KEPT - 1], "h-01033");
    arena_destroy(a);
}

Test(holds, outbox_remove_takes_only_the_published) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    bool changed = false;
    status st;
    place(a, record, "h-1", "alice", 1000, 1000, &changed, &st);
    place(a, record, "h-2", "bob", 2000, 2000, &changed, &st);
    place(a, record, "h-3", "carol", 3000, 3000, &changed, &st);
    cr_assert_eq(record->n_outbox, 3);
    char *second = record->outbox[1]->event_id;
    char *third = record->outbox[2]->event_id;
    char *none[] = {"nothing-like-it"};
    cr_assert_not(holds_outbox_remove(record, none, 1));
    cr_assert_eq(record->n_outbox, 3);
    char *ids[] = {second, "nothing-like-it"};
    cr_assert(holds_outbox_remove(record, ids, 2));
    cr_assert_eq(record->n_outbox, 2);
    cr_assert_str_eq(record->outbox[0]->hold_queued->hold_id, "h-1");
    cr_assert_str_eq(record->outbox[1]->event_id, third, "order kept");
    char *rest[] = {record->outbox[0]->event_id, third};
    cr_assert(holds_outbox_remove(record, rest, 2));
    cr_assert_eq(record->n_outbox, 0);
    cr_assert_not(holds_outbox_remove(record, rest, 2));
    arena_destroy(a);
}

/* A long mixed run: places, cancels, returns, loans and expiries, with the invariant after
 * every step and every set-aside copy held by exactly one READY hold. */
Test(holds, invariant_through_a_mixed_run) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 3, 3);
    bool changed = false;
    status st;
    char hold[32], user[32], loan[32];
    int next_loan = 4;
    unsigned seed = 12345;
    for (int step = 0; step < 600; step++) {
        seed = seed * 1103515245u + 12345u;
        unsigned pick = (seed >> 16) % 5, n = (seed >> 8) % 40;
        int64_t now = 1000 + step * 500;
        snprintf(hold, sizeof hold, "h-%02u", n);
        snprintf(user, sizeof user, "u-%02u", n);
        if (pick == 0 || pick == 1) {
            place(a, record, arena_strdup(a, hold), arena_strdup(a, user), now - (int64_t)n, now, &changed, &st);
        } else if (pick == 2) {
            release(a, record, arena_strdup(a, hold), arena_strdup(a, user), now);
        } else if (pick == 3 && record->n_loans_on_hand > 0) {
            give_back(a, record, record->loans_on_hand[n % record->n_loans_on_hand], now);
        } else if (pick == 3 || (pick == 4 && n % 2)) {
            snprintf(loan, sizeof loan, "loan-%d", next_loan++);
            borrow(a, record, arena_strdup(a, loan), arena_strdup(a, user));
        } else {
            hold_times times = {.now_ms = now, .pickup_ms = PICKUP_MS};
            size_t before = record->n_outbox;
            cr_assert_eq(holds_expire(a, record, &times, &changed, &st), STATUS_OK);
            cr_assert_eq(holds_finish(a, record, before, &st), STATUS_OK);
            check_invariant(record);
        }
        /* nobody waits while a copy is on the shelf; no hold both waits and is READY */
        cr_assert(record->book->available_copies == 0 || record->n_hold_queue == 0);
        for (size_t i = 0; i < record->n_hold_queue; i++) {
            for (size_t j = 0; j < record->n_holds_ready; j++)
                cr_assert_str_neq(record->hold_queue[i]->hold_id, record->holds_ready[j]->hold_id);
            if (i)
                cr_assert(record->hold_queue[i - 1]->place_time_ms <= record->hold_queue[i]->place_time_ms);
        }
        char **published = arena_alloc(a, (record->n_outbox + 1) * sizeof *published);
        for (size_t i = 0; i < record->n_outbox; i++)
            published[i] = record->outbox[i]->event_id;
        holds_outbox_remove(record, published, record->n_outbox);
        cr_assert_eq(record->n_outbox, 0);
    }
    arena_destroy(a);
}

Test(holds, a_set_aside_copy_waits_the_holders_pickup_when_the_hold_names_one) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    hold_times times = {.now_ms = 2000, .pickup_ms = PICKUP_MS};
    bool changed = false;
    status st;
    Library__Events__V1__HoldPlaced *child = placed(a, "h-1", "dora", 1000);
    child->pickup_seconds = 60;
    cr_assert_eq(holds_place(a, record, child, 1, &times, &changed, &st), STATUS_OK);
    cr_assert_eq(holds_place(a, record, placed(a, "h-2", "eve", 1500), 1, &times, &changed, &st), STATUS_OK);
    cr_assert_str_eq(queue_of(record), "h-1,h-2");
    cr_assert_eq(record->hold_queue[0]->pickup_seconds, 60, "the queue keeps the hold's pickup");
    /* two copies come back: each READY hold waits its own pickup */
    record->book->total_copies = 3;
    record->book->available_copies = 2;
    times.now_ms = 10000;
    cr_assert_eq(holds_serve(a, record, &times, NULL, &changed, &st), STATUS_OK);
    cr_assert_eq(record->n_holds_ready, 2);
    cr_assert_eq(record->holds_ready[0]->expire_time_ms, 10000 + 60000, "the holder's policy: 60 s");
    cr_assert_eq(record->holds_ready[1]->expire_time_ms, 10000 + PICKUP_MS, "no pickup named: HOLD_PICKUP");
    arena_destroy(a);
}

Test(holds, a_hold_placed_with_an_impossible_pickup_is_refused) {
    arena *a = arena_create(0);
    event *e = (void *)arena_new_message(a, &library__events__v1__event__descriptor);
    e->body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED;
    e->hold_placed = placed(a, "h-1", "dora", 1000);
    status st;
    cr_assert_eq(catalog_saga_check_event(e, &st), STATUS_OK, "%s", st.message);
    e->hold_placed->pickup_seconds = -1;
    cr_assert_eq(catalog_saga_check_event(e, &st), STATUS_INVALID_ARGUMENT);
    e->hold_placed->pickup_seconds = HOLDS_PICKUP_MAX_SECONDS + 1;
    cr_assert_eq(catalog_saga_check_event(e, &st), STATUS_INVALID_ARGUMENT);
    arena_destroy(a);
}

/* Every hold event the catalog makes carries the hold's place time from the HoldPlaced it
 * answered, so a page can order its holds by it whichever of them the stream still keeps. */
Test(holds, every_answer_carries_the_place_time) {
    arena *a = arena_create(0);
    book_record *record = new_book(a, 1, 1);
    bool changed = false;
    status st;
    place(a, record, "h-1", "alice", 1234, 5000, &changed, &st);
    cr_assert_eq(last_event(record)->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED);
    cr_assert_eq(timestamp_to_ms(last_event(record)->hold_queued->place_time, 0), 1234);
    place(a, record, "h-1", "alice", 1234, 6000, &changed, &st); /* asked again: answered again */
    cr_assert_eq(timestamp_to_ms(last_event(record)->hold_queued->place_time, 0), 1234);
    place(a, record, "h-2", "bob", 2345, 6000, &changed, &st);
    cr_assert_str_eq(give_back(a, record, "loan-1", 7000), "h-1");
    cr_assert_eq(last_event(record)->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY);
    cr_assert_eq(timestamp_to_ms(last_event(record)->hold_ready->place_time, 0), 1234);
    hold_times later = {.now_ms = 7000 + PICKUP_MS, .pickup_ms = PICKUP_MS};
    size_t before = record->n_outbox;
    cr_assert_eq(holds_expire(a, record, &later, &changed, &st), STATUS_OK);
    cr_assert_eq(holds_finish(a, record, before, &st), STATUS_OK);
    cr_assert_eq(record->outbox[before]->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED);
    cr_assert_eq(timestamp_to_ms(record->outbox[before]->hold_expired->place_time, 0), 1234);
    release(a, record, "h-2", "bob", 12000); /* READY now: released from the set-aside copies */
    const event *released = record->outbox[record->n_outbox - 1];
    cr_assert_eq(released->body_case, LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED);
    cr_assert_eq(timestamp_to_ms(released->hold_released->place_time, 0), 2345);
    release(a, record, "h-9", "carol", 13000); /* never seen, and no time in its cancel */
    cr_assert_null(record->outbox[record->n_outbox - 1]->hold_released->place_time);
    arena_destroy(a);
}
