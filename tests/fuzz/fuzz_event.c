/* fuzz_event.c - the library.events.v1.Event envelope as the consumers get it from the
 * stream: unpacked as events.c does, then what each consumer does with it that needs no NATS
 * or Redis: the catalog saga's id checks and its decision on a book record (run twice, as a
 * redelivery would), lending's loan state change on a reservation outcome, and mypage's page
 * change (a loan's, a renewal's, or a hold's with its queue snapshot).
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
#include "../../services/catalog/saga.h"
#include "status.h"

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

static void mypage_consumer(const event *e) {
    loan_change change;
    bool loan = page_change_from_event(e, &change);
    mypage_hold(e, loan);
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
    default: break;
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
