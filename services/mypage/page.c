/* page.c - events to page changes, and hash fields to a Mypage. */
#include "page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "field.h"
#include "text.h"
#include "timestamp.h"

/* An event's time in ms; outside the Timestamp range it means "no time" (0). */
static int64_t time_ms(const Google__Protobuf__Timestamp *t) {
    return timestamp_to_ms(t, 0);
}

static int64_t seconds(const Google__Protobuf__Timestamp *t) {
    return t ? t->seconds : 0;
}

/* A time that goes into the page: 0 (none) when absent or outside the Timestamp range. */
static int64_t page_seconds(const Google__Protobuf__Timestamp *t) {
    return time_ms(t) > 0 ? t->seconds : 0;
}

bool page_change_from_event(const event *e, loan_change *out) {
    memset(out, 0, sizeof *out);
    out->event_time_ms = time_ms(e->occur_time);
    out->book_title = "";
    out->book_id = "";
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_REQUESTED:
        out->user_id = e->loan_requested->user_id;
        out->loan_id = e->loan_requested->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING;
        out->rank = PAGE_RANK_PENDING;
        out->due_seconds = seconds(e->loan_requested->due_time);
        out->book_id = e->loan_requested->book_id;
        out->book_title = e->loan_requested->book_title;
        out->order_ms = time_ms(e->loan_requested->borrow_time);
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED:
        out->user_id = e->loan_activated->user_id;
        out->loan_id = e->loan_activated->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
        out->rank = PAGE_RANK_ACTIVE;
        out->due_seconds = seconds(e->loan_activated->due_time);
        out->book_id = e->loan_activated->book_id;
        out->book_title = e->loan_activated->book_title;
        out->order_ms = time_ms(e->loan_activated->borrow_time);
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED:
        out->user_id = e->loan_canceled->user_id;
        out->loan_id = e->loan_canceled->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED;
        out->rank = PAGE_RANK_FINAL;
        out->book_id = e->loan_canceled->book_id;
        out->book_title = e->loan_canceled->book_title;
        out->due_seconds = page_seconds(e->loan_canceled->due_time);
        out->order_ms = time_ms(e->loan_canceled->borrow_time);
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED:
        out->user_id = e->loan_returned->user_id;
        out->loan_id = e->loan_returned->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED;
        out->rank = PAGE_RANK_FINAL;
        out->book_id = e->loan_returned->book_id;
        /* what the page shows of the loan, so this event alone rebuilds it (the stream keeps
         * only RETENTION); an older LoanReturned has none of it, and the merge keeps what
         * earlier events put there (page_store.c) */
        out->book_title = e->loan_returned->book_title;
        out->due_seconds = page_seconds(e->loan_returned->due_time);
        if (e->loan_returned->renewal_count > 0 && out->due_seconds > 0)
            out->renewal_count = e->loan_returned->renewal_count;
        out->order_ms = time_ms(e->loan_returned->borrow_time);
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE:
        out->user_id = e->loan_overdue->user_id;
        out->loan_id = e->loan_overdue->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
        out->rank = PAGE_RANK_ACTIVE;
        out->overdue = true;
        out->due_seconds = seconds(e->loan_overdue->due_time);
        out->overdue_for_seconds = page_seconds(e->loan_overdue->due_time);
        out->book_id = e->loan_overdue->book_id;
        out->order_ms = time_ms(e->loan_overdue->borrow_time);
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RENEWED:
        /* a renewal says the loan is ACTIVE; its due time goes to "r:", not to the loan's own
         * (the one it was borrowed with, which a LoanOverdue without renewals refers to) */
        out->user_id = e->loan_renewed->user_id;
        out->loan_id = e->loan_renewed->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
        out->rank = PAGE_RANK_ACTIVE;
        out->book_id = e->loan_renewed->book_id;
        out->due_seconds = page_seconds(e->loan_renewed->due_time);
        out->renewal_count = e->loan_renewed->renewal_count > 0 ? e->loan_renewed->renewal_count : 0;
        out->order_ms = time_ms(e->loan_renewed->borrow_time);
        if (out->renewal_count == 0 || out->due_seconds == 0)
            return false; /* says nothing a page could show */
        break;
    default:
        return false;
    }
    if (out->book_id == NULL)
        out->book_id = "";
    if (out->book_title == NULL)
        out->book_title = "";
    return out->user_id != NULL && out->user_id[0] != '\0' && out->loan_id != NULL &&
           out->loan_id[0] != '\0';
}

