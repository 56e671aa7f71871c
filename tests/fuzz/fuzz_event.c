/* fuzz_event.c - the library.events.v1.Event envelope as the consumers get it from the
 * stream: unpacked as events.c does, then what each consumer does with it that needs no NATS
 * or Redis: the catalog saga's id checks and its decision on a book record (run twice, as a
 * redelivery would), the catalog's hold rules (holds.c) on a book record with a queue (the
 * event's own snapshot when it carries one), lending's loan state change on a reservation
 * outcome, and mypage's page change (a loan's, a renewal's, a hold's with its queue
 * snapshot, or an account's with the page it makes).
 *
 * Input: the serialized Event. */
#include <stdbool.h>
#include <string.h>

#include "arena.h"
#include "book_record.pb-c.h"
#include "events.h"
#include "fuzz.h"
#include "../../services/lending/lending.h"
#include "../../services/mypage/page.h"
#include "../../services/catalog/holds.h"
#include "../../services/catalog/saga.h"
#include "field.h"
#include "status.h"
#include "timestamp.h"

/* A consistent book: 3 copies, one on loan ("loan-1"), one earlier refusal ("loan-2"). */
static book_record *book_on_shelf(arena *a) {
    book_record *record = (void *)arena_new_message(a, &library__catalog__internal__book_record__descriptor);
    Library__Catalog__V1__Book *book = (void *)arena_new_message(a, &library__catalog__v1__book__descriptor);
    char **on_hand = arena_alloc(a, sizeof *on_hand);
    Library__Catalog__Internal__LoanDecision **decisions = arena_alloc(a, 2 * sizeof *decisions);
    FUZZ_CHECK(record && book && on_hand && decisions);
    for (int i = 0; i < 2; i++) {
        decisions[i] = (void *)arena_new_message(a, &library__catalog__internal__loan_decision__descriptor);
        FUZZ_CHECK(decisions[i] != NULL);
    }
    book->book_id = "b-001";
    book->title = "Dune";
    book->total_copies = 3;
    book->available_copies = 2;
    on_hand[0] = "loan-1";
    decisions[0]->loan_id = "loan-1";
    decisions[0]->reserved = true;
    decisions[1]->loan_id = "loan-2";
    decisions[1]->reserved = false;
    record->book = book;
    record->loans_on_hand = on_hand;
    record->n_loans_on_hand = 1;
    record->recent_decisions = decisions;
    record->n_recent_decisions = 2;
    return record;
}

static void check_stock(const book_record *record) {
    const Library__Catalog__V1__Book *book = record->book;
    FUZZ_CHECK(book->available_copies >= 0);
    FUZZ_CHECK((size_t)book->available_copies + record->n_loans_on_hand == (size_t)book->total_copies);
}

/* The catalog's consumer: malformed ids are refused; then LoanRequested reserves and
 * LoanReturned releases, each idempotent. */
