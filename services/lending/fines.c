/* fines.c - the account rules over the user record. */
#include "fines.h"

#include <stdio.h>
#include <string.h>

#include "library/events/v1/events.pb-c.h"
#include "text.h"
#include "timestamp.h"
#include "user_record.h"

static status_code out_of_memory(status *st) {
    return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
}

static bool terms_fine(const fine_terms *terms) {
    return terms != NULL && terms->per_interval > 0 && terms->interval_seconds > 0 && terms->max_per_loan > 0;
}

int64_t fine_accrued(const fine_terms *terms, int64_t due_seconds, int64_t now_seconds) {
    if (!terms_fine(terms) || due_seconds <= 0 || now_seconds <= due_seconds)
        return 0;
    /* started intervals, without forming now - due + interval - 1 (it may overflow) */
    uint64_t late = (uint64_t)now_seconds - (uint64_t)due_seconds;
    uint64_t interval = (uint64_t)terms->interval_seconds;
    uint64_t started = late / interval + (late % interval != 0);
    uint64_t per = (uint64_t)terms->per_interval, max = (uint64_t)terms->max_per_loan;
    return started >= max / per + 1 ? (int64_t)max : (int64_t)(started * per < max ? started * per : max);
}

int64_t fine_amount_at(const fine_entry *fine, int64_t now_seconds) {
    if (fine->fixed || fine->waived_all || fine->terms == NULL)
        return fine->amount;
    int64_t max = fine->terms->max_per_loan;
    int64_t accrued = fine_accrued(fine->terms, fine->due_time, now_seconds);
    int64_t total = fine->carried >= max - accrued ? max : fine->carried + accrued;
    return total > fine->amount ? total : fine->amount;
}

int64_t fine_owed_at(const fine_entry *fine, int64_t now_seconds) {
    int64_t owed = fine_amount_at(fine, now_seconds) - fine->paid - fine->waived;
    return owed > 0 ? owed : 0;
}

Library__Lending__V1__FineState fine_state(const fine_entry *fine) {
    if (fine->waived_all)
        return LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_WAIVED;
    if (!fine->fixed)
        return LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_ACCRUING;
    return fine_owed_at(fine, 0) > 0 ? LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_OWED
                                     : LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_PAID;
}

static fine_entry *find_fine(const user_record *record, const char *loan_id) {
    for (size_t i = 0; i < record->n_fines; i++)
        if (strcmp(record->fines[i]->loan_id, loan_id) == 0)
            return record->fines[i];
    return NULL;
}

static bool is_active(const user_open_loan *open) {
    return open->status == LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE;
}

/* x + y for amounts >= 0, at most INT64_MAX (fines capped near it would wrap a plain sum) */
static int64_t add_amounts(int64_t x, int64_t y) {
    return x > INT64_MAX - y ? INT64_MAX : x + y;
}

int64_t account_balance(const user_record *record, int64_t now_seconds) {
    int64_t balance = 0;
    for (size_t i = 0; i < record->n_fines; i++)
        balance = add_amounts(balance, fine_owed_at(record->fines[i], now_seconds));
    for (size_t i = 0; i < record->n_open_loans; i++) {
        const user_open_loan *open = record->open_loans[i];
        if (is_active(open) && find_fine(record, open->loan_id) == NULL)
            balance = add_amounts(balance, fine_accrued(open->fine_terms, open->due_time, now_seconds));
    }
    return balance;
}

status_code account_check_block(const user_record *record, int64_t now_seconds, int64_t block_at, status *st) {
    if (block_at <= 0)
        return STATUS_OK;
    int64_t balance = account_balance(record, now_seconds);
    if (balance < block_at)
        return STATUS_OK;
    return status_set(st, STATUS_FAILED_PRECONDITION, "FINES_OWED",
                      "you owe %lld in fines; from %lld on, borrowing, renewals and holds wait until "
                      "the fines are paid at the desk",
                      (long long)balance, (long long)block_at);
}

/* --- changes: the version, the outbox, the entries ---------------------------------------- */