static bool is_id(const char *id) {
    status ignored;
    return id != NULL && field_check_id(id, "id", &ignored) == STATUS_OK;
}

/* The snapshot's ids joined by '|' into out; false (nothing set) when one is not an id. */
static bool queue_from_event(arena *a, const Library__Events__V1__HoldQueue *queue, hold_change *out) {
    if (queue == NULL || !is_id(queue->book_id))
        return false;
    size_t length = 1;
    for (size_t i = 0; i < queue->n_hold_ids; i++) {
        if (!is_id(queue->hold_ids[i]))
            return false;
        length += strlen(queue->hold_ids[i]) + 1;
    }
    char *joined = arena_alloc(a, length);
    if (joined == NULL)
        return false;
    size_t used = 0;
    for (size_t i = 0; i < queue->n_hold_ids; i++) {
        size_t n = strlen(queue->hold_ids[i]);
        if (i > 0)
            joined[used++] = '|';
        memcpy(joined + used, queue->hold_ids[i], n);
        used += n;
    }
    joined[used] = '\0';
    out->queue_book_id = queue->book_id;
    out->queue_version = queue->version;
    out->queue_hold_ids = joined;
    return true;
}

/* The user, hold and book ids and the place time every hold event has (the place time not in
 * events from before it was carried), and the status its kind means. */
static void hold_basics(hold_change *out, const char *user_id, const char *hold_id, const char *book_id,
                        const Google__Protobuf__Timestamp *place_time, int hold_status, int rank) {
    out->user_id = user_id;
    out->order_ms = time_ms(place_time);
    out->hold_id = hold_id;
    out->book_id = book_id;
    out->status = hold_status;
    out->rank = rank;
}

bool page_hold_change_from_event(arena *a, const event *e, hold_change *out) {
    memset(out, 0, sizeof *out);
    out->event_time_ms = time_ms(e->occur_time);
    const Library__Events__V1__HoldQueue *queue = NULL;
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_PLACED: {
        const Library__Events__V1__HoldPlaced *b = e->hold_placed;
        hold_basics(out, b->user_id, b->hold_id, b->book_id, b->place_time,
                    LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING, PAGE_HOLD_RANK_WAITING);
        out->book_title = b->book_title;
        out->place_seconds = page_seconds(b->place_time);
        break;
    }
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_QUEUED: {
        const Library__Events__V1__HoldQueued *b = e->hold_queued;
        hold_basics(out, b->user_id, b->hold_id, b->book_id, b->place_time,
                    LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING, PAGE_HOLD_RANK_WAITING);
        queue = b->queue;
        break;
    }
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_READY: {
        const Library__Events__V1__HoldReady *b = e->hold_ready;
        hold_basics(out, b->user_id, b->hold_id, b->book_id, b->place_time,
                    LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY, PAGE_HOLD_RANK_READY);
        out->expire_seconds = page_seconds(b->expire_time);
        queue = b->queue;
        break;
    }
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_FULFILLED: {
        const Library__Events__V1__HoldFulfilled *b = e->hold_fulfilled;
        hold_basics(out, b->user_id, b->hold_id, b->book_id, b->place_time,
                    LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_FULFILLED, PAGE_HOLD_RANK_FINAL);
        break;
    }
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_CANCELED: {
        const Library__Events__V1__HoldCanceled *b = e->hold_canceled;
        hold_basics(out, b->user_id, b->hold_id, b->book_id, b->place_time,
                    LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_CANCELED, PAGE_HOLD_RANK_FINAL);
        break;
    }
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_EXPIRED: {
        const Library__Events__V1__HoldExpired *b = e->hold_expired;
        hold_basics(out, b->user_id, b->hold_id, b->book_id, b->place_time,
                    LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_EXPIRED, PAGE_HOLD_RANK_FINAL);
        queue = b->queue;
        break;
    }
    case LIBRARY__EVENTS__V1__EVENT__BODY_HOLD_RELEASED: {
        /* the catalog's confirmation of a HoldCanceled */
        const Library__Events__V1__HoldReleased *b = e->hold_released;
        hold_basics(out, b->user_id, b->hold_id, b->book_id, b->place_time,
                    LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_CANCELED, PAGE_HOLD_RANK_FINAL);
        queue = b->queue;
        break;
    }
    default:
        return false;
    }
    if (out->book_title == NULL)
        out->book_title = "";
    if (out->book_id == NULL || (out->book_id[0] != '\0' && !is_id(out->book_id)))
        out->book_id = "";
    out->queue_book_id = "";
    if (queue != NULL)
        queue_from_event(a, queue, out);
    return out->user_id != NULL && out->user_id[0] != '\0' && is_id(out->hold_id);
}