static void catalog_consumer(const event *e) {
    status checked;
    if (catalog_saga_check_event(e, &checked) != STATUS_OK) {
        FUZZ_CHECK(checked.code == STATUS_INVALID_ARGUMENT); /* terminated, never retried */
        return;
    }
    const char *loan_id = e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED
                              ? e->loan_requested->loan_id
                              : e->loan_returned->loan_id;
    FUZZ_CHECK(strspn(loan_id, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(loan_id));
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    book_record *record = book_on_shelf(a);
    status st;
    bool changed = false;
    catalog_decision first = {.loan_id = loan_id, .reserve = true};
    FUZZ_CHECK(catalog_saga_decide(&first, a, record, &changed, &st) == STATUS_OK);
    check_stock(record);
    catalog_decision again = {.loan_id = loan_id, .reserve = true};
    FUZZ_CHECK(catalog_saga_decide(&again, a, record, &changed, &st) == STATUS_OK);
    FUZZ_CHECK(!changed && again.reserved == first.reserved); /* a redelivery: same answer */
    check_stock(record);
    for (int i = 0; i < 2; i++) {
        catalog_decision release = {.loan_id = loan_id, .reserve = false};
        int32_t before = record->book->available_copies;
        FUZZ_CHECK(catalog_saga_decide(&release, a, record, &changed, &st) == STATUS_OK);
        FUZZ_CHECK(record->book->available_copies == before + (changed ? 1 : 0));
        FUZZ_CHECK(i == 0 || !changed); /* the copy comes back once */
        check_stock(record);
    }
    /* The record as stored must survive the store's round trip. */
    size_t size = 0;
    uint8_t *packed = arena_pack(a, &record->base, &size);
    FUZZ_CHECK(packed != NULL);
    FUZZ_CHECK(arena_unpack(a, &library__catalog__internal__book_record__descriptor, packed, size) != NULL);
    arena_destroy(a);
}

/* --- the catalog's hold rules ------------------------------------------------------------ */

enum { PICKUP_MS = 4000, QUEUE_FROM_EVENT_MAX = 64 };

static hold_entry *new_hold(arena *a, const char *hold_id, const char *user_id, int64_t place_ms) {
    hold_entry *hold = (void *)arena_new_message(a, &library__catalog__internal__hold_entry__descriptor);
    FUZZ_CHECK(hold != NULL);
    hold->hold_id = (char *)hold_id;
    hold->user_id = (char *)user_id;
    hold->place_time_ms = place_ms;
    return hold;
}

/* A consistent book with holds: every copy out but the one set aside for a READY hold
 * ("r-ready", expiring at 5 s), a queue (the snapshot's well-formed, distinct ids in its
 * order, or two holds), and one settled hold ("s-done"); stored and decoded as the store
 * does, so the rules run on a decoded BookRecord. */
static book_record *book_with_holds(arena *a, const Library__Events__V1__HoldQueue *snapshot) {
    book_record *record = (void *)arena_new_message(a, &library__catalog__internal__book_record__descriptor);
    Library__Catalog__V1__Book *book = (void *)arena_new_message(a, &library__catalog__v1__book__descriptor);
    FUZZ_CHECK(record && book);
    int32_t total = 2 + (int32_t)((snapshot ? snapshot->version : 0) % 3);
    book->book_id = "b-001";
    book->total_copies = total;
    book->on_hold_copies = 1;
    record->book = book;
    record->loans_on_hand = arena_alloc(a, (size_t)total * sizeof *record->loans_on_hand);
    for (int32_t i = 0; i + 1 < total; i++) {
        char id[16];
        snprintf(id, sizeof id, "loan-%d", i);
        record->loans_on_hand[record->n_loans_on_hand++] = arena_strdup(a, id);
    }
    record->holds_ready = arena_alloc(a, sizeof *record->holds_ready);
    record->holds_ready[0] = new_hold(a, "r-ready", "ready-user", 500);
    record->holds_ready[0]->ready_time_ms = 1000;
    record->holds_ready[0]->expire_time_ms = 5000;
    record->n_holds_ready = 1;
    record->holds_settled = arena_alloc(a, sizeof *record->holds_settled);
    record->holds_settled[0] = "s-done";
    record->n_holds_settled = 1;
    record->hold_queue = arena_alloc(a, (QUEUE_FROM_EVENT_MAX + 2) * sizeof *record->hold_queue);
    size_t from_snapshot = snapshot ? snapshot->n_hold_ids : 0;
    for (size_t i = 0; i < from_snapshot && record->n_hold_queue < QUEUE_FROM_EVENT_MAX; i++) {
        const char *id = snapshot->hold_ids[i];
        status ignored;
        bool known = field_check_id(id, "hold_id", &ignored) != STATUS_OK || strcmp(id, "r-ready") == 0 ||
                     strcmp(id, "s-done") == 0;
        for (size_t j = 0; j < record->n_hold_queue && !known; j++)
            known = strcmp(record->hold_queue[j]->hold_id, id) == 0;
        if (!known)
            record->hold_queue[record->n_hold_queue++] = new_hold(a, id, "queued-user", 1000 + (int64_t)i);
    }
    if (snapshot == NULL) {
        record->hold_queue[0] = new_hold(a, "w-first", "first-user", 1000);
        record->hold_queue[1] = new_hold(a, "w-second", "second-user", 2000);
        record->n_hold_queue = 2;
    }
    record->queue_version = snapshot ? snapshot->version : 7;
    size_t size = 0;
    uint8_t *packed = arena_pack(a, &record->base, &size);
    FUZZ_CHECK(packed != NULL);
    book_record *decoded = (void *)arena_unpack(a, &library__catalog__internal__book_record__descriptor, packed, size);
    FUZZ_CHECK(decoded != NULL);
    return decoded;
}

/* After any change and holds_finish: the copy count, each set-aside copy with one READY
 * hold, nobody waiting while a copy is free, the queue in order, and every event the change
 * announced carrying the queue as it now is. */
static void check_holds(const book_record *record, size_t outbox_before) {
    const Library__Catalog__V1__Book *book = record->book;
    FUZZ_CHECK(book->available_copies >= 0);
    FUZZ_CHECK((size_t)book->on_hold_copies == record->n_holds_ready);
    FUZZ_CHECK((size_t)book->available_copies + record->n_holds_ready + record->n_loans_on_hand ==
               (size_t)book->total_copies);
    FUZZ_CHECK(book->available_copies == 0 || record->n_hold_queue == 0);
    for (size_t i = 0; i < record->n_hold_queue; i++) {
        const hold_entry *x = record->hold_queue[i];
        if (i) {
            const hold_entry *before = record->hold_queue[i - 1];
            FUZZ_CHECK(before->place_time_ms < x->place_time_ms ||
                       (before->place_time_ms == x->place_time_ms && strcmp(before->hold_id, x->hold_id) < 0));
        }
        for (size_t j = 0; j < record->n_holds_ready; j++)
            FUZZ_CHECK(strcmp(x->hold_id, record->holds_ready[j]->hold_id) != 0);
    }
    for (size_t i = outbox_before; i < record->n_outbox; i++) {
        const event *e = record->outbox[i];
        const Library__Events__V1__HoldQueue *queue =
            e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED     ? e->hold_queued->queue
            : e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY    ? e->hold_ready->queue
            : e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED  ? e->hold_expired->queue
            : e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED ? e->hold_released->queue
                                                                             : NULL;
        FUZZ_CHECK(queue != NULL && queue->n_hold_ids == record->n_hold_queue);
        FUZZ_CHECK(queue->version == record->queue_version);
    }
}

static size_t queued_count(const book_record *record, const char *hold_id) {
    size_t count = 0;
    for (size_t i = 0; i < record->n_hold_queue; i++)
        count += strcmp(record->hold_queue[i]->hold_id, hold_id) == 0;
    for (size_t i = 0; i < record->n_holds_ready; i++)
        count += strcmp(record->holds_ready[i]->hold_id, hold_id) == 0;
    return count;
}

/* One hold rule and holds_finish, as the saga runs them; the rule's status. */
static status_code hold_step(arena *a, book_record *record, const event *e, const hold_times *times) {
    size_t before = record->n_outbox;
    bool changed = false;
    status st;
    status_code code;
    if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED)
        code = holds_place(a, record, e->hold_placed, e->attempt, times, &changed, &st);
    else if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED)
        code = holds_release(a, record, e->hold_canceled, e->attempt, times, &changed, &st);
    else
        code = holds_expire(a, record, times, &changed, &st);
    if (code != STATUS_OK) {
        FUZZ_CHECK(code == STATUS_RESOURCE_EXHAUSTED && strcmp(st.reason, "QUEUE_FULL") == 0);
        return code;
    }
    FUZZ_CHECK(changed || record->n_outbox == before);
    if (changed)
        FUZZ_CHECK(holds_finish(a, record, before, &st) == STATUS_OK);
    check_holds(record, before);
    return code;
}