/* A new version of the account, with its event in the outbox; NULL when out of memory. */
static account_event *account_changed(arena *a, user_record *record, int kind, const char *loan_id,
                                      int64_t amount, int64_t now_ms) {
    account_event **outbox = arena_alloc(a, (record->n_account_outbox + 1) * sizeof *outbox);
    account_event *e = (void *)arena_new_message(a, &library__lending__internal__account_event__descriptor);
    if (outbox == NULL || e == NULL)
        return NULL;
    if (record->n_account_outbox)
        memcpy(outbox, record->account_outbox, record->n_account_outbox * sizeof *outbox);
    record->account_version++;
    record->account_update_ms = now_ms;
    e->version = record->account_version;
    e->kind = kind;
    e->loan_id = (char *)(loan_id ? loan_id : "");
    e->amount = amount;
    e->time_ms = now_ms;
    outbox[record->n_account_outbox++] = e;
    record->account_outbox = outbox;
    return e;
}

/* Fixed, nothing owed, and its loan's open entry gone: were the entry dropped while the loan
 * is still open, the next fix or sweep would fine the loan anew from its due time. */
static bool settled(const user_record *record, const fine_entry *fine) {
    return fine->fixed && fine_owed_at(fine, 0) == 0 && user_record_open_entry(record, fine->loan_id) == NULL;
}

/* Keeps every fine still owed, accruing or of an open loan, and the newest FINES_SETTLED_KEPT
 * settled ones. */
static void prune_settled(user_record *record) {
    size_t settled_count = 0;
    for (size_t i = 0; i < record->n_fines; i++)
        settled_count += settled(record, record->fines[i]);
    size_t drop = settled_count > FINES_SETTLED_KEPT ? settled_count - FINES_SETTLED_KEPT : 0;
    size_t kept = 0;
    for (size_t i = 0; i < record->n_fines; i++) {
        if (drop > 0 && settled(record, record->fines[i])) {
            drop--;
            continue;
        }
        record->fines[kept++] = record->fines[i];
    }
    record->n_fines = kept;
}

static fine_entry *add_fine(arena *a, user_record *record, const user_open_loan *open) {
    fine_entry **fines = arena_alloc(a, (record->n_fines + 1) * sizeof *fines);
    fine_entry *fine = (void *)arena_new_message(a, &library__lending__internal__fine_entry__descriptor);
    if (fines == NULL || fine == NULL)
        return NULL;
    if (record->n_fines)
        memcpy(fines, record->fines, record->n_fines * sizeof *fines);
    fine->loan_id = open->loan_id;
    fine->book_id = open->book_id;
    fine->book_title = open->book_title;
    fine->terms = open->fine_terms;
    fine->due_time = open->due_time;
    fines[record->n_fines++] = fine;
    record->fines = fines;
    return fine;
}

status_code account_assess(arena *a, user_record *record, int64_t now_ms, bool *changed, status *st) {
    int64_t now = now_ms / 1000;
    *changed = false;
    for (size_t i = 0; i < record->n_open_loans; i++) {
        const user_open_loan *open = record->open_loans[i];
        if (is_active(open) && find_fine(record, open->loan_id) == NULL &&
            fine_accrued(open->fine_terms, open->due_time, now) > 0 && add_fine(a, record, open) == NULL)
            return out_of_memory(st);
    }
    for (size_t i = 0; i < record->n_fines; i++) {
        fine_entry *fine = record->fines[i];
        int64_t amount = fine_amount_at(fine, now);
        if (amount == fine->amount)
            continue;
        fine->amount = amount;
        if (account_changed(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, fine->loan_id, amount,
                            now_ms) == NULL)
            return out_of_memory(st);
        *changed = true;
    }
    return STATUS_OK;
}

status_code account_fix(arena *a, user_record *record, const char *loan_id, int64_t return_seconds,
                        int64_t now_ms, bool *changed, status *st) {
    *changed = false;
    const user_open_loan *open = user_record_open_entry(record, loan_id);
    fine_entry *fine = find_fine(record, loan_id);
    if (open == NULL || !is_active(open) || (fine != NULL && fine->fixed))
        return STATUS_OK;
    if (fine == NULL) {
        if (fine_accrued(open->fine_terms, open->due_time, return_seconds) == 0)
            return STATUS_OK; /* back in time */
        if ((fine = add_fine(a, record, open)) == NULL)
            return out_of_memory(st);
    }
    /* What it accrued by the return; never below what was paid or waived of it already (a
     * sweep that ran between the return and this fix may have assessed one step more). */
    int64_t amount = fine->waived_all ? fine->amount : fine_amount_at(&(fine_entry){
        .terms = fine->terms, .due_time = fine->due_time, .carried = fine->carried}, return_seconds);
    if (amount < fine->paid + fine->waived)
        amount = fine->paid + fine->waived;
    fine->amount = amount;
    fine->fixed = true;
    fine->return_time = return_seconds;
    account_event *e = account_changed(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, loan_id,
                                       amount, now_ms);
    if (e == NULL)
        return out_of_memory(st);
    e->fixed = true;
    prune_settled(record);
    *changed = true;
    return STATUS_OK;
}