/* Appends "loan id|amount" to joined (used bytes so far), '|' first unless it is the first. */
static size_t append_fine(char *joined, size_t used, const char *loan_id, int64_t amount) {
    /* the caller sized joined: strlen(loan_id) + 2 bars + 20 digits + the '\0' per fine */
    return used + (size_t)sprintf(joined + used, "%s%s|%lld", used ? "|" : "", loan_id,
                                  (long long)(amount > 0 ? amount : 0));
}

/* "loan id|amount|..." of the listed fines with a server-made loan id (negative amounts as 0),
 * and also_loan's when the list lacks it (FineAssessed names its loan). NULL: out of memory. */
static char *loan_fines(arena *a, const Library__Lending__V1__Account *account, const char *also_loan,
                        int64_t also_amount) {
    bool also = is_id(also_loan);
    size_t length = 1 + (also ? strlen(also_loan) + 22 : 0);
    for (size_t i = 0; i < account->n_fines; i++)
        if (account->fines[i] != NULL && is_id(account->fines[i]->loan_id))
            length += strlen(account->fines[i]->loan_id) + 22;
    char *joined = arena_alloc(a, length);
    if (joined == NULL)
        return NULL;
    size_t used = 0;
    for (size_t i = 0; i < account->n_fines; i++) {
        const Library__Lending__V1__Fine *fine = account->fines[i];
        if (fine == NULL || !is_id(fine->loan_id))
            continue;
        if (also && strcmp(fine->loan_id, also_loan) == 0)
            also = false; /* listed: the snapshot's word is the one kept */
        used = append_fine(joined, used, fine->loan_id, fine->amount);
    }
    if (also)
        append_fine(joined, used, also_loan, also_amount);
    return joined;
}

bool page_account_change_from_event(arena *a, const event *e, account_change *out) {
    memset(out, 0, sizeof *out);
    out->event_time_ms = time_ms(e->occur_time);
    const Library__Events__V1__AccountSnapshot *snapshot = NULL;
    const char *loan_id = NULL;
    int64_t amount = 0;
    switch (e->body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED:
        out->user_id = e->fine_assessed->user_id;
        snapshot = e->fine_assessed->account;
        loan_id = e->fine_assessed->loan_id;
        amount = e->fine_assessed->amount;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID:
        out->user_id = e->fine_paid->user_id;
        snapshot = e->fine_paid->account;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_FINE_WAIVED:
        out->user_id = e->fine_waived->user_id;
        snapshot = e->fine_waived->account;
        break;
    default:
        return false;
    }
    if (snapshot == NULL || snapshot->account == NULL)
        return false; /* no version: nothing a reader could order */
    const Library__Lending__V1__Account *account = snapshot->account;
    if (out->user_id == NULL || out->user_id[0] == '\0')
        out->user_id = account->user_id;
    if (out->user_id == NULL || out->user_id[0] == '\0' ||
        (account->user_id != NULL && account->user_id[0] != '\0' && strcmp(account->user_id, out->user_id) != 0))
        return false;
    size_t size = 0;
    uint8_t *packed = arena_pack(a, &account->base, &size);
    if (packed == NULL)
        return false;
    /* what a page cannot read back (protobuf-c writes some unknown fields in a form it then
     * refuses; fuzz regressions/event) is not stored */
    if (arena_unpack(a, &library__lending__v1__account__descriptor, packed, size) == NULL)
        return false;
    out->version = snapshot->version;
    out->account = text_base64url_encode(a, packed, size);
    out->loan_fines = loan_fines(a, account, loan_id, amount);
    return out->account != NULL && out->loan_fines != NULL;
}

