/* user_record.c - the open loans and the history of one user's record. */
#include "user_record.h"

#include <string.h>

#include "fines.h"
#include "id_filter.h"

static bool in_list(char *const *list, size_t count, const char *id) {
    for (size_t i = count; i-- > 0;)
        if (strcmp(list[i], id) == 0)
            return true;
    return false;
}

static bool in_history(const user_record *record, const char *loan_id) {
    return in_list(record->history, record->n_history, loan_id);
}

/* A list's fields in the record (user_list, user_record.h). */
typedef struct window_fields {
    char ***ids;
    size_t *count;
    ProtobufCBinaryData *filter;
    uint64_t *revision;
} window_fields;

static window_fields window_of(user_record *record, user_list list) {
    if (list == USER_HOLDS)
        return (window_fields){&record->hold_history, &record->n_hold_history, &record->hold_filter,
                               &record->hold_revision};
    return (window_fields){&record->history, &record->n_history, &record->history_filter, &record->history_revision};
}

/* The same list's ids in the archive. */
typedef struct archive_fields {
    char ***ids;
    size_t *count;
} archive_fields;

static archive_fields archive_of(user_history *archive, user_list list) {
    if (list == USER_HOLDS)
        return (archive_fields){&archive->hold_ids, &archive->n_hold_ids};
    return (archive_fields){&archive->loan_ids, &archive->n_loan_ids};
}

/* Whether an id the record's window does not name is in the list's older part: *replay when
 * the archive read (archive, at archive_revision; NULL: not read) names it, *need_archive
 * when that read is needed first (the filter says "maybe") or is older than the filter. */
static void known_before(user_record *record, user_list list, const char *id, const user_history *archive,
                         uint64_t archive_revision, bool *replay, bool *need_archive) {
    window_fields window = window_of(record, list);
    if (archive == NULL) {
        *need_archive = id_filter_may_hold(*window.filter, id); /* perhaps placed long ago: the archive says */
        return;
    }
    if (*window.revision > archive_revision) {
        *need_archive = true; /* ids moved since the archive was read */
        return;
    }
    archive_fields older = archive_of((user_history *)archive, list);
    *replay = in_list(*older.ids, *older.count, id);
}

const user_open_loan *user_record_open_entry(const user_record *record, const char *loan_id) {
    for (size_t i = 0; i < record->n_open_loans; i++)
        if (strcmp(record->open_loans[i]->loan_id, loan_id) == 0)
            return record->open_loans[i];
    return NULL;
}

/* The open loans as lending_may_borrow reads them; NULL when out of memory. */
static open_loan *open_states(arena *a, const user_record *record) {
    open_loan *open = arena_alloc(a, (record->n_open_loans + 1) * sizeof *open);
    for (size_t i = 0; open != NULL && i < record->n_open_loans; i++)
        open[i] = (open_loan){(loan_state)record->open_loans[i]->status, record->open_loans[i]->due_time};
    return open;
}

/* A history (of loans or of holds) with id appended, keeping the newest USER_HISTORY_KEPT. */
static bool append_kept(arena *a, char ***list, size_t *n, const char *id) {
    return arena_append_kept(a, list, n, (char *)id, USER_HISTORY_KEPT);
}

static bool append_open(arena *a, user_record *record, const user_borrow *borrow) {
    user_open_loan **loans = arena_alloc(a, (record->n_open_loans + 1) * sizeof *loans);
    user_open_loan *entry = (void *)arena_new_message(a, &library__lending__internal__open_loan__descriptor);
    if (loans == NULL || entry == NULL)
        return false;
    if (record->n_open_loans)
        memcpy(loans, record->open_loans, record->n_open_loans * sizeof *loans);
    entry->loan_id = (char *)borrow->loan_id;
    entry->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING;
    entry->due_time = borrow->due_seconds;
    entry->book_id = (char *)borrow->book_id;
    entry->book_title = (char *)(borrow->book_title ? borrow->book_title : "");
    entry->fine_terms = (Library__Lending__Internal__FineTerms *)borrow->fine_terms;
    loans[record->n_open_loans] = entry;
    record->open_loans = loans;
    record->n_open_loans++;
    return true;
}

