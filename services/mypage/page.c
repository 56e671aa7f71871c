/* page.c - events to page changes, and hash fields to a Mypage. */
#include "page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31. */
static const int64_t TIMESTAMP_SECONDS_MIN = -62135596800LL, TIMESTAMP_SECONDS_MAX = 253402300799LL;

/* An event's seconds come off the stream as any int64: outside the Timestamp range they
 * mean "no time" (0), since seconds * 1000 would overflow (undefined behaviour, found by
 * tests/fuzz/fuzz_event). */
static int64_t time_ms(const Google__Protobuf__Timestamp *t) {
    if (t == NULL || t->seconds < TIMESTAMP_SECONDS_MIN || t->seconds > TIMESTAMP_SECONDS_MAX)
        return 0;
    return t->seconds * 1000 + t->nanos / 1000000;
}

static int64_t seconds(const Google__Protobuf__Timestamp *t) {
    return t ? t->seconds : 0;
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
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED:
        out->user_id = e->loan_activated->user_id;
        out->loan_id = e->loan_activated->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
        out->rank = PAGE_RANK_ACTIVE;
        out->due_seconds = seconds(e->loan_activated->due_time);
        out->book_id = e->loan_activated->book_id;
        out->book_title = e->loan_activated->book_title;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_CANCELED:
        out->user_id = e->loan_canceled->user_id;
        out->loan_id = e->loan_canceled->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED;
        out->rank = PAGE_RANK_FINAL;
        out->book_id = e->loan_canceled->book_id;
        out->book_title = e->loan_canceled->book_title;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_RETURNED:
        out->user_id = e->loan_returned->user_id;
        out->loan_id = e->loan_returned->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED;
        out->rank = PAGE_RANK_FINAL;
        out->book_id = e->loan_returned->book_id;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE:
        out->user_id = e->loan_overdue->user_id;
        out->loan_id = e->loan_overdue->loan_id;
        out->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
        out->rank = PAGE_RANK_ACTIVE;
        out->overdue = true;
        out->due_seconds = seconds(e->loan_overdue->due_time);
        out->book_id = e->loan_overdue->book_id;
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

typedef struct parsed_loan {
    Library__Mypage__V1__MypageLoan *loan;
    unsigned long long seq;
    bool overdue;
} parsed_loan;

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

static int newest_first(const void *a, const void *b) {
    const parsed_loan *x = a, *y = b;
    return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0;
}

Library__Mypage__V1__Mypage *page_build(arena *a, const char *user_id, const char *const *fields,
                                        const char *const *values, size_t count,
                                        int64_t now_seconds) {
    Library__Mypage__V1__Mypage *page = (void *)arena_new_message(a, &library__mypage__v1__mypage__descriptor);
    parsed_loan *loans = arena_alloc(a, (count + 1) * sizeof *loans);
    if (page == NULL || loans == NULL)
        return NULL;
    page->user_id = arena_strdup(a, user_id);
    size_t n = 0;
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
        }
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
    return page;
}
