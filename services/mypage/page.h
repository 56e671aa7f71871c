/* page.h - the mypage read model as plain functions: what a loan or hold event means for a
 * user's page, and how a page is built from its Redis hash. No I/O here, so unit tests call
 * these directly; page_store.c holds the Redis side (the Lua scripts that apply a change).
 *
 * A user's page is one Redis hash. Field "t" is the occur time of the newest event applied
 * (Unix ms); each loan is a field "l:<loan id>" whose value is
 * "seq|rank|status|due|overdue|book_id|title" (the title last: it may contain '|'). A loan
 * that was renewed or announced overdue also has "r:<loan id>" = "renewals|due|overdue_due":
 * the highest renewal count seen with its due time, and the latest due time a LoanOverdue
 * was announced for (so an announcement about a due time a renewal has since moved on says
 * nothing). Each hold is "h:<hold id>" = "seq|rank|status|place|expire|book_id|title"
 * (WAITING 1 < READY 2 < FULFILLED, CANCELED, EXPIRED 3; the page shows ranks 1 and 2).
 *
 * Beside the pages, each book's newest queue snapshot (HoldQueue: its WAITING holds in
 * order) is a string "version|hold id|hold id|..." that only a higher version replaces;
 * reading a page adds "q:<book id>" pairs with the snapshots of the books it waits for, from
 * which the positions are counted. Which user holds each open hold is kept too, so the users
 * a newer snapshot moves are told their page changed (page_store.c).
 *
 * The user's account (lending's fines) is field "a" = "version|account", the account the
 * newest AccountSnapshot carried (packed Library__Lending__V1__Account, base64url); a snapshot
 * replaces it only when its version is higher (at an equal version, the greater value wins, so
 * the order still does not matter). Each loan a snapshot lists a fine for also gets
 * "f:<loan id>" = "version|amount", replaced the same way, so a loan keeps the fine last
 * assessed for it after its fine has left the newest snapshot's list.
 *
 * Each loan and hold is ordered by a time of its own, which every event of it carries: a loan
 * by its borrow time, "b:<loan id>" = Unix ms, a hold by its place time, "p:<hold id>" = Unix
 * ms (the earliest seen, though they are all the same). The stream sequence that starts each
 * value orders only what has no such field (events from before they carried the time): such
 * a loan comes after every loan with one, such a hold before every hold with one. A tie goes
 * by id. So the order does not depend on which of an item's events the stream still keeps.
 *
 * A settled loan leaves the page RETENTION after its final event, with its "r:", "f:" and "b:";
 * "x:<loan id>" = the settle time (ms) marks it as removed for a while, so no later event puts
 * it back (page_store.h). A closed hold leaves the same way with its "p:", marked
 * "x:h:<hold id>". page_build ignores the marks.
 *
 * Applying an event is a merge that is idempotent and does not depend on order: a loan only
 * moves forward in rank (PENDING 1 < ACTIVE 2 < CANCELED, RETURNED 3); an event of the
 * loan's current rank only adds its overdue flag; any event fills in fields the page lacks;
 * seq keeps the loan's earliest stream sequence, "b:" its earliest borrow time. So
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
    int32_t renewal_count;     /* LoanRenewed, LoanReturned: the count, due_seconds the due time after it */
    int64_t overdue_for_seconds; /* LoanOverdue: the due time it announces as passed */
    int64_t order_ms;            /* the loan's borrow time (ms), which orders the page; 0: not carried */
} loan_change;

/* false for events that do not concern a user's loans (the catalog's, the holds') and for
 * loan events without a user or loan id. The strings point into e. */
bool page_change_from_event(const event *e, loan_change *out);

enum { PAGE_HOLD_RANK_WAITING = 1, PAGE_HOLD_RANK_READY = 2, PAGE_HOLD_RANK_FINAL = 3 };

/* What one hold event says about one hold, and the book's queue snapshot it carries (if any).
 * Empty strings and 0 mean "not in this event". */
typedef struct hold_change {
    const char *user_id;
    const char *hold_id;
    int status; /* Library__Lending__V1__HoldStatus */
    int rank;
    const char *book_id;
    const char *book_title;
    int64_t place_seconds;
    int64_t expire_seconds;
    int64_t event_time_ms;
    int64_t order_ms;          /* the hold's place time (ms), which orders the page; 0: not carried */
    const char *queue_book_id; /* "" when the event has no snapshot */
    uint64_t queue_version;
    char *queue_hold_ids;      /* the ids joined by '|' (from the arena) */
} hold_change;

/* false for events that are not about a user's hold, and for hold events without a user,
 * with a hold id, book id or queued id that is not a server-made id (field_check_id: they
 * become parts of Redis keys and values). A snapshot with a bad book id is left out. The
 * strings point into e or come from a. */
bool page_hold_change_from_event(arena *a, const event *e, hold_change *out);

/* What one account event (FineAssessed, FinePaid, FineWaived) says: the user's whole account
 * at a version. Strings come from a or point into e. */
typedef struct account_change {
    const char *user_id;
    uint64_t version;
    const char *account;    /* the packed Account, base64url */
    const char *loan_fines; /* "loan id|amount|loan id|amount..." of the fines listed, amounts >= 0 */
    int64_t event_time_ms;
} account_change;

/* false for events that are not account events, and for account events without a snapshot,
 * without a user, whose snapshot is another user's, or whose account would not read back. A fine whose loan id is not a
 * server-made id (field_check_id) stays in the account but gets no "f:" field. */
bool page_account_change_from_event(arena *a, const event *e, account_change *out);

/* Builds the Mypage from the hash's field/value pairs (HGETALL order, then "q:<book id>"
 * snapshots), newest loan first, open holds oldest first (the order above); last_event_time
 * is "t", but none when the page shows nothing (no loan, no open hold, no balance, no fine):
 * a page whose loans all left by retention is the page of a user a rebuild finds no event of,
 * and shows what no page shows. A loan's renewal moves its due time
 * and clears an overdue flag announced for an earlier one; overdue_count counts ACTIVE loans
 * flagged overdue or past due at now_seconds. A WAITING hold's position is its place in its
 * book's snapshot (0 when the snapshot does not list it yet). balance and fines come from
 * "a", each loan's fine from its "f:". Values that do not parse are skipped. NULL when out of
 * memory. */
Library__Mypage__V1__Mypage *page_build(arena *a, const char *user_id, const char *const *fields,
                                        const char *const *values, size_t count,
                                        int64_t now_seconds);

#endif