status_code account_carry(arena *a, user_record *record, const char *loan_id, int64_t renew_seconds,
                          int64_t due_seconds, const fine_terms *terms, int64_t now_ms, bool *changed,
                          status *st) {
    *changed = false;
    const user_open_loan *open = user_record_open_entry(record, loan_id);
    if (open == NULL || !is_active(open))
        return STATUS_OK;
    fine_entry *fine = find_fine(record, loan_id);
    if (fine == NULL) {
        if (fine_accrued(open->fine_terms, open->due_time, renew_seconds) == 0)
            return STATUS_OK; /* renewed in time: nothing to carry */
        if ((fine = add_fine(a, record, open)) == NULL)
            return out_of_memory(st);
    }
    if (fine->fixed || fine->waived_all || fine->due_time >= due_seconds)
        return STATUS_OK; /* carried for this due time already */
    /* What it accrued by the renewal, as in account_fix: a sweep between the renewal and this
     * carry may have assessed more under the old due time; never below what was paid or waived. */
    int64_t amount = fine_amount_at(&(fine_entry){
        .terms = fine->terms, .due_time = fine->due_time, .carried = fine->carried}, renew_seconds);
    if (amount < fine->paid + fine->waived)
        amount = fine->paid + fine->waived;
    fine->carried = amount;
    fine->due_time = due_seconds;
    if (terms != NULL)
        fine->terms = (fine_terms *)terms;
    *changed = true;
    if (amount != fine->amount) {
        fine->amount = amount;
        if (account_changed(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, loan_id, amount, now_ms) ==
            NULL)
            return out_of_memory(st);
    }
    return STATUS_OK;
}

void account_request_key(const char *method, const char *request_id, char out[ACCOUNT_REQUEST_KEY_LENGTH + 1]) {
    out[0] = '\0';
    if (request_id == NULL || request_id[0] == '\0')
        return;
    char digest[65];
    const char *parts[] = {method, request_id, NULL};
    text_sha256_hex(parts, digest);
    snprintf(out, ACCOUNT_REQUEST_KEY_LENGTH + 1, "%.20s", digest);
}

static const Library__Lending__Internal__AccountRequest *find_request(const user_record *record, const char *key) {
    for (size_t i = 0; key[0] != '\0' && i < record->n_account_requests; i++)
        if (strcmp(record->account_requests[i]->key, key) == 0)
            return record->account_requests[i];
    return NULL;
}

/* The requests with this one appended, the newest ACCOUNT_REQUESTS_KEPT kept. */
static bool remember_request(arena *a, user_record *record, const char *key, int64_t amount, const char *loan_id) {
    if (key[0] == '\0')
        return true;
    Library__Lending__Internal__AccountRequest *entry =
        (void *)arena_new_message(a, &library__lending__internal__account_request__descriptor);
    char *copy = arena_strdup(a, key);
    if (entry == NULL || copy == NULL)
        return false;
    entry->key = copy;
    entry->amount = amount;
    entry->loan_id = (char *)(loan_id ? loan_id : "");
    return arena_append_kept(a, &record->account_requests, &record->n_account_requests, entry,
                             ACCOUNT_REQUESTS_KEPT);
}

status_code account_pay(arena *a, user_record *record, int64_t amount, const char *request_key, int64_t now_ms,
                        bool *replay, status *st) {
    *replay = false;
    if (amount <= 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_OUT_OF_RANGE",
                          "amount must be more than 0 (minor currency units)");
    const Library__Lending__Internal__AccountRequest *seen = find_request(record, request_key);
    if (seen != NULL) {
        if (seen->amount != amount || seen->loan_id[0] != '\0')
            return status_set(st, STATUS_INVALID_ARGUMENT, "REQUEST_ID_REUSED",
                              "request_id was used for another request; use a new one");
        *replay = true;
        return STATUS_OK;
    }
    bool assessed;
    if (account_assess(a, record, now_ms, &assessed, st) != STATUS_OK)
        return st->code;
    int64_t now = now_ms / 1000;
    int64_t balance = account_balance(record, now);
    if (amount > balance)
        return status_set(st, STATUS_FAILED_PRECONDITION, "OVERPAYMENT",
                          "the balance is %lld; a payment of %lld is more than is owed", (long long)balance,
                          (long long)amount);
    int64_t left = amount;
    for (size_t i = 0; i < record->n_fines && left > 0; i++) {
        fine_entry *fine = record->fines[i];
        int64_t owed = fine_owed_at(fine, now);
        int64_t part = owed < left ? owed : left;
        fine->paid += part;
        left -= part;
    }
    if (!remember_request(a, record, request_key, amount, NULL) ||
        account_changed(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_FINE_PAID, NULL, amount, now_ms) == NULL)
        return out_of_memory(st);
    prune_settled(record);
    return STATUS_OK;
}

