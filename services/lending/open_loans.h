/* open_loans.h - the reconciler's view of the "loans" bucket: the loans that may still need a
 * step (PENDING; ACTIVE; RETURNED until the catalog confirms the copy is back) and the user
 * records that list open loans. It is fed from a watch on the bucket, so a reconcile round
 * costs what is open, not every loan ever made: settled loans leave the index.
 *
 * No I/O and no locks: one thread feeds it and asks it, and a visit must not change it. */
#ifndef LENDING_OPEN_LOANS_H
#define LENDING_OPEN_LOANS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lending.h"

typedef struct open_loans open_loans;

/* What the index needs of a loan record. */
typedef struct open_loan_facts {
    loan_state state;
    int64_t update_time_ms;  /* the record's last change */
    int64_t due_seconds;     /* 0: none */
    bool overdue_published;  /* LoanOverdue was published */
    bool release_confirmed;  /* the catalog put the copy back after the return */
    bool renewal_unpublished; /* the newest renewal's LoanRenewed may not be out yet */
} open_loan_facts;

open_loans *open_loans_create(void); /* NULL when out of memory */
void open_loans_destroy(open_loans *index); /* NULL is a no-op */
void open_loans_clear(open_loans *index);

/* The newest value of "loan.<id>": the loan is kept while it may need a step and forgotten
 * once settled (CANCELED, or RETURNED with the release confirmed). facts NULL: the key was
 * deleted. False when out of memory (the index then misses the loan; rebuild it). */
bool open_loans_set_loan(open_loans *index, const char *loan_id, const open_loan_facts *facts);

/* The newest value of "user.<key>": the loan ids its record lists as open (count 0, or a
 * deleted key: forgotten). False when out of memory. */
bool open_loans_set_user(open_loans *index, const char *user_key, const char *const *loan_ids,
                         size_t count);

size_t open_loans_loan_count(const open_loans *index);
size_t open_loans_user_count(const open_loans *index);

typedef void (*open_loans_visit)(void *arg, const char *id);

/* Visits each loan that needs a step at now_ms, and returns how many: PENDING, or RETURNED
 * without the release confirmed, unchanged for after_ms; ACTIVE, past due, and no LoanOverdue
 * published yet; ACTIVE with a renewal not known to be announced, unchanged for after_ms. */
size_t open_loans_due(const open_loans *index, int64_t now_ms, int64_t after_ms,
                      open_loans_visit visit, void *arg);

/* From now on, an ACTIVE loan unchanged for ms is due too (0, the default: never): the
 * reconciler announces it again, so the event stream, kept for the retention, holds it. */
void open_loans_announce_every(open_loans *index, int64_t ms);

/* Visits each user record that lists loans the index has not held as PENDING or ACTIVE
 * (settled, returned, or never stored) at any call for at least after_ms, with those loan
 * ids (at most OPEN_LOANS_USER_MAX per visit), and returns how many records it visited.
 * A user record is written before its loan, so a borrow in progress looks like this for a
 * moment: the grace keeps the reconciler away from it. */
#define OPEN_LOANS_USER_MAX 64
typedef void (*open_loans_user_visit)(void *arg, const char *user_key, const char *const *loan_ids,
                                      size_t count);
size_t open_loans_users_due(open_loans *index, int64_t now_ms, int64_t after_ms,
                            open_loans_user_visit visit, void *arg);

/* The newest value of "user.<key>", for its account: when it next needs a visit (a fine to
 * assess, an event to publish; account_next_visit_ms), 0 for never (forgotten). False when
 * out of memory. */
bool open_loans_set_account(open_loans *index, const char *user_key, int64_t next_ms);

/* Visits each user key whose account needs a visit at now_ms, and returns how many. */
size_t open_loans_accounts_due(const open_loans *index, int64_t now_ms, open_loans_visit visit, void *arg);

#endif
