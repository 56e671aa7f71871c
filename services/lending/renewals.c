/* renewals.c - RenewLoan: the rule, and the handler that stores and announces a renewal. */
#include "renewals.h"

#include <stdio.h>
#include <string.h>

#include "field.h"
#include "fines.h"
#include "handlers.h"
#include "holds.h"
#include "lending.h"
#include "log.h"
#include "text.h"

void renewal_request_key(const char *caller, const char *request_id, char *out) {
    if (request_id == NULL || request_id[0] == '\0') {
        out[0] = '\0';
        return;
    }
    char digest[65];
    const char *parts[] = {"RenewLoan", caller, request_id, NULL};
    text_sha256_hex(parts, digest);
    snprintf(out, RENEWAL_REQUEST_KEY_LENGTH + 1, "%.20s", digest);
}

static const Library__Lending__Internal__RenewalRequest *find_request(const loan_record *record,
                                                                      const char *key) {
    for (size_t i = 0; key[0] != '\0' && i < record->n_renewal_requests; i++)
        if (strcmp(record->renewal_requests[i]->key, key) == 0)
            return record->renewal_requests[i];
    return NULL;
}

/* The requests with this one appended, the newest RENEWAL_REQUESTS_KEPT kept. */
static bool remember_request(arena *a, loan_record *record, const char *key, int32_t renewal_count) {
    Library__Lending__Internal__RenewalRequest *entry =
        (void *)arena_new_message(a, &library__lending__internal__renewal_request__descriptor);
    char *copy = arena_strdup(a, key);
    if (entry == NULL || copy == NULL)
        return false;
    entry->key = copy;
    entry->renewal_count = renewal_count;
    return arena_append_kept(a, &record->renewal_requests, &record->n_renewal_requests, entry,
                             RENEWAL_REQUESTS_KEPT);
}