status_code user_record_add_borrow(arena *a, user_record *record, const user_borrow *borrow, bool *replay,
                                   bool *need_archive, bool *changed, status *st) {
    *changed = false;
    *need_archive = false;
    *replay = user_record_open_entry(record, borrow->loan_id) != NULL || in_history(record, borrow->loan_id);
    if (!*replay)
        known_before(record, USER_LOANS, borrow->loan_id, borrow->archive, borrow->archive_revision, replay,
                     need_archive);
    if (*replay || *need_archive)
        return STATUS_OK;
    open_loan *open = open_states(a, record);
    if (open == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (lending_may_borrow(open, record->n_open_loans, borrow->now_seconds, borrow->max_active, st) != STATUS_OK ||
        account_check_block(record, borrow->now_seconds, borrow->fine_block_at, st) != STATUS_OK)
        return st->code;
    if (!append_open(a, record, borrow) || !append_kept(a, &record->history, &record->n_history, borrow->loan_id))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    *changed = true;
    return STATUS_OK;
}

bool user_record_follow(user_record *record, const char *loan_id, loan_state state) {
    bool settled = state == LOAN_RETURNED || state == LOAN_CANCELED;
    bool changed = false;
    size_t kept = 0;
    for (size_t i = 0; i < record->n_open_loans; i++) {
        user_open_loan *open = record->open_loans[i];
        if (strcmp(open->loan_id, loan_id) == 0) {
            if (settled) {
                changed = true;
                continue;
            }
            if ((loan_state)open->status != state) {
                open->status = (Library__Lending__V1__LoanStatus)state;
                changed = true;
            }
        }
        record->open_loans[kept++] = open;
    }
    record->n_open_loans = kept;
    return changed;
}

const char *user_record_history_from_newest(const user_record *record, size_t position) {
    return position < record->n_history ? record->history[record->n_history - 1 - position] : NULL;
}

/* --- holds --------------------------------------------------------------------------------- */

status_code user_record_add_hold(arena *a, user_record *record, const user_hold *hold, bool *replay,
                                 bool *need_archive, bool *changed, status *st) {
    *changed = false;
    *need_archive = false;
    *replay = in_list(record->hold_history, record->n_hold_history, hold->hold_id);
    if (!*replay)
        known_before(record, USER_HOLDS, hold->hold_id, hold->archive, hold->archive_revision, replay,
                     need_archive);
    if (*replay || *need_archive)
        return STATUS_OK;
    for (size_t i = 0; i < record->n_open_holds; i++)
        if (strcmp(record->open_holds[i]->book_id, hold->book_id) == 0)
            return status_set(st, STATUS_FAILED_PRECONDITION, "ALREADY_HELD",
                              "you already have an open hold on book %s (%s)", hold->book_id,
                              record->open_holds[i]->hold_id);
    for (size_t i = 0; i < record->n_open_loans; i++)
        if (strcmp(record->open_loans[i]->book_id, hold->book_id) == 0)
            return status_set(st, STATUS_FAILED_PRECONDITION, "ALREADY_BORROWED",
                              "you already borrow book %s (loan %s)", hold->book_id,
                              record->open_loans[i]->loan_id);
    if (record->n_open_holds >= (size_t)hold->max_holds)
        return status_set(st, STATUS_FAILED_PRECONDITION, "HOLD_LIMIT",
                          "you have %zu open holds, the most allowed; cancel one first", record->n_open_holds);
    for (size_t i = 0; i < record->n_open_loans; i++)
        if (lending_is_overdue((loan_state)record->open_loans[i]->status, record->open_loans[i]->due_time,
                               hold->now_seconds))
            return status_set(st, STATUS_FAILED_PRECONDITION, "OVERDUE_LOANS",
                              "loan %s is overdue; return it before placing holds",
                              record->open_loans[i]->loan_id);
    if (account_check_block(record, hold->now_seconds, hold->fine_block_at, st) != STATUS_OK)
        return st->code;
    Library__Lending__Internal__OpenHold **open = arena_alloc(a, (record->n_open_holds + 1) * sizeof *open);
    Library__Lending__Internal__OpenHold *entry =
        (void *)arena_new_message(a, &library__lending__internal__open_hold__descriptor);
    if (open == NULL || entry == NULL ||
        !append_kept(a, &record->hold_history, &record->n_hold_history, hold->hold_id))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (record->n_open_holds)
        memcpy(open, record->open_holds, record->n_open_holds * sizeof *open);
    entry->hold_id = (char *)hold->hold_id;
    entry->book_id = (char *)hold->book_id;
    open[record->n_open_holds++] = entry;
    record->open_holds = open;
    *changed = true;
    return STATUS_OK;
}

bool user_record_close_hold(user_record *record, const char *hold_id) {
    size_t kept = 0;
    for (size_t i = 0; i < record->n_open_holds; i++)
        if (strcmp(record->open_holds[i]->hold_id, hold_id) != 0)
            record->open_holds[kept++] = record->open_holds[i];
    bool changed = kept != record->n_open_holds;
    record->n_open_holds = kept;
    return changed;
}

/* Drops id from list (keeping the order); true when it was there. */
static bool drop_id(char **list, size_t *count, const char *id) {
    size_t kept = 0;
    for (size_t i = 0; i < *count; i++)
        if (strcmp(list[i], id) != 0)
            list[kept++] = list[i];
    bool dropped = kept != *count;
    *count = kept;
    return dropped;
}

status_code user_record_forget_loan(user_record *record, const char *loan_id, int64_t now_seconds, bool *changed,
                                    status *st) {
    *changed = false;
    if (user_record_open_entry(record, loan_id) != NULL)
        return status_set(st, STATUS_FAILED_PRECONDITION, "STILL_OPEN", "loan %s is still open", loan_id);
    for (size_t i = 0; i < record->n_fines; i++)
        if (strcmp(record->fines[i]->loan_id, loan_id) == 0 && fine_owed_at(record->fines[i], now_seconds) > 0)
            return status_set(st, STATUS_FAILED_PRECONDITION, "FINE_OWED", "loan %s has a fine still owed", loan_id);
    *changed = drop_id(record->history, &record->n_history, loan_id);
    return STATUS_OK;
}

status_code user_record_forget_hold(user_record *record, const char *hold_id, bool *changed, status *st) {
    *changed = false;
    for (size_t i = 0; i < record->n_open_holds; i++)
        if (strcmp(record->open_holds[i]->hold_id, hold_id) == 0)
            return status_set(st, STATUS_FAILED_PRECONDITION, "STILL_OPEN", "hold %s is still open", hold_id);
    *changed = drop_id(record->hold_history, &record->n_hold_history, hold_id);
    return STATUS_OK;
}

const char *user_record_hold_from_newest(const user_record *record, size_t position) {
    return position < record->n_hold_history ? record->hold_history[record->n_hold_history - 1 - position]
                                             : NULL;
}

static bool same_terms(const Library__Lending__Internal__FineTerms *x, const Library__Lending__Internal__FineTerms *y) {
    if (x == NULL || y == NULL)
        return x == y;
    return x->per_interval == y->per_interval && x->interval_seconds == y->interval_seconds &&
           x->max_per_loan == y->max_per_loan;
}

bool user_record_extend_due(user_record *record, const char *loan_id, int64_t due_seconds,
                            const Library__Lending__Internal__FineTerms *terms) {
    for (size_t i = 0; i < record->n_open_loans; i++) {
        user_open_loan *open = record->open_loans[i];
        if (strcmp(open->loan_id, loan_id) != 0 || open->due_time > due_seconds)
            continue;
        bool changed = open->due_time < due_seconds;
        open->due_time = due_seconds;
        if (terms != NULL && !same_terms(open->fine_terms, terms)) {
            open->fine_terms = (Library__Lending__Internal__FineTerms *)terms;
            changed = true;
        }
        return changed;
    }
    return false;
}

/* --- the older history (UserHistory) ---------------------------------------------------------- */

bool user_record_history_full(const user_record *record, user_list list) {
    return *window_of((user_record *)record, list).count > USER_HISTORY_HOT_MAX;
}

bool user_history_merge(arena *a, user_history *archive, user_list list, char *const *window, size_t count,
                        bool *changed) {
    *changed = false;
    archive_fields older = archive_of(archive, list);
    size_t moving = count > USER_HISTORY_HOT ? count - USER_HISTORY_HOT : 0;
    for (size_t i = 0; i < moving; i++) {
        if (in_list(*older.ids, *older.count, window[i]))
            continue;
        if (!append_kept(a, older.ids, older.count, window[i]))
            return false;
        *changed = true;
    }
    return true;
}

bool user_record_drop_archived(arena *a, user_record *record, user_list list, const user_history *archive,
                               uint64_t revision, bool *changed) {
    *changed = false;
    window_fields window = window_of(record, list);
    archive_fields older = archive_of((user_history *)archive, list);
    size_t kept = 0;
    for (size_t i = 0; i < *window.count; i++) {
        if (in_list(*older.ids, *older.count, (*window.ids)[i]))
            *changed = true;
        else
            (*window.ids)[kept++] = (*window.ids)[i];
    }
    *window.count = kept;
    if (!*changed || *window.revision >= revision)
        return true; /* the record's filter covers this archive already, or nothing moved */
    if (!id_filter_build(a, (const char *const *)*older.ids, *older.count, window.filter))
        return false;
    *window.revision = revision;
    return true;
}

bool user_record_archive_may_hold(const user_record *record, user_list list, const char *id) {
    return id_filter_may_hold(*window_of((user_record *)record, list).filter, id);
}

bool user_history_forget(user_history *archive, user_list list, const char *id) {
    archive_fields older = archive_of(archive, list);
    return drop_id(*older.ids, older.count, id);
}

bool user_history_join(arena *a, const user_history *archive, user_list list, char *const *window, size_t count,
                       char ***out, size_t *n) {
    char **archived_ids = NULL;
    size_t archived = 0;
    if (archive != NULL) {
        archive_fields older = archive_of((user_history *)archive, list);
        archived_ids = *older.ids;
        archived = *older.count;
    }
    char **all = arena_alloc(a, (archived + count + 1) * sizeof *all);
    if (all == NULL)
        return false;
    size_t total = 0;
    for (size_t i = 0; i < archived; i++)
        all[total++] = archived_ids[i];
    for (size_t i = 0; i < count; i++)
        if (archived == 0 || !in_list(archived_ids, archived, window[i]))
            all[total++] = window[i];
    size_t start = total > USER_HISTORY_KEPT ? total - USER_HISTORY_KEPT : 0;
    *out = all + start;
    *n = total - start;
    return true;
}