typedef struct parsed_loan {
    Library__Mypage__V1__MypageLoan *loan;
    unsigned long long seq;
    int64_t order_ms; /* its "b:", 0 when it has none */
    bool overdue;
} parsed_loan;

/* A "b:" or "p:" field: the borrow time of a loan, the place time of a hold (ms). */
typedef struct order_time {
    const char *id;
    int64_t ms;
} order_time;

static bool parse_order_time(const char *id, const char *value, order_time *out) {
    long long ms = 0;
    char extra;
    if (sscanf(value, "%lld%c", &ms, &extra) != 1 || ms <= 0)
        return false;
    *out = (order_time){.id = id, .ms = ms};
    return true;
}

static int order_time_by_id(const void *a, const void *b) {
    return strcmp(((const order_time *)a)->id, ((const order_time *)b)->id);
}

/* The order time of id among times (sorted by id), 0 when it has none. */
static int64_t order_time_of(const order_time *times, size_t count, const char *id) {
    order_time key = {.id = id};
    const order_time *found = count ? bsearch(&key, times, count, sizeof *times, order_time_by_id) : NULL;
    return found ? found->ms : 0;
}

/* -1, 0 or 1 as item x (order time, stream sequence, id) goes before or after y, oldest first:
 * items without an order time are older than all with one, and among themselves go by
 * sequence; a tie goes by id. A total order, so qsort gives every reader the same list. */
static int older_first(int64_t x_ms, unsigned long long x_seq, const char *x_id, int64_t y_ms,
                       unsigned long long y_seq, const char *y_id) {
    if ((x_ms > 0) != (y_ms > 0))
        return x_ms > 0 ? 1 : -1;
    if (x_ms != y_ms)
        return x_ms < y_ms ? -1 : 1;
    if (x_ms == 0 && x_seq != y_seq)
        return x_seq < y_seq ? -1 : 1;
    return strcmp(x_id, y_id);
}

static Google__Protobuf__Timestamp *page_time(arena *a, long long seconds) {
    if (seconds <= 0)
        return NULL;
    Google__Protobuf__Timestamp *t = (void *)arena_new_message(a, &google__protobuf__timestamp__descriptor);
    if (t)
        t->seconds = seconds;
    return t;
}

/* An "r:" field: a loan's renewals and the due time last announced overdue. */
typedef struct renewal_facts {
    const char *loan_id;
    int32_t count;
    int64_t due;
    int64_t overdue_due;
} renewal_facts;

static bool parse_renewal(const char *loan_id, const char *value, renewal_facts *out) {
    int count = 0;
    long long due = 0, overdue_due = 0;
    char extra;
    if (sscanf(value, "%d|%lld|%lld%c", &count, &due, &overdue_due, &extra) != 3 || count < 0 || due < 0 ||
        overdue_due < 0)
        return false;
    *out = (renewal_facts){.loan_id = loan_id, .count = count, .due = due, .overdue_due = overdue_due};
    return true;
}

static int by_loan_id(const void *a, const void *b) {
    return strcmp(((const renewal_facts *)a)->loan_id, ((const renewal_facts *)b)->loan_id);
}

/* The loan as its renewals leave it: the newest renewal's due time, and the overdue flag only
 * when it was announced for that due time (or, never renewed, as the loan's own field says). */
static void apply_renewal(arena *a, parsed_loan *loan, const renewal_facts *facts) {
    loan->loan->renewal_count = facts->count;
    if (facts->count > 0) {
        if (loan->loan->due_time)
            loan->loan->due_time->seconds = facts->due;
        else
            loan->loan->due_time = page_time(a, facts->due);
        loan->overdue = facts->overdue_due > 0 && facts->overdue_due >= facts->due;
    } else if (facts->overdue_due > 0) {
        loan->overdue = true;
    }
}