/* HoldPlaced and HoldCanceled as the catalog consumes them (twice, as a redelivery would),
 * then the sweeper's expiry; any other hold event's queue snapshot becomes the book's queue,
 * and its hold is canceled, placed again (which then queues nothing) and expired. */
static void catalog_hold_rules(const event *e) {
    const char *hold_id = NULL, *user_id = NULL;
    const Library__Events__V1__HoldQueue *snapshot = NULL;
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED:
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED: {
        status checked;
        if (catalog_saga_check_event(e, &checked) != STATUS_OK) {
            FUZZ_CHECK(checked.code == STATUS_INVALID_ARGUMENT);
            return;
        }
        break;
    }
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED:
        hold_id = e->hold_queued->hold_id, user_id = e->hold_queued->user_id, snapshot = e->hold_queued->queue;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY:
        hold_id = e->hold_ready->hold_id, user_id = e->hold_ready->user_id, snapshot = e->hold_ready->queue;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED:
        hold_id = e->hold_expired->hold_id, user_id = e->hold_expired->user_id, snapshot = e->hold_expired->queue;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED:
        hold_id = e->hold_released->hold_id, user_id = e->hold_released->user_id, snapshot = e->hold_released->queue;
        break;
    default: return;
    }
    status ignored;
    if (hold_id && field_check_id(hold_id, "hold_id", &ignored) != STATUS_OK)
        return;
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    book_record *record = book_with_holds(a, snapshot);
    hold_times times = {.now_ms = 3000, .pickup_ms = PICKUP_MS};
    if (hold_id == NULL) { /* the catalog's own consumer */
        hold_step(a, record, e, &times);
        const char *id = e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED ? e->hold_placed->hold_id
                                                                                    : e->hold_canceled->hold_id;
        size_t queued = queued_count(record, id), queue_length = record->n_hold_queue;
        FUZZ_CHECK(queued <= 1);
        hold_step(a, record, e, &times);
        FUZZ_CHECK(queued_count(record, id) == queued && record->n_hold_queue == queue_length); /* same answer */
        if (e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED)
            FUZZ_CHECK(queued == 0);
    } else {
        Library__Events__V1__HoldCanceled canceled = LIBRARY__EVENTS__V1__HOLD_CANCELED__INIT;
        canceled.hold_id = (char *)hold_id, canceled.user_id = (char *)user_id, canceled.book_id = "b-001";
        event cancel = LIBRARY__EVENTS__V1__EVENT__INIT;
        cancel.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED, cancel.hold_canceled = &canceled;
        hold_step(a, record, &cancel, &times);
        FUZZ_CHECK(queued_count(record, hold_id) == 0);
        Library__Events__V1__HoldPlaced placed = LIBRARY__EVENTS__V1__HOLD_PLACED__INIT;
        placed.hold_id = (char *)hold_id, placed.user_id = (char *)user_id, placed.book_id = "b-001";
        placed.place_time = e->occur_time;
        event place = LIBRARY__EVENTS__V1__EVENT__INIT;
        place.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED, place.hold_placed = &placed;
        size_t outbox = record->n_outbox;
        hold_step(a, record, &place, &times);
        FUZZ_CHECK(queued_count(record, hold_id) == 0 && record->n_outbox == outbox); /* settled */
    }
    event sweep = LIBRARY__EVENTS__V1__EVENT__INIT;
    times.now_ms = 5000; /* r-ready's copy goes on */
    hold_step(a, record, &sweep, &times);
    FUZZ_CHECK(queued_count(record, "r-ready") == 0);
    times.now_ms = 1000000; /* and every other READY hold's */
    hold_step(a, record, &sweep, &times);
    FUZZ_CHECK(record->n_holds_ready <= (size_t)record->book->total_copies);
    size_t size = 0;
    uint8_t *packed = arena_pack(a, &record->base, &size);
    FUZZ_CHECK(packed != NULL);
    FUZZ_CHECK(arena_unpack(a, &library__catalog__internal__book_record__descriptor, packed, size) != NULL);
    arena_destroy(a);
}

