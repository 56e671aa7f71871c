/* policy.h - the loan policy of each patron group (DESIGN.md section 10, "Patron groups and
 * loan policies"): a table read once at start from POLICY_FILE, a JSON file a librarian edits,
 *
 *   {"groups": {"patron": {"loan_period": "14d", "max_active_loans": 5, "max_renewals": 2,
 *                          "max_holds": 5, "hold_pickup": "72h", "fine_per_interval": 25,
 *                          "fine_interval": "24h", "fine_max_per_loan": 1000,
 *                          "fine_block_at": 500},
 *               "child": {"loan_period": "21d", "max_active_loans": 3}}}
 *
 * Durations are strings ("500ms", "30s", "5m", "2h", "14d"), counts and money (minor currency
 * units) JSON integers. A field a row leaves out, and every field of a group with no row, is
 * the service's setting (LOAN_PERIOD, MAX_ACTIVE_LOANS, ... FINE_BLOCK_AT; hold_pickup: the
 * catalog's HOLD_PICKUP, which a hold placed without one waits). Unknown keys are
 * errors, so a misspelt field cannot silently lend by the defaults. The token's `group` claim
 * picks the row (auth.h); group names follow the claim's rule (auth_group_valid).
 *
 * A loan keeps the group it was made in (LoanRecord.patron_group) and its fine terms; a
 * renewal reads that group's row as it is then, so a changed file applies to new loans and
 * renewals only. The table never changes once loaded: readers need no lock. */
#ifndef LENDING_POLICY_H
#define LENDING_POLICY_H

#include <stdint.h>

#include "status.h"

typedef struct loan_policy {
    int64_t loan_period_ms;
    int max_active_loans;
    int max_renewals;
    int max_holds;
    int64_t hold_pickup_ms;    /* 0 (only as a default): the catalog's HOLD_PICKUP */
    int64_t fine_per_interval; /* minor currency units */
    int64_t fine_interval_ms;  /* whole seconds, >= 1 s */
    int64_t fine_max_per_loan;
    int64_t fine_block_at;     /* 0: fines never block */
} loan_policy;

typedef struct policy_table policy_table;

/* Reads the policy file at path. path NULL or "": no file, every group gets *defaults
 * (copied). Errors: INVALID_ARGUMENT (reason BAD_POLICY_FILE), message
 * "<path>: groups.<name>.<field>: <what is wrong>", or the JSON error with line and column,
 * or what is wrong with the file itself. On success *out is the caller's
 * (policy_table_destroy). */
status_code policy_table_load(const char *path, const loan_policy *defaults, policy_table **out, status *st);

void policy_table_destroy(policy_table *t); /* NULL is a no-op */

/* The group's row, fields it does not set taken from the defaults; an unknown group (or NULL)
 * gets the defaults. Never NULL; valid as long as the table. */
const loan_policy *policy_for(const policy_table *t, const char *group);

/* How many groups the file named (for the start-up log). */
int policy_table_group_count(const policy_table *t);

#endif