typedef struct parsed_hold {
    Library__Mypage__V1__MypageHold *hold;
    unsigned long long seq;
    int64_t order_ms; /* its "p:", 0 when it has none */
} parsed_hold;

/* Parses "seq|rank|status|place|expire|book_id|title" of an open (WAITING or READY) hold. */
static bool parse_hold(arena *a, const char *hold_id, const char *value, parsed_hold *out) {
    unsigned long long seq = 0;
    int rank = 0, status_value = 0, consumed = 0;
    long long place = 0, expire = 0;
    if (sscanf(value, "%llu|%d|%d|%lld|%lld|%n", &seq, &rank, &status_value, &place, &expire, &consumed) != 5 ||
        consumed == 0)
        return false;
    if (rank != PAGE_HOLD_RANK_WAITING && rank != PAGE_HOLD_RANK_READY)
        return false; /* over: the hold left the page */
    const char *book = value + consumed;
    const char *bar = strchr(book, '|');
    if (bar == NULL)
        return false;
    Library__Mypage__V1__MypageHold *hold = (void *)arena_new_message(a, &library__mypage__v1__mypage_hold__descriptor);
    if (hold == NULL)
        return false;
    hold->hold_id = arena_strdup(a, hold_id);
    hold->book_id = arena_strndup(a, book, (size_t)(bar - book));
    hold->book_title = arena_strdup(a, bar + 1);
    hold->status = rank == PAGE_HOLD_RANK_READY ? LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_READY
                                                 : LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING;
    hold->place_time = page_time(a, place);
    if (rank == PAGE_HOLD_RANK_READY)
        hold->expire_time = page_time(a, expire);
    out->hold = hold;
    out->seq = seq;
    (void)status_value;
    return hold->hold_id && hold->book_id && hold->book_title;
}

static int oldest_first(const void *a, const void *b) {
    const parsed_hold *x = a, *y = b;
    return older_first(x->order_ms, x->seq, x->hold->hold_id, y->order_ms, y->seq, y->hold->hold_id);
}

/* 1 + the index of hold_id in a snapshot "version|id|id|...", or 0 when it is not there. */
static int32_t queue_position(const char *snapshot, const char *hold_id) {
    const char *at = strchr(snapshot, '|');
    size_t length = strlen(hold_id);
    for (int32_t position = 1; at != NULL && position < INT32_MAX; position++) {
        const char *id = at + 1;
        at = strchr(id, '|');
        size_t n = at ? (size_t)(at - id) : strlen(id);
        if (n == length && length > 0 && memcmp(id, hold_id, n) == 0)
            return position;
    }
    return 0;
}

/* The positions of the WAITING holds, from the "q:<book id>" snapshots among the fields. */
static void hold_positions(parsed_hold *holds, size_t count, const char *const *fields,
                           const char *const *values, size_t field_count) {
    for (size_t i = 0; i < count; i++) {
        Library__Mypage__V1__MypageHold *hold = holds[i].hold;
        if (hold->status != LIBRARY__LENDING__V1__HOLD_STATUS__HOLD_STATUS_WAITING)
            continue;
        for (size_t f = 0; f < field_count; f++)
            if (strncmp(fields[f], "q:", 2) == 0 && strcmp(fields[f] + 2, hold->book_id) == 0)
                hold->position = queue_position(values[f], hold->hold_id);
    }
}

/* Parses "seq|rank|status|due|overdue|book_id|title" into a MypageLoan in the arena. */
static bool parse_loan(arena *a, const char *loan_id, const char *value, parsed_loan *out) {
    unsigned long long seq = 0;
    int rank = 0, status_value = 0, overdue = 0;
    long long due = 0;
    int consumed = 0;
    if (sscanf(value, "%llu|%d|%d|%lld|%d|%n", &seq, &rank, &status_value, &due, &overdue, &consumed) != 5 ||
        consumed == 0)
        return false;
    const char *book = value + consumed;
    const char *bar = strchr(book, '|');
    if (bar == NULL)
        return false;
    Library__Mypage__V1__MypageLoan *loan = (void *)arena_new_message(a, &library__mypage__v1__mypage_loan__descriptor);
    if (loan == NULL)
        return false;
    loan->loan_id = arena_strdup(a, loan_id);
    loan->book_id = arena_strndup(a, book, (size_t)(bar - book));
    loan->book_title = arena_strdup(a, bar + 1);
    loan->status = (Library__Lending__V1__LoanStatus)status_value;
    if (due > 0) {
        loan->due_time = (void *)arena_new_message(a, &google__protobuf__timestamp__descriptor);
        if (loan->due_time)
            loan->due_time->seconds = due;
    }
    out->loan = loan;
    out->seq = seq;
    out->overdue = overdue != 0;
    return loan->loan_id && loan->book_id && loan->book_title;
}

