/* account.c - GetAccount, PayFines, WaiveFine, and the account's events. */
#include "account.h"

#include <stdio.h>
#include <string.h>

#include "events.h"
#include "field.h"
#include "fines.h"
#include "handlers.h"
#include "log.h"
#include "text.h"

static status_code out_of_memory(status *st) {
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

/* --- events ---------------------------------------------------------------------------------- */

/* "<digest of the user>-v<version>": one id per change of one account. */
static void event_subject_id(const char *user_id, uint64_t version, char out[EVENT_ID_MAX]) {
    char digest[65];
    const char *parts[] = {"account", user_id, NULL};
    text_sha256_hex(parts, digest);
    snprintf(out, EVENT_ID_MAX, "%.20s-v%llu", digest, (unsigned long long)version);
}

static status_code publish_entry(nats_connection *connection, const account_event *entry, const char *user_id,
                                 Library__Events__V1__AccountSnapshot *snapshot, status *st) {
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    Library__Events__V1__FineAssessed assessed = LIBRARY__EVENTS__V1__FINE_ASSESSED__INIT;
    Library__Events__V1__FinePaid paid = LIBRARY__EVENTS__V1__FINE_PAID__INIT;
    Library__Events__V1__FineWaived waived = LIBRARY__EVENTS__V1__FINE_WAIVED__INIT;
    e.body_case = (event_type)entry->kind;
    switch (e.body_case) {
    case LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED:
        assessed.user_id = (char *)user_id;
        assessed.loan_id = entry->loan_id;
        assessed.amount = entry->amount;
        assessed.fixed = entry->fixed;
        assessed.account = snapshot;
        e.fine_assessed = &assessed;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID:
        paid.user_id = (char *)user_id;
        paid.amount = entry->amount;
        paid.account = snapshot;
        e.fine_paid = &paid;
        break;
    case LIBRARY__EVENTS__V1__EVENT__BODY_FINE_WAIVED:
        waived.user_id = (char *)user_id;
        waived.loan_id = entry->loan_id;
        waived.amount = entry->amount;
        waived.reason = entry->reason;
        waived.account = snapshot;
        e.fine_waived = &waived;
        break;
    default:
        LOG_WARN("an account event of kind %d in the outbox of %s: dropped", (int)entry->kind, user_id);
        return STATUS_OK;
    }
    char subject_id[EVENT_ID_MAX];
    event_subject_id(user_id, entry->version, subject_id);
    const char *correlation = entry->loan_id != NULL && entry->loan_id[0] != '\0' ? entry->loan_id : user_id;
    return events_publish_step(connection, &e, subject_id, 0, correlation, NULL, st);
}

static status_code clear_outbox(void *arg, arena *a, user_record *record, bool *changed, status *st) {
    const uint64_t *version = arg;
    (void)a;
    (void)st;
    *changed = account_outbox_done(record, *version);
    return STATUS_OK;
}

status_code account_publish(loan_store *store, nats_connection *connection, arena *a, const char *user_id,
                            const user_record *record, status *st) {
    if (record->n_account_outbox == 0)
        return STATUS_OK;
    /* The account as of its newest change: block_at depends on the reader's group, and
     * GetAccount says it. */
    Library__Events__V1__AccountSnapshot *snapshot =
        (void *)arena_new_message(a, &library__events__v1__account_snapshot__descriptor);
    if (snapshot == NULL ||
        (snapshot->account = account_view(a, record, user_id, 0, record->account_update_ms)) == NULL)
        return out_of_memory(st);
    snapshot->version = record->account_version;
    uint64_t published = 0;
    status_code code = STATUS_OK;
    for (size_t i = 0; i < record->n_account_outbox && code == STATUS_OK; i++) {
        code = publish_entry(connection, record->account_outbox[i], user_id, snapshot, st);
        if (code == STATUS_OK)
            published = record->account_outbox[i]->version;
    }
    if (published > 0) {
        status ignored;
        if (loan_store_update_user(store, user_id, a, clear_outbox, &published, NULL, &ignored) != STATUS_OK)
            LOG_WARN("account events of %s published but still in the outbox: %s", user_id, ignored.message);
    }
    return code;
}

typedef struct account_visit {
    int64_t now_ms, retention_ms;
} account_visit;

static status_code assess_now(void *arg, arena *a, user_record *record, bool *changed, status *st) {
    const account_visit *visit = arg;
    bool refreshed = false;
    status_code code = account_assess(a, record, visit->now_ms, changed, st);
    if (code == STATUS_OK)
        code = account_refresh(a, record, visit->now_ms, visit->retention_ms, &refreshed, st);
    *changed = *changed || refreshed;
    return code;
}

void account_reconcile(loan_store *store, nats_connection *connection, arena *a, const char *user_id,
                       int64_t now_ms, int64_t retention_ms) {
    user_record *record = NULL;
    status st;
    account_visit visit = {.now_ms = now_ms, .retention_ms = retention_ms};
    status_code code = loan_store_update_user(store, user_id, a, assess_now, &visit, &record, &st);
    if (code == STATUS_OK)
        code = account_publish(store, connection, a, user_id, record, &st);
    if (code != STATUS_OK)
        LOG_WARN("the account of %s: %s", user_id, st.message);
}

/* --- the handlers --------------------------------------------------------------------------- */

static status_code check_user_id(const char *user_id, status *st) {
    if (user_id == NULL || user_id[0] == '\0')
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_REQUIRED", "user_id is required");
    if (strlen(user_id) >= AUTH_SUBJECT_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_TOO_LONG", "user_id is too long");
    return STATUS_OK;
}

/* The account of user_id brought to now (not stored: only a write stores an assessment). Its
 * block is the holder's group's when the holder asks; an administrator's view of another's
 * account, whose group only their token says, shows the settings' (POLICY_FILE's defaults). */
static status_code answer(lending_handlers *h, rpc_context *ctx, arena *a, const char *user_id,
                          user_record *record, ProtobufCMessage **response, status *st) {
    int64_t now = timestamp_now_ms();
    bool changed;
    if (account_assess(a, record, now, &changed, st) != STATUS_OK)
        return st->code;
    const auth_identity *caller = rpc_context_caller(ctx);
    const char *group = strcmp(caller->subject, user_id) == 0 ? caller->group : NULL;
    account_message *account = account_view(a, record, user_id, policy_for(h->policies, group)->fine_block_at, now);
    if (account == NULL)
        return out_of_memory(st);
    *response = &account->base;
    return STATUS_OK;
}

status_code account_get_account(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                                ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__GetAccountRequest *req = (const void *)request;
    const auth_identity *caller = rpc_context_caller(ctx);
    arena *a = rpc_context_arena(ctx);
    const char *user_id = req->user_id != NULL && req->user_id[0] != '\0' ? req->user_id : caller->subject;
    if (check_user_id(user_id, st) != STATUS_OK)
        return st->code;
    if (!caller->admin && strcmp(user_id, caller->subject) != 0)
        return status_set(st, STATUS_PERMISSION_DENIED, "NOT_YOUR_ACCOUNT",
                          "only administrators may see another user's account");
    user_record *record = NULL;
    if (loan_store_get_user(h->store, user_id, a, &record, st) != STATUS_OK)
        return st->code;
    return answer(h, ctx, a, user_id, record, response, st);
}

typedef struct pay_job {
    int64_t amount;
    const char *request_key;
    int64_t now_ms;
    bool replay;
} pay_job;

static status_code apply_payment(void *arg, arena *a, user_record *record, bool *changed, status *st) {
    pay_job *job = arg;
    job->now_ms = timestamp_now_ms(); /* each attempt's own time: the balance is what it is then */
    if (account_pay(a, record, job->amount, job->request_key, job->now_ms, &job->replay, st) != STATUS_OK)
        return st->code;
    *changed = !job->replay;
    return STATUS_OK;
}

/* After a change: its events out (or left for the reconciler), then the account answered. */
static status_code after_change(lending_handlers *h, rpc_context *ctx, arena *a, const char *user_id,
                                user_record *record, ProtobufCMessage **response, status *st) {
    status ignored;
    if (account_publish(h->store, h->connection, a, user_id, record, &ignored) != STATUS_OK)
        LOG_WARN("account events of %s not published yet: %s", user_id, ignored.message);
    return answer(h, ctx, a, user_id, record, response, st);
}

status_code account_pay_fines(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                              ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__PayFinesRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    if (check_user_id(req->user_id, st) != STATUS_OK || field_check_request_id(req->request_id, st) != STATUS_OK)
        return st->code;
    if (req->amount <= 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "amount must be more than 0 (minor currency units)");
    char key[ACCOUNT_REQUEST_KEY_LENGTH + 1];
    account_request_key("PayFines", req->request_id, key);
    pay_job job = {.amount = req->amount, .request_key = key};
    user_record *record = NULL;
    if (loan_store_update_user(h->store, req->user_id, a, apply_payment, &job, &record, st) != STATUS_OK)
        return st->code;
    return after_change(h, ctx, a, req->user_id, record, response, st);
}

typedef struct waive_job {
    const char *loan_id;
    const char *reason;
    const char *request_key;
    bool replay;
} waive_job;

static status_code apply_waiver(void *arg, arena *a, user_record *record, bool *changed, status *st) {
    waive_job *job = arg;
    if (account_waive(a, record, job->loan_id, job->reason, job->request_key, timestamp_now_ms(), &job->replay,
                      st) != STATUS_OK)
        return st->code;
    *changed = !job->replay;
    return STATUS_OK;
}

enum { WAIVE_REASON_MAX = 200 };

status_code account_waive_fine(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                               ProtobufCMessage **response, status *st) {
    lending_handlers *h = state;
    const Library__Lending__V1__WaiveFineRequest *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    if (field_check_id(req->loan_id, "loan_id", st) != STATUS_OK ||
        field_check_request_id(req->request_id, st) != STATUS_OK)
        return st->code;
    if (req->reason != NULL && strlen(req->reason) > WAIVE_REASON_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_TOO_LONG", "reason is longer than %d bytes",
                          WAIVE_REASON_MAX);
    loan_record *loan = NULL;
    if (loan_store_get(h->store, req->loan_id, a, &loan, st) != STATUS_OK)
        return st->code;
    const char *user_id = loan->loan->user_id;
    char key[ACCOUNT_REQUEST_KEY_LENGTH + 1];
    account_request_key("WaiveFine", req->request_id, key);
    waive_job job = {.loan_id = req->loan_id, .reason = req->reason ? req->reason : "", .request_key = key};
    user_record *record = NULL;
    if (loan_store_update_user(h->store, user_id, a, apply_waiver, &job, &record, st) != STATUS_OK)
        return st->code;
    return after_change(h, ctx, a, user_id, record, response, st);
}