status_code account_waive(arena *a, user_record *record, const char *loan_id, const char *reason,
                          const char *request_key, int64_t now_ms, bool *replay, status *st) {
    *replay = false;
    const Library__Lending__Internal__AccountRequest *seen = find_request(record, request_key);
    if (seen != NULL) {
        if (strcmp(seen->loan_id, loan_id) != 0)
            return status_set(st, STATUS_INVALID_ARGUMENT, "REQUEST_ID_REUSED",
                              "request_id was used for another request; use a new one");
        *replay = true;
        return STATUS_OK;
    }
    bool assessed;
    if (account_assess(a, record, now_ms, &assessed, st) != STATUS_OK)
        return st->code;
    fine_entry *fine = find_fine(record, loan_id);
    if (fine == NULL)
        return status_set(st, STATUS_FAILED_PRECONDITION, "NO_FINE", "loan %s has no fine", loan_id);
    int64_t owed = fine_owed_at(fine, now_ms / 1000);
    if (fine->waived_all || (fine->fixed && owed == 0))
        return status_set(st, STATUS_FAILED_PRECONDITION, "FINE_NOT_OWED",
                          "nothing is owed on the fine of loan %s", loan_id);
    fine->waived += owed;
    fine->waived_all = true;
    fine->waive_reason = (char *)reason;
    account_event *e = account_changed(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_FINE_WAIVED, loan_id, owed,
                                       now_ms);
    if (e == NULL || !remember_request(a, record, request_key, 0, loan_id))
        return out_of_memory(st);
    e->reason = (char *)reason;
    prune_settled(record);
    return STATUS_OK;
}

static Library__Lending__V1__Fine *view_fine(arena *a, const fine_entry *entry, int64_t now) {
    Library__Lending__V1__Fine *fine = (void *)arena_new_message(a, &library__lending__v1__fine__descriptor);
    if (fine == NULL)
        return NULL;
    fine->loan_id = entry->loan_id;
    fine->book_id = entry->book_id;
    fine->book_title = entry->book_title;
    fine->amount = fine_amount_at(entry, now);
    fine->paid = entry->paid;
    fine->waived = entry->waived;
    fine->state = fine_state(entry);
    fine->due_time = timestamp_from_ms(a, entry->due_time * 1000);
    if (entry->fixed)
        fine->return_time = timestamp_from_ms(a, entry->return_time * 1000);
    return fine;
}

account_message *account_view(arena *a, const user_record *record, const char *user_id, int64_t block_at,
                              int64_t now_ms) {
    account_message *account = (void *)arena_new_message(a, &library__lending__v1__account__descriptor);
    Library__Lending__V1__Fine **fines = arena_alloc(a, (record->n_fines + 1) * sizeof *fines);
    if (account == NULL || fines == NULL)
        return NULL;
    int64_t now = now_ms / 1000;
    /* Account.fines: those still owed (or accruing), then the settled ones, each oldest first */
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < record->n_fines; i++) {
            Library__Lending__V1__FineState state = fine_state(record->fines[i]);
            bool owing = state == LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_ACCRUING ||
                         state == LIBRARY__LENDING__V1__FINE_STATE__FINE_STATE_OWED;
            /* a loan fined by a sweep but returned in time after all owes nothing: not shown */
            bool nothing = record->fines[i]->fixed && record->fines[i]->amount == 0;
            if (owing == (pass == 0) && !nothing)
                fines[n++] = view_fine(a, record->fines[i], now);
        }
    for (size_t i = 0; i < n; i++)
        if (fines[i] == NULL)
            return NULL;
    account->user_id = (char *)user_id;
    account->balance = account_balance(record, now);
    account->fines = fines;
    account->n_fines = n;
    account->block_at = block_at;
    if (record->account_update_ms > 0)
        account->update_time = timestamp_from_ms(a, record->account_update_ms);
    return account;
}