/* An "f:" field: the fine last assessed for a loan. */
typedef struct loan_fine {
    const char *loan_id;
    int64_t amount;
} loan_fine;

static bool parse_fine(const char *loan_id, const char *value, loan_fine *out) {
    unsigned long long version = 0;
    long long amount = 0;
    char extra;
    if (sscanf(value, "%llu|%lld%c", &version, &amount, &extra) != 2 || amount < 0)
        return false;
    *out = (loan_fine){.loan_id = loan_id, .amount = amount};
    return true;
}

static int fine_by_loan_id(const void *a, const void *b) {
    return strcmp(((const loan_fine *)a)->loan_id, ((const loan_fine *)b)->loan_id);
}

/* Sets each loan's fine from the "f:" fields. */
static void apply_fines(parsed_loan *loans, size_t count, loan_fine *fines, size_t n_fines) {
    qsort(fines, n_fines, sizeof *fines, fine_by_loan_id);
    for (size_t i = 0; i < count && n_fines > 0; i++) {
        loan_fine key = {.loan_id = loans[i].loan->loan_id};
        const loan_fine *fine = bsearch(&key, fines, n_fines, sizeof *fines, fine_by_loan_id);
        if (fine)
            loans[i].loan->fine = fine->amount;
    }
}

/* The balance and fines of the "a" field "version|base64url(Account)"; false (page untouched)
 * when it does not parse. */
static bool apply_account(arena *a, Library__Mypage__V1__Mypage *page, const char *value) {
    unsigned long long version = 0;
    int consumed = 0;
    if (sscanf(value, "%llu|%n", &version, &consumed) != 1 || consumed == 0)
        return false;
    uint8_t *packed = NULL;
    size_t size = 0;
    if (!text_base64url_decode(a, value + consumed, &packed, &size))
        return false;
    Library__Lending__V1__Account *account =
        (void *)arena_unpack(a, &library__lending__v1__account__descriptor, packed, size);
    if (account == NULL)
        return false;
    size_t kept = 0;
    for (size_t i = 0; i < account->n_fines; i++)
        if (account->fines[i] != NULL)
            account->fines[kept++] = account->fines[i];
    page->balance = account->balance > 0 ? account->balance : 0;
    page->fines = account->fines;
    page->n_fines = kept;
    return true;
}

static int newest_first(const void *a, const void *b) {
    const parsed_loan *x = a, *y = b;
    return older_first(y->order_ms, y->seq, y->loan->loan_id, x->order_ms, x->seq, x->loan->loan_id);
}

/* Whether the page shows anything at all. */
static bool shows_something(const Library__Mypage__V1__Mypage *page) {
    return page->n_loans > 0 || page->n_holds > 0 || page->balance > 0 || page->n_fines > 0;
}