/* Lending's consumer of the catalog's answer: only a PENDING loan moves. */
static void lending_consumer(bool reserved) {
    for (int state = LOAN_PENDING; state <= LOAN_CANCELED; state++) {
        loan_state next = lending_after_reservation((loan_state)state, reserved);
        if (state == LOAN_PENDING)
            FUZZ_CHECK(next == (reserved ? LOAN_ACTIVE : LOAN_CANCELED));
        else
            FUZZ_CHECK(next == (loan_state)state);
    }
}

/* Only what field_check_id lets through, joined by '|': nothing that could reach outside the
 * snapshot's value. */
static bool queue_ids_clean(const char *ids) {
    for (const char *c = ids; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '|'))
            return false;
    return true;
}

static void mypage_hold(const event *e, bool loan_too) {
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    hold_change hold;
    if (page_hold_change_from_event(a, e, &hold)) {
        FUZZ_CHECK(!loan_too);
        FUZZ_CHECK(hold.user_id != NULL && hold.user_id[0] != '\0');
        FUZZ_CHECK(hold.hold_id != NULL && hold.hold_id[0] != '\0' && queue_ids_clean(hold.hold_id));
        FUZZ_CHECK(hold.book_id != NULL && hold.book_title != NULL && hold.queue_book_id != NULL);
        FUZZ_CHECK(queue_ids_clean(hold.book_id) && strchr(hold.book_id, '|') == NULL);
        FUZZ_CHECK(hold.rank >= PAGE_HOLD_RANK_WAITING && hold.rank <= PAGE_HOLD_RANK_FINAL);
        FUZZ_CHECK(hold.place_seconds >= 0 && hold.expire_seconds >= 0);
        if (hold.queue_book_id[0] != '\0')
            FUZZ_CHECK(hold.queue_hold_ids != NULL && queue_ids_clean(hold.queue_hold_ids) &&
                       strchr(hold.queue_book_id, '|') == NULL);
    }
    arena_destroy(a);
}

