/* user_record.h - the rules of a user's record, one per user in the loans bucket: the open
 * loans (PENDING and ACTIVE) that hold the user's slots, against which the loan limit and the
 * overdue block are checked, and the histories of loan ids and hold ids ListLoans and
 * ListHolds page through. Pure functions over the decoded record; loan_store keeps it with
 * compare-and-set, so each function runs again on a fresh record when another writer got
 * there first. */
#ifndef LENDING_USER_RECORD_H
#define LENDING_USER_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "lending.h"
#include "loan_store.h"
#include "status.h"

/* Loan ids a user's history keeps, newest last; older ones fall off (hold ids the same way,
 * in the hold history: user_list below). The record holds the newest (the window:
 * USER_HISTORY_HOT to USER_HISTORY_HOT_MAX of them, or up to USER_HISTORY_KEPT while the
 * older part cannot be written), the user's UserHistory ("history.<user key>") the older
 * ones, and the record's history_filter says which loans the UserHistory may hold, so a new
 * borrow does not read it (issue 19 item 6: the record every step of the saga rewrites
 * stays small). */
enum { USER_HISTORY_KEPT = 1000, USER_HISTORY_HOT = 32, USER_HISTORY_HOT_MAX = 64 };

/* The two lists kept that way, each with its own window, filter and revision in the record
 * and its own list in the one UserHistory: the loan history (history, history_filter,
 * history_revision; loan_ids) and the hold history (hold_history, hold_filter,
 * hold_revision; hold_ids). */
typedef enum { USER_LOANS, USER_HOLDS } user_list;

typedef Library__Lending__Internal__OpenLoan user_open_loan;

typedef struct user_borrow {
    const char *loan_id;
    const char *book_id;
    const char *book_title;                                  /* NULL: none */
    const Library__Lending__Internal__FineTerms *fine_terms; /* the loan's (NULL: never fined) */
    int64_t due_seconds;
    int64_t now_seconds;
    int max_active;
    int64_t fine_block_at; /* 0: fines never block */
    /* The user's UserHistory as read at archive_revision, once the record asked for it;
     * NULL: not read. */
    const user_history *archive;
    uint64_t archive_revision;
} user_borrow;

/* Adds the borrow as a PENDING open loan and to the history, when the user may borrow
 * (lending_may_borrow over every open loan, however high max_active is set, then
 * FINES_OWED: the balance reaches fine_block_at); otherwise st says why. *replay: the record
 * (or the archive) already names the loan in either list (a retried request): nothing is
 * checked or changed. *need_archive: the record's filter names the loan (or the archive read
 * is older than the filter), so nothing was checked or changed: read the UserHistory into
 * borrow->archive and call again. New entries and lists come from a. */
status_code user_record_add_borrow(arena *a, user_record *record, const user_borrow *borrow, bool *replay,
                                   bool *need_archive, bool *changed, status *st);

/* True when the list's window has grown past USER_HISTORY_HOT_MAX: time to move the older ids. */
bool user_record_history_full(const user_record *record, user_list list);

/* Adds the window's ids but the newest USER_HISTORY_HOT to the archive's list, those it does
 * not hold yet, keeping the newest USER_HISTORY_KEPT. *changed: the archive changed. False
 * when out of memory. */
bool user_history_merge(arena *a, user_history *archive, user_list list, char *const *window, size_t count,
                        bool *changed);

/* The archive at `revision` holds what the list's window moved: every window id the
 * archive's list holds leaves the window, and the list's filter becomes the archive list's
 * unless the record's is from this revision or a newer one. *changed: the record changed.
 * False when out of memory. */
bool user_record_drop_archived(arena *a, user_record *record, user_list list, const user_history *archive,
                               uint64_t revision, bool *changed);

/* True when the record's filter of the list says the archive may hold id (a "no" is sure). */
bool user_record_archive_may_hold(const user_record *record, user_list list, const char *id);

/* The loan's or hold's retention is over: it leaves the archive's list too. True when the
 * archive named it. */
bool user_history_forget(user_history *archive, user_list list, const char *id);

/* The whole list, oldest first, from a: the archive list's ids, then the window's that the
 * archive does not hold (both hold a moved id until the window drops it), the newest
 * USER_HISTORY_KEPT. archive may be NULL. False when out of memory. */
bool user_history_join(arena *a, const user_history *archive, user_list list, char *const *window, size_t count,
                       char ***out, size_t *n);

/* The loan is now in `state`: its open entry follows an open state and leaves on a settled
 * one (RETURNED, CANCELED). True when the record changed. */
bool user_record_follow(user_record *record, const char *loan_id, loan_state state);

/* The open entry of loan_id, or NULL. */
const user_open_loan *user_record_open_entry(const user_record *record, const char *loan_id);

typedef struct user_hold {
    const char *hold_id;
    const char *book_id;
    int64_t now_seconds;
    int max_holds;
    int64_t fine_block_at; /* 0: fines never block */
    /* The user's UserHistory as read at archive_revision, once the record asked for it;
     * NULL: not read. */
    const user_history *archive;
    uint64_t archive_revision;
} user_hold;

/* Adds the hold to the user's open holds and hold history when the user may place it:
 * FAILED_PRECONDITION with ALREADY_HELD (an open hold on the book), ALREADY_BORROWED (a
 * PENDING or ACTIVE loan of it), HOLD_LIMIT (max_holds open holds), OVERDUE_LOANS or
 * FINES_OWED.
 * *replay: the record (or the archive) already names the hold (a retried request): nothing
 * checked or changed. *need_archive: as for user_record_add_borrow, with the hold filter:
 * read the UserHistory into hold->archive and call again. */
status_code user_record_add_hold(arena *a, user_record *record, const user_hold *hold, bool *replay,
                                 bool *need_archive, bool *changed, status *st);

/* The hold is no longer open (fulfilled, canceled, expired): it leaves the open holds. True
 * when the record changed. */
bool user_record_close_hold(user_record *record, const char *hold_id);

/* The loan's retention is over: it leaves the record's history (ListLoans; the archive's is
 * user_history_forget). FAILED_PRECONDITION
 * (reason STILL_OPEN or FINE_OWED) while it holds a slot or its fine is not settled at
 * now_seconds: it stays until then. *changed: the history named it. */
status_code user_record_forget_loan(user_record *record, const char *loan_id, int64_t now_seconds, bool *changed,
                                    status *st);

/* The hold's retention is over: it leaves the record's hold history (ListHolds; the
 * archive's is user_history_forget). FAILED_PRECONDITION
 * (STILL_OPEN) while it is open. *changed: the history named it. */
status_code user_record_forget_hold(user_record *record, const char *hold_id, bool *changed, status *st);

/* The hold id `position` places back from the newest in the hold history, or NULL. */
const char *user_record_hold_from_newest(const user_record *record, size_t position);

/* The loan id `position` places back from the newest in the history (0: the newest), or NULL
 * past the oldest kept. */
const char *user_record_history_from_newest(const user_record *record, size_t position);

/* A renewal moved the loan's due time to due_seconds and gave it terms (NULL: kept): its
 * open entry follows, so the overdue block and the fines read the new ones. Only ever later
 * (a stale sync does not undo a newer renewal). True when the record changed. */
bool user_record_extend_due(user_record *record, const char *loan_id, int64_t due_seconds,
                            const Library__Lending__Internal__FineTerms *terms);

#endif
