/* handlers.c - the LendingService methods: checks, then the loan store and the saga. */
#include "handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "field.h"
#include "holds.h"
#include "lending.h"
#include "library/catalog/v1/catalog.pb-c.h"
#include "library/lending/v1/lending.pb-c.h"
#include "log.h"
#include "renewals.h"
#include "user_record.h"

static status_code out_of_memory(status *st) {
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

/* Fills the computed `overdue` flag of a loan for its reader. */
static void present(loan_message *loan) {
    int64_t due = loan->due_time ? loan->due_time->seconds : 0;
    loan->overdue = lending_is_overdue((loan_state)loan->status, due, timestamp_now_ms() / 1000);
}

/* A user may see their own loans; an administrator anyone's. NOT_FOUND rather than
 * PERMISSION_DENIED for another user's loan, so loan ids cannot be probed. */
static status_code check_owner(rpc_context *ctx, const loan_message *loan, status *st) {
    const auth_identity *caller = rpc_context_caller(ctx);
    if (caller->admin || strcmp(caller->subject, loan->user_id) == 0)
        return STATUS_OK;
    return status_set(st, STATUS_NOT_FOUND, "LOAN_NOT_FOUND", "no loan with id %s", loan->loan_id);
}

/* --- BorrowBook ------------------------------------------------------------------------- */

Library__Lending__Internal__FineTerms *lending_fine_terms(arena *a, const loan_policy *policy) {
    Library__Lending__Internal__FineTerms *terms =
        (void *)arena_new_message(a, &library__lending__internal__fine_terms__descriptor);
    if (terms != NULL) {
        terms->per_interval = policy->fine_per_interval;
        terms->interval_seconds = policy->fine_interval_ms / 1000;
        terms->max_per_loan = policy->fine_max_per_loan;
    }
    return terms;
}

typedef struct reserve_job {
    user_borrow borrow;
    bool replay;       /* the user record already holds this loan: a retried request */
    bool need_archive; /* read the user's older history and run again */
} reserve_job;

static status_code reserve_slot(void *arg, arena *a, user_record *user, bool *changed, status *st) {
    reserve_job *job = arg;
    return user_record_add_borrow(a, user, &job->borrow, &job->replay, &job->need_archive, changed, st);
}

status_code lending_update_user_reading(lending_handlers *h, arena *a, const char *user_id, user_change change,
                                        void *job, const bool *need_archive, const user_history **archive,
                                        uint64_t *archive_revision, user_record **user, status *st) {
    enum { ARCHIVE_READS = 4 };
    for (int reads = 0;; reads++) {
        status_code code = loan_store_update_user(h->store, user_id, a, change, job, user, st);
        if (code != STATUS_OK || !*need_archive)
            return code;
        if (reads == ARCHIVE_READS)
            return status_set(st, STATUS_UNAVAILABLE, "HISTORY_MOVING",
                              "your history kept moving while read; try again");
        user_history *read = NULL;
        code = loan_store_get_history(h->store, user_id, a, &read, archive_revision, st);
        if (code != STATUS_OK)
            return code;
        *archive = read;
    }
}

/* Takes the borrow's slot, reading the user's older history when the record's filter names
 * the loan. *user: the record as stored afterwards. */
static status_code take_slot(lending_handlers *h, arena *a, const char *user_id, reserve_job *job,
                             user_record **user, status *st) {
    return lending_update_user_reading(h, a, user_id, reserve_slot, job, &job->need_archive, &job->borrow.archive,
                                       &job->borrow.archive_revision, user, st);
}

typedef struct moving_ids {
    user_list list;
    char *const *window;
    size_t count;
} moving_ids;

static status_code merge_history(void *arg, arena *a, ProtobufCMessage *record, bool *changed, status *st) {
    moving_ids *moving = arg;
    if (!user_history_merge(a, (user_history *)record, moving->list, moving->window, moving->count, changed))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    return STATUS_OK;
}

typedef struct moved_ids {
    user_list list;
    const user_history *archive;
    uint64_t revision;
} moved_ids;

static status_code drop_moved(void *arg, arena *a, user_record *record, bool *changed, status *st) {
    moved_ids *moved = arg;
    if (!user_record_drop_archived(a, record, moved->list, moved->archive, moved->revision, changed))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    return STATUS_OK;
}

void lending_move_history(lending_handlers *h, arena *a, const char *user_id, const user_record *user,
                          user_list list) {
    moving_ids moving = {list, list == USER_HOLDS ? user->hold_history : user->history,
                         list == USER_HOLDS ? user->n_hold_history : user->n_history};
    user_history *archive = NULL;
    uint64_t revision = 0;
    status st;
    if (loan_store_update_history(h->store, user_id, a, merge_history, &moving, &archive, &revision, &st) !=
            STATUS_OK ||
        loan_store_update_user(h->store, user_id, a, drop_moved, &(moved_ids){list, archive, revision}, NULL,
                               &st) != STATUS_OK)
        LOG_WARN("the older %s history of a user stays in the record for now: %s",
                 list == USER_HOLDS ? "hold" : "loan", st.message);
}

/* The loan as BorrowBook answers it after the wait. Once the outcome is announced, the
 * replica's loan index holds it when this replica's consumer decided it (it indexes what it
 * writes) or its watch has seen the write; a loan the index still shows PENDING is read from
 * the bucket, as is every loan whose outcome did not come in time. */
static loan_record *decided_loan(lending_handlers *h, arena *a, const char *loan_id, bool decided,
                                 loan_record *pending, status *st) {
    loan_message *loan = NULL;
    loan_record *latest = NULL;
    if (decided && loan_store_find_loan(h->store, loan_id, a, &loan) &&
        loan->status != LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING &&
        (latest = (void *)arena_new_message(a, &library__lending__internal__loan_record__descriptor)) != NULL) {
        latest->loan = loan;
        return latest;
    }
    if (loan_store_get(h->store, loan_id, a, &latest, st) == STATUS_OK)
        return latest;
    return pending;
}

static status_code borrow_book(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                               ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__BorrowBookRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    const auth_identity *caller = rpc_context_caller(ctx);
    const char *user = caller->subject;
    if (field_check_id(req->book_id, "book_id", st) || field_check_request_id(req->request_id, st))
        return st->code;
    const loan_policy *policy = policy_for(h->policies, caller->group);

    char *loan_id = arena_alloc(a, 21);
    if (loan_id == NULL)
        return out_of_memory(st);
    lending_new_loan_id(user, req->request_id, loan_id);

    Library__Catalog__V1__Book *book = NULL;
    status_code code = catalog_link_get_book(&h->catalog, ctx, req->book_id, &book, st);
    if (code != STATUS_OK)
        return code;

    int64_t now = timestamp_now_ms();
    Library__Lending__Internal__FineTerms *fine_terms = lending_fine_terms(a, policy);
    char *group = arena_strdup(a, caller->group);
    if (fine_terms == NULL || group == NULL)
        return out_of_memory(st);
    reserve_job job = {.borrow = {.loan_id = loan_id, .book_id = req->book_id, .book_title = book->title,
                                  .fine_terms = fine_terms,
                                  .due_seconds = (now + policy->loan_period_ms) / 1000,
                                  .now_seconds = now / 1000, .max_active = policy->max_active_loans,
                                  .fine_block_at = policy->fine_block_at}};
    user_record *slots = NULL;
    code = take_slot(h, a, user, &job, &slots, st);
    if (code != STATUS_OK)
        return code;

    loan_record *record = (void *)arena_new_message(a, &library__lending__internal__loan_record__descriptor);
    loan_message *loan = (void *)arena_new_message(a, &library__lending__v1__loan__descriptor);
    if (record == NULL || loan == NULL)
        return out_of_memory(st);
    loan->loan_id = loan_id;
    loan->user_id = (char *)user;
    loan->book_id = req->book_id;
    loan->book_title = book->title;
    loan->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING;
    loan->borrow_time = timestamp_from_ms(a, now);
    loan->due_time = timestamp_from_ms(a, job.borrow.due_seconds * 1000);
    record->loan = loan;
    record->traceparent = (char *)rpc_context_traceparent(ctx);
    record->update_time_ms = now;
    record->patron_group = group;
    record->fine_terms = fine_terms;
    code = loan_store_create(h->store, record, a, st);
    if (code == STATUS_OK)
        saga_count_loan("requested");
    if (code == STATUS_ALREADY_EXISTS) {
        code = loan_store_get(h->store, loan_id, a, &record, st); /* the same request again */
    }
    if (code != STATUS_OK)
        return code;

    if (record->loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING) {
        saga_waiter *waiter = lending_saga_watch(h->saga, loan_id);
        bool decided = false;
        code = saga_publish_requested(h->connection, record, 0, st);
        if (user_record_history_full(slots, USER_LOANS))
            lending_move_history(h, a, user, slots, USER_LOANS); /* while the catalog decides */
        if (code != STATUS_OK) {
            /* Stored but not announced: the reconciler republishes it, so the loan goes on. */
            LOG_WARN("LoanRequested for %s not published yet: %s", loan_id, st->message);
        } else {
            int64_t wait = rpc_context_remaining_ms(ctx) - 50;
            if (wait > h->borrow_wait_ms)
                wait = h->borrow_wait_ms;
            if (wait > 0)
                decided = lending_saga_wait(h->saga, waiter, wait);
        }
        lending_saga_unwatch(h->saga, waiter);
        record = decided_loan(h, a, loan_id, decided, record, st);
    }
    present(record->loan);
    *response = &record->loan->base;
    return STATUS_OK;
}

/* --- ReturnBook --------------------------------------------------------------------------- */

typedef struct return_job {
    rpc_context *ctx;
    bool was_active;
} return_job;

static status_code apply_return(void *arg, arena *a, loan_record *record, bool *changed, status *st) {
    return_job *job = arg;
    if (check_owner(job->ctx, record->loan, st) != STATUS_OK)
        return st->code;
    loan_state next;
    if (lending_return((loan_state)record->loan->status, &next, st) != STATUS_OK)
        return st->code;
    job->was_active = record->loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
    *changed = job->was_active;
    if (*changed) {
        int64_t now = timestamp_now_ms();
        record->loan->status = LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED;
        record->loan->return_time = timestamp_from_ms(a, now);
        record->update_time_ms = now;
    }
    return STATUS_OK;
}

static status_code return_book(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                               ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__ReturnBookRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    if (field_check_id(req->loan_id, "loan_id", st))
        return st->code;
    return_job job = {.ctx = ctx};
    loan_record *record = NULL;
    status_code code = loan_store_update(h->store, req->loan_id, a, apply_return, &job, &record, st);
    if (code == STATUS_NOT_FOUND)
        return status_set(st, STATUS_NOT_FOUND, "LOAN_NOT_FOUND", "no loan with id %s", req->loan_id);
    if (code != STATUS_OK)
        return code;
    if (job.was_active)
        saga_count_loan("returned");
    if (!record->release_confirmed) {
        /* Free the user's slot and give the copy back; the reconciler redoes both if this
         * fails half way, so the return itself has happened either way. */
        status ignored;
        if (lending_saga_sync_user(h->saga, a, record, &ignored) != STATUS_OK ||
            saga_publish_returned(h->connection, record, 0, &ignored) != STATUS_OK)
            LOG_WARN("return of %s not fully propagated yet: %s", req->loan_id, ignored.message);
    }
    present(record->loan);
    *response = &record->loan->base;
    return STATUS_OK;
}

/* --- GetLoan and ListLoans ------------------------------------------------------------------ */

/* GetLoan answers from the replica's loan index, which every loan this replica writes or
 * reads from the bucket updates at once (so a caller answered by BorrowBook, ReturnBook or
 * RenewLoan here never reads an older loan) and the bucket's watcher within milliseconds of
 * another replica's write; a loan the index does not hold yet is read from the bucket, so
 * NOT_FOUND is the truth. */
static status_code get_loan(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                            ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__GetLoanRequest *req = (const void *)request;
    if (field_check_id(req->loan_id, "loan_id", st))
        return st->code;
    arena *a = rpc_context_arena(ctx);
    loan_message *loan = NULL;
    if (!loan_store_find_loan(h->store, req->loan_id, a, &loan)) {
        if (!rpc_context_may_block(ctx))
            return RPC_WOULD_BLOCK; /* to the bucket, from a worker thread */
        loan_record *record = NULL;
        status_code code = loan_store_get(h->store, req->loan_id, a, &record, st);
        if (code != STATUS_OK)
            return code;
        loan = record->loan;
    }
    if (check_owner(ctx, loan, st) != STATUS_OK)
        return st->code;
    present(loan);
    *response = &loan->base;
    return STATUS_OK;
}

/* A loan of a user's history: from the index, or from the bucket when the index lacks it.
 * NOT_FOUND when the bucket does not hold it either. */
static status_code history_loan(lending_handlers *h, arena *a, const char *loan_id, loan_message **out,
                                status *st) {
    if (loan_store_find_loan(h->store, loan_id, a, out))
        return STATUS_OK;
    loan_record *record = NULL;
    status_code code = loan_store_get(h->store, loan_id, a, &record, st);
    if (code == STATUS_OK)
        *out = record->loan;
    return code;
}

/* How far back from the newest loan_id is in the history; count when absent. */
static size_t history_position(char *const *history, size_t count, const char *loan_id) {
    size_t position = 0;
    while (position < count && strcmp(history[count - 1 - position], loan_id) != 0)
        position++;
    return position;
}

status_code lending_whole_history(lending_handlers *h, arena *a, const char *user_id, user_list list,
                                  char ***history, size_t *count, status *st) {
    user_history *archive = NULL;
    uint64_t revision = 0;
    status_code code = loan_store_get_history(h->store, user_id, a, &archive, &revision, st);
    if (code != STATUS_OK)
        return code;
    if (!user_history_join(a, archive, list, *history, *count, history, count))
        return out_of_memory(st);
    return STATUS_OK;
}

/* ListLoans pages through the user's history as the index holds it (the bucket's user record
 * when the index has none), newest first, each loan from the index: no read per loan. */
static status_code list_loans(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                              ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__ListLoansRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    const auth_identity *caller = rpc_context_caller(ctx);
    lending_list_query query;
    if (lending_check_list(caller->subject, caller->admin, req->user_id, req->page_size,
                           (int)req->status, req->page_token, &query, st))
        return st->code;
    size_t page_size = query.page_size;

    char **history = NULL;
    size_t history_count = 0;
    if (!loan_store_find_history(h->store, query.user_id, a, &history, &history_count)) {
        user_record *record = NULL;
        status_code code = loan_store_get_user(h->store, query.user_id, a, &record, st);
        if (code != STATUS_OK)
            return code;
        history = record->history;
        history_count = record->n_history;
    }
    Library__Lending__V1__ListLoansResponse *out =
        (void *)arena_new_message(a, &library__lending__v1__list_loans_response__descriptor);
    loan_message **loans = arena_alloc(a, page_size * sizeof *loans);
    if (out == NULL || loans == NULL)
        return out_of_memory(st);
    /* position counts back from the newest, as user_record_history_from_newest does. The
     * record's window is the newest part of the history: the older part is read from the
     * bucket only when the page reaches past the window (user_record.h), and positions stay
     * the same in the whole history. */
    bool whole = false;
    size_t position = 0, count = 0;
    if (query.start_at[0] != '\0') { /* where the previous page stopped, however many came since */
        position = history_position(history, history_count, query.start_at);
        if (position == history_count) {
            if (lending_whole_history(h, a, query.user_id, USER_LOANS, &history, &history_count, st) != STATUS_OK)
                return st->code;
            whole = true;
            position = history_position(history, history_count, query.start_at);
        }
        if (position == history_count)
            return status_set(st, STATUS_INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
                              "page_token points at a loan this user's history no longer holds "
                              "(it keeps the newest %d); list again from the start",
                              USER_HISTORY_KEPT);
    }
    for (; count < page_size; position++) {
        if (position >= history_count) {
            if (whole)
                break;
            if (lending_whole_history(h, a, query.user_id, USER_LOANS, &history, &history_count, st) != STATUS_OK)
                return st->code;
            whole = true;
            if (position >= history_count)
                break;
        }
        loan_message *loan = NULL;
        status_code code = history_loan(h, a, history[history_count - 1 - position], &loan, st);
        if (code == STATUS_NOT_FOUND)
            continue;
        if (code != STATUS_OK)
            return code;
        if (req->status != LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_UNSPECIFIED && loan->status != req->status)
            continue;
        present(loan);
        loans[count++] = loan;
    }
    if (position == history_count && !whole &&
        lending_whole_history(h, a, query.user_id, USER_LOANS, &history, &history_count, st) != STATUS_OK)
        return st->code; /* a next page only if there is more */
    out->loans = loans;
    out->n_loans = count;
    if (position < history_count) {
        char token[LENDING_PAGE_TOKEN_MAX];
        lending_page_token_encode(history[history_count - 1 - position], token);
        out->next_page_token = arena_strdup(a, token);
    }
    *response = &out->base;
    return STATUS_OK;
}

static const rpc_method lending_methods[] = {
    RPC_UNARY_WRITE("BorrowBook", library__lending__v1__borrow_book_request, library__lending__v1__loan,
                    borrow_book, RPC_ACCESS_USER),
    RPC_UNARY_WRITE("ReturnBook", library__lending__v1__return_book_request, library__lending__v1__loan,
                    return_book, RPC_ACCESS_USER),
    RPC_UNARY_NONBLOCKING("GetLoan", library__lending__v1__get_loan_request, library__lending__v1__loan,
                          get_loan, RPC_ACCESS_USER),
    RPC_UNARY("ListLoans", library__lending__v1__list_loans_request,
              library__lending__v1__list_loans_response, list_loans, RPC_ACCESS_USER),
    RPC_UNARY_WRITE("PlaceHold", library__lending__v1__place_hold_request, library__lending__v1__hold,
                    holds_place_hold, RPC_ACCESS_USER),
    RPC_UNARY_WRITE("CancelHold", library__lending__v1__cancel_hold_request, library__lending__v1__hold,
                    holds_cancel_hold, RPC_ACCESS_USER),
    RPC_UNARY("GetHold", library__lending__v1__get_hold_request, library__lending__v1__hold, holds_get_hold,
              RPC_ACCESS_USER),
    RPC_UNARY("ListHolds", library__lending__v1__list_holds_request, library__lending__v1__list_holds_response,
              holds_list_holds, RPC_ACCESS_USER),
    RPC_UNARY_WRITE("RenewLoan", library__lending__v1__renew_loan_request, library__lending__v1__loan,
                    renewals_renew_loan, RPC_ACCESS_USER),
    RPC_UNARY("GetAccount", library__lending__v1__get_account_request, library__lending__v1__account,
              account_get_account, RPC_ACCESS_USER),
    RPC_UNARY_WRITE("PayFines", library__lending__v1__pay_fines_request, library__lending__v1__account,
                    account_pay_fines, RPC_ACCESS_ADMIN),
    RPC_UNARY_WRITE("WaiveFine", library__lending__v1__waive_fine_request, library__lending__v1__account,
                    account_waive_fine, RPC_ACCESS_ADMIN),
};

const rpc_service lending_rpc_service = {
    .name = "library.lending.v1.LendingService",
    .methods = lending_methods,
    .method_count = sizeof lending_methods / sizeof lending_methods[0],
};

void lending_handlers_init(lending_handlers *h) {
    h->service = lending_rpc_service;
    h->service.state = h;
}