/* An account event's change, and the page built from what the apply script would store: the
 * account ("a") and each listed loan's fine ("f:", one loan shown), whose amounts it gives back. */
static void mypage_account(const event *e, bool other_too) {
    arena *a = arena_create(0);
    FUZZ_CHECK(a != NULL);
    account_change change;
    if (!page_account_change_from_event(a, e, &change)) {
        arena_destroy(a);
        return;
    }
    FUZZ_CHECK(!other_too);
    FUZZ_CHECK(change.user_id != NULL && change.user_id[0] != '\0');
    FUZZ_CHECK(change.account != NULL && change.loan_fines != NULL && queue_ids_clean(change.loan_fines));
    const char *fields[3] = {"a", NULL, "l:"}, *values[3];
    values[0] = arena_sprintf(a, "%llu|%s", (unsigned long long)change.version, change.account);
    size_t count = 1;
    long long amount = -1;
    int consumed = 0;
    const char *bar = strchr(change.loan_fines, '|');
    if (bar != NULL) { /* the first listed loan, on the page with its fine */
        FUZZ_CHECK(sscanf(bar + 1, "%lld%n", &amount, &consumed) == 1 && amount >= 0);
        const char *loan_id = arena_strndup(a, change.loan_fines, (size_t)(bar - change.loan_fines));
        fields[1] = arena_sprintf(a, "f:%s", loan_id);
        values[1] = arena_sprintf(a, "%llu|%lld", (unsigned long long)change.version, amount);
        fields[2] = arena_sprintf(a, "l:%s", loan_id);
        values[2] = "1|2|2|0|0|b-001|Dune";
        count = 3;
    } else {
        FUZZ_CHECK(change.loan_fines[0] == '\0');
    }
    Library__Mypage__V1__Mypage *page = page_build(a, change.user_id, fields, values, count, 1700000000);
    FUZZ_CHECK(page != NULL && page->balance >= 0);
    const Library__Lending__V1__Account *account = e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED
                                                       ? e->fine_assessed->account->account
                                                   : e->body_case == LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID
                                                       ? e->fine_paid->account->account
                                                       : e->fine_waived->account->account;
    FUZZ_CHECK(page->n_fines == account->n_fines); /* the account travels whole */
    FUZZ_CHECK(page->balance == (account->balance > 0 ? account->balance : 0));
    if (count == 3)
        FUZZ_CHECK(page->n_loans == 1 && page->loans[0]->fine == amount);
    size_t packed_size = 0;
    FUZZ_CHECK(arena_pack(a, &page->base, &packed_size) != NULL);
    arena_destroy(a);
}

static void mypage_consumer(const event *e) {
    loan_change change;
    bool loan = page_change_from_event(e, &change);
    mypage_hold(e, loan);
    mypage_account(e, loan);
    if (!loan)
        return;
    FUZZ_CHECK(change.user_id != NULL && change.user_id[0] != '\0');
    FUZZ_CHECK(change.loan_id != NULL && change.loan_id[0] != '\0');
    FUZZ_CHECK(change.book_id != NULL && change.book_title != NULL);
    FUZZ_CHECK(change.rank >= PAGE_RANK_PENDING && change.rank <= PAGE_RANK_FINAL);
    FUZZ_CHECK(change.renewal_count >= 0 && change.overdue_for_seconds >= 0);
    FUZZ_CHECK(change.renewal_count == 0 || change.due_seconds > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    event *e = library__events__v1__event__unpack(NULL, size, data);
    if (e == NULL)
        return 0;
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED:
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED: catalog_consumer(e); break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_COPY_RESERVED: lending_consumer(true); break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_OUT_OF_STOCK: lending_consumer(false); break;
    default: catalog_hold_rules(e); break;
    }
    mypage_consumer(e);
    /* Re-encoding what was decoded writes what it measured. (Decoding that again is not
     * checked: protobuf-c 1.4 keeps an unknown field numbered 0 when its tag is a two-byte
     * varint, writes it back as one byte, and then refuses its own output; no service
     * re-encodes a received event, so this is protobuf-c's quirk, not ours. See
     * regressions/event/protobuf-c-field-zero.) */
    size_t packed_size = library__events__v1__event__get_packed_size(e);
    uint8_t *packed = malloc(packed_size ? packed_size : 1);
    FUZZ_CHECK(packed != NULL);
    FUZZ_CHECK(library__events__v1__event__pack(e, packed) == packed_size);
    free(packed);
    library__events__v1__event__free_unpacked(e, NULL);
    return 0;
}
