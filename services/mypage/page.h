/* page.h - the mypage read model as plain functions: what a loan event means for a user's
 * page, and how a page is built from its Redis hash. No I/O here, so unit tests call these
 * directly; page_store.c holds the Redis side (the Lua scripts that apply a change).
 *
 * A user's page is one Redis hash. Field "t" is the occur time of the newest event applied
 * (Unix ms); each loan is a field "l:<loan id>" whose value is
 * "seq|rank|status|due|overdue|book_id|title" (the title last: it may contain '|').
 *
 * Applying an event is a merge that is idempotent and does not depend on order: a loan only
 * moves forward in rank (PENDING 1 < ACTIVE 2 < CANCELED, RETURNED 3); an event of the
 * loan's current rank only adds its overdue flag; any event fills in fields the page lacks;
 * seq keeps the loan's earliest stream sequence (the order of the page, newest first). So
 * a redelivered event, the same event published again, and events out of order change
 * nothing, and replaying the stream rebuilds exactly the same pages. */
#ifndef MYPAGE_PAGE_H
#define MYPAGE_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "events.h"
#include "library/mypage/v1/mypage.pb-c.h"

enum { PAGE_RANK_PENDING = 1, PAGE_RANK_ACTIVE = 2, PAGE_RANK_FINAL = 3 };

/* What one loan event says about one loan. Empty strings and 0 mean "not in this event". */
typedef struct loan_change {
    const char *user_id;
    const char *loan_id;
    int status; /* Library__Lending__V1__LoanStatus */
    int rank;
    bool overdue;
    int64_t due_seconds;
    const char *book_id;
    const char *book_title;
    int64_t event_time_ms;
} loan_change;

/* false for events that do not concern a user's loans (the catalog's) and for loan events
 * without a user or loan id. The strings point into e. */
bool page_change_from_event(const event *e, loan_change *out);

/* Builds the Mypage from the hash's field/value pairs (HGETALL order), newest loan first;
 * overdue_count counts ACTIVE loans flagged overdue or past due at now_seconds. Values that
 * do not parse are skipped. NULL when out of memory. */
Library__Mypage__V1__Mypage *page_build(arena *a, const char *user_id, const char *const *fields,
                                        const char *const *values, size_t count,
                                        int64_t now_seconds);

#endif