Library__Mypage__V1__Mypage *page_build(arena *a, const char *user_id, const char *const *fields,
                                        const char *const *values, size_t count,
                                        int64_t now_seconds) {
    Library__Mypage__V1__Mypage *page = (void *)arena_new_message(a, &library__mypage__v1__mypage__descriptor);
    parsed_loan *loans = arena_alloc(a, (count + 1) * sizeof *loans);
    parsed_hold *holds = arena_alloc(a, (count + 1) * sizeof *holds);
    renewal_facts *renewals = arena_alloc(a, (count + 1) * sizeof *renewals);
    loan_fine *fines = arena_alloc(a, (count + 1) * sizeof *fines);
    order_time *borrowed = arena_alloc(a, (count + 1) * sizeof *borrowed);
    order_time *placed = arena_alloc(a, (count + 1) * sizeof *placed);
    if (page == NULL || loans == NULL || holds == NULL || renewals == NULL || fines == NULL || borrowed == NULL ||
        placed == NULL)
        return NULL;
    page->user_id = arena_strdup(a, user_id);
    size_t n = 0, n_holds = 0, n_renewals = 0, n_fines = 0, n_borrowed = 0, n_placed = 0;
    for (size_t i = 0; i < count; i++) {
        if (strcmp(fields[i], "t") == 0) {
            long long ms = atoll(values[i]);
            if (ms < 0)
                ms = 0;
            page->last_event_time = (void *)arena_new_message(a, &google__protobuf__timestamp__descriptor);
            if (page->last_event_time) {
                page->last_event_time->seconds = ms / 1000;
                page->last_event_time->nanos = (int32_t)(ms % 1000) * 1000000;
            }
        } else if (strncmp(fields[i], "l:", 2) == 0 && parse_loan(a, fields[i] + 2, values[i], &loans[n])) {
            n++;
        } else if (strncmp(fields[i], "r:", 2) == 0 && parse_renewal(fields[i] + 2, values[i], &renewals[n_renewals])) {
            n_renewals++;
        } else if (strncmp(fields[i], "h:", 2) == 0 && parse_hold(a, fields[i] + 2, values[i], &holds[n_holds])) {
            n_holds++;
        } else if (strncmp(fields[i], "f:", 2) == 0 && parse_fine(fields[i] + 2, values[i], &fines[n_fines])) {
            n_fines++;
        } else if (strncmp(fields[i], "b:", 2) == 0 &&
                   parse_order_time(fields[i] + 2, values[i], &borrowed[n_borrowed])) {
            n_borrowed++;
        } else if (strncmp(fields[i], "p:", 2) == 0 && parse_order_time(fields[i] + 2, values[i], &placed[n_placed])) {
            n_placed++;
        } else if (strcmp(fields[i], "a") == 0) {
            apply_account(a, page, values[i]);
        }
    }
    qsort(borrowed, n_borrowed, sizeof *borrowed, order_time_by_id);
    for (size_t i = 0; i < n; i++)
        loans[i].order_ms = order_time_of(borrowed, n_borrowed, loans[i].loan->loan_id);
    qsort(placed, n_placed, sizeof *placed, order_time_by_id);
    for (size_t i = 0; i < n_holds; i++)
        holds[i].order_ms = order_time_of(placed, n_placed, holds[i].hold->hold_id);
    apply_fines(loans, n, fines, n_fines);
    qsort(renewals, n_renewals, sizeof *renewals, by_loan_id);
    for (size_t i = 0; i < n && n_renewals > 0; i++) {
        renewal_facts key = {.loan_id = loans[i].loan->loan_id};
        const renewal_facts *facts = bsearch(&key, renewals, n_renewals, sizeof *renewals, by_loan_id);
        if (facts)
            apply_renewal(a, &loans[i], facts);
    }
    qsort(loans, n, sizeof *loans, newest_first);
    page->loans = arena_alloc(a, (n + 1) * sizeof *page->loans);
    if (page->loans == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        Library__Mypage__V1__MypageLoan *loan = loans[i].loan;
        page->loans[i] = loan;
        if (loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE) {
            page->borrowed_count++;
            bool late = loans[i].overdue || (loan->due_time && loan->due_time->seconds < now_seconds);
            page->overdue_count += late;
        }
    }
    page->n_loans = n;
    qsort(holds, n_holds, sizeof *holds, oldest_first);
    hold_positions(holds, n_holds, fields, values, count);
    page->holds = arena_alloc(a, (n_holds + 1) * sizeof *page->holds);
    if (page->holds == NULL)
        return NULL;
    for (size_t i = 0; i < n_holds; i++)
        page->holds[i] = holds[i].hold;
    page->n_holds = n_holds;
    if (!shows_something(page))
        page->last_event_time = NULL; /* as for a user without a page (page.h) */
    return page;
}