/* When the fine next grows past what was assessed (unix seconds), or 0. */
static int64_t next_growth(const fine_terms *terms, int64_t due_seconds, int64_t carried, int64_t assessed) {
    if (!terms_fine(terms) || due_seconds <= 0 || assessed >= terms->max_per_loan)
        return 0;
    /* the number of started intervals whose accrual passes what was assessed */
    int64_t beyond = assessed > carried ? assessed - carried : 0;
    int64_t steps = beyond / terms->per_interval + 1;
    if (steps > (INT64_MAX - due_seconds) / terms->interval_seconds)
        return 0;
    return due_seconds + (steps - 1) * terms->interval_seconds + 1;
}

int64_t account_next_visit_ms(const user_record *record, int64_t after_ms) {
    int64_t next = 0;
#define SOONER(t) do { int64_t t_ = (t); if (t_ > 0 && (next == 0 || t_ < next)) next = t_; } while (0)
    for (size_t i = 0; i < record->n_account_outbox; i++)
        SOONER(add_amounts(record->account_outbox[i]->time_ms, after_ms));
    for (size_t i = 0; i < record->n_open_loans; i++) {
        const user_open_loan *open = record->open_loans[i];
        if (!is_active(open))
            continue;
        const fine_entry *fine = find_fine(record, open->loan_id);
        if (fine == NULL) {
            int64_t at = next_growth(open->fine_terms, open->due_time, 0, 0);
            SOONER(at > 0 && at <= INT64_MAX / 1000 ? at * 1000 : 0);
        } else if (!fine->fixed && !fine->waived_all) {
            int64_t at = next_growth(fine->terms, fine->due_time, fine->carried, fine->amount);
            SOONER(at > 0 && at <= INT64_MAX / 1000 ? at * 1000 : 0);
        }
    }
#undef SOONER
    return next;
}

/* A settled fine whose retention is over at now_ms. */
static bool fine_expired(const user_record *record, const fine_entry *fine, int64_t now_ms, int64_t retention_ms) {
    return settled(record, fine) && fine->return_time > 0 && fine->return_time <= (now_ms - retention_ms) / 1000;
}

status_code account_refresh(arena *a, user_record *record, int64_t now_ms, int64_t retention_ms, bool *changed,
                            status *st) {
    *changed = false;
    if (retention_ms <= 0 || record->n_fines == 0)
        return STATUS_OK;
    const fine_entry *restated = record->fines[record->n_fines - 1]; /* the newest, or the last to go */
    size_t kept = 0;
    for (size_t i = 0; i < record->n_fines; i++)
        if (!fine_expired(record, record->fines[i], now_ms, retention_ms))
            record->fines[kept++] = record->fines[i];
    bool dropped = kept != record->n_fines;
    record->n_fines = kept;
    if (kept > 0)
        restated = record->fines[kept - 1];
    bool stale = kept > 0 && now_ms - record->account_update_ms >= retention_ms / 2;
    if (!dropped && !stale)
        return STATUS_OK;
    account_event *e = account_changed(a, record, LIBRARY__EVENTS__V1__EVENT__BODY_FINE_ASSESSED, restated->loan_id,
                                       restated->amount, now_ms);
    if (e == NULL)
        return out_of_memory(st);
    e->fixed = restated->fixed;
    *changed = true;
    return STATUS_OK;
}

int64_t account_refresh_visit_ms(const user_record *record, int64_t retention_ms) {
    if (retention_ms <= 0 || record->n_fines == 0)
        return 0;
    int64_t next = add_amounts(record->account_update_ms, retention_ms / 2);
    for (size_t i = 0; i < record->n_fines; i++) {
        const fine_entry *fine = record->fines[i];
        if (settled(record, fine) && fine->return_time > 0 && fine->return_time <= INT64_MAX / 1000) {
            int64_t at = add_amounts(fine->return_time * 1000, retention_ms);
            if (at < next)
                next = at;
        }
    }
    return next;
}

bool account_outbox_done(user_record *record, uint64_t version) {
    size_t kept = 0;
    for (size_t i = 0; i < record->n_account_outbox; i++)
        if (record->account_outbox[i]->version > version)
            record->account_outbox[kept++] = record->account_outbox[i];
    bool changed = kept != record->n_account_outbox;
    record->n_account_outbox = kept;
    return changed;
}