status_code renewal_apply(const renewal *r, arena *a, loan_record *record, bool *replay, bool *changed,
                          status *st) {
    loan_message *loan = record->loan;
    *changed = false;
    if (!r->caller_admin && strcmp(r->caller, loan->user_id) != 0)
        return status_set(st, STATUS_NOT_FOUND, "LOAN_NOT_FOUND", "no loan with id %s", loan->loan_id);
    *replay = find_request(record, r->request_key) != NULL;
    if (*replay)
        return STATUS_OK;
    if (loan->status != LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE)
        return status_set(st, STATUS_FAILED_PRECONDITION, "LOAN_NOT_ACTIVE",
                          "only an active loan can be renewed; this one is %s",
                          loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING ? "still pending"
                          : loan->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_RETURNED ? "returned"
                                                                                                     : "canceled");
    if (loan->renewal_count >= r->max_renewals)
        return status_set(st, STATUS_FAILED_PRECONDITION, "RENEWAL_LIMIT",
                          "this loan was renewed %d time%s already; the limit is %d", (int)loan->renewal_count,
                          loan->renewal_count == 1 ? "" : "s", r->max_renewals);
    if (r->holds_waiting)
        return status_set(st, STATUS_FAILED_PRECONDITION, "HOLDS_WAITING",
                          "other readers are waiting for this book; return it by its due time");
    if (r->fines_owed != NULL)
        return status_set(st, r->fines_owed->code, r->fines_owed->reason, "%s", r->fines_owed->message);
    int64_t due_ms = loan->due_time ? loan->due_time->seconds * 1000 : 0;
    int64_t from_ms = due_ms > r->now_ms ? due_ms : r->now_ms;
    /* whole seconds, as BorrowBook's due times: the user record keeps seconds */
    int64_t new_due_seconds = (from_ms + r->loan_period_ms) / 1000;
    Google__Protobuf__Timestamp *due = timestamp_from_ms(a, new_due_seconds * 1000);
    if (due == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (r->request_key[0] != '\0' && !remember_request(a, record, r->request_key, loan->renewal_count + 1))
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    if (r->fine_terms != NULL)
        record->fine_terms = (Library__Lending__Internal__FineTerms *)r->fine_terms;
    loan->due_time = due;
    loan->renewal_count++;
    record->overdue_published = false;
    record->renewal_unpublished = true;
    record->update_time_ms = r->now_ms;
    *changed = true;
    return STATUS_OK;
}

/* --- the handler ------------------------------------------------------------------------- */

typedef struct renew_job {
    renewal rule;
    const policy_table *policies;
    bool replay;
} renew_job;

/* The policy of the group the loan was made in, as the table has it now (a loan from before
 * groups was a patron's). */
static const loan_policy *policy_of_loan(const policy_table *policies, const loan_record *record) {
    const char *group = record->patron_group && record->patron_group[0] ? record->patron_group : AUTH_DEFAULT_GROUP;
    return policy_for(policies, group);
}

/* The renewal under that policy, read again with the record each compare-and-set sees. */
static status_code apply_renewal(void *arg, arena *a, loan_record *record, bool *changed, status *st) {
    renew_job *job = arg;
    const loan_policy *policy = policy_of_loan(job->policies, record);
    job->rule.loan_period_ms = policy->loan_period_ms;
    job->rule.max_renewals = policy->max_renewals;
    job->rule.fine_terms = lending_fine_terms(a, policy);
    if (job->rule.fine_terms == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    return renewal_apply(&job->rule, a, record, &job->replay, changed, st);
}

status_code renewals_renew_loan(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                                ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__RenewLoanRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    const auth_identity *caller = rpc_context_caller(ctx);
    if (field_check_id(req->loan_id, "loan_id", st) || field_check_request_id(req->request_id, st))
        return st->code;
    char key[RENEWAL_REQUEST_KEY_LENGTH + 1];
    renewal_request_key(caller->subject, req->request_id, key);
    renew_job job = {.rule = {.caller = caller->subject, .caller_admin = caller->admin, .request_key = key,
                              .now_ms = timestamp_now_ms()},
                     .policies = h->policies};
    /* Holds waiting for the book refuse a renewal: the queue as lending last heard it from the
     * catalog (a hold placed at this very moment may slip by, as at any desk). */
    loan_record *record = NULL;
    status_code code = loan_store_get(h->store, req->loan_id, a, &record, st);
    if (code == STATUS_OK && record->loan->book_id != NULL && record->loan->book_id[0] != '\0')
        code = holds_waiting(h->store, record->loan->book_id, a, &job.rule.holds_waiting, st);
    /* The borrower's fines, read beside the loan: a fine crossing the line at this very
     * moment may let one renewal by, as holds above. */
    user_record *borrower = NULL;
    status owed;
    if (code == STATUS_OK)
        code = loan_store_get_user(h->store, record->loan->user_id, a, &borrower, st);
    if (code == STATUS_OK && account_check_block(borrower, job.rule.now_ms / 1000,
                                                  policy_of_loan(h->policies, record)->fine_block_at,
                                                  &owed) != STATUS_OK)
        job.rule.fines_owed = &owed;
    if (code == STATUS_OK)
        code = loan_store_update(h->store, req->loan_id, a, apply_renewal, &job, &record, st);
    if (code == STATUS_NOT_FOUND)
        return status_set(st, STATUS_NOT_FOUND, "LOAN_NOT_FOUND", "no loan with id %s", req->loan_id);
    if (code != STATUS_OK)
        return code;
    if (!job.replay)
        saga_count_loan("renewed");
    if (record->renewal_unpublished) {
        /* This renewal, or a retried request's whose announcement failed: the reconciler
         * does it too, so the renewal stands either way. */
        status ignored;
        if (lending_saga_announce_renewal(h->saga, a, record, 0, &ignored) != STATUS_OK)
            LOG_WARN("renewal of %s not fully announced yet: %s", req->loan_id, ignored.message);
    }
    int64_t due = record->loan->due_time ? record->loan->due_time->seconds : 0;
    record->loan->overdue =
        lending_is_overdue((loan_state)record->loan->status, due, timestamp_now_ms() / 1000);
    *response = &record->loan->base;
    return STATUS_OK;
}
