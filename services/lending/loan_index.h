/* loan_index.h - lending's in-memory copy of what GetLoan and ListLoans read from the loans
 * bucket: the newest Loan of every "loan.<id>" (the Loan message packed, not the whole record)
 * and the loan history of every "user.<key>". Fed by a watcher on the bucket and by this
 * process's own writes (loan_store.h), like the catalog's book index. It is a cache: the
 * bucket is the truth, and an entry with an older revision never replaces a newer one.
 *
 * Thread-safe: any number of readers at once, one writer at a time (a rwlock). No I/O. */
#ifndef LENDING_LOAN_INDEX_H
#define LENDING_LOAN_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

typedef struct loan_index loan_index;

loan_index *loan_index_create(void);          /* NULL when out of memory */
void loan_index_destroy(loan_index *index);   /* NULL is a no-op */

/* Keeps the loan's packed Loan message (copied) unless the index holds the same or a newer
 * revision of it. False when out of memory (the index then misses the change). */
bool loan_index_put_loan(loan_index *index, const char *loan_id, const uint8_t *loan, size_t size,
                         uint64_t revision);
/* Keeps the user's history of loan ids, oldest first as the user record lists them (copied),
 * unless the index holds the same or a newer revision of it. user_key is the bucket key after
 * "user.". False when out of memory. */
bool loan_index_put_user(loan_index *index, const char *user_key, const char *const *history, size_t count,
                         uint64_t revision);
/* The key was deleted at revision: forgotten unless the index holds a newer revision. */
void loan_index_remove_loan(loan_index *index, const char *loan_id, uint64_t revision);
void loan_index_remove_user(loan_index *index, const char *user_key, uint64_t revision);

/* The loan's packed Loan, copied into a: true with *loan and *size set; false when the index
 * does not hold it (or a is out of memory). */
bool loan_index_get_loan(loan_index *index, const char *loan_id, arena *a, uint8_t **loan, size_t *size);
/* The user's history, copied into a, oldest first: true with *history and *count set; false
 * when the index does not hold the user (or a is out of memory). */
bool loan_index_get_user(loan_index *index, const char *user_key, arena *a, char ***history, size_t *count);

/* The revision the index holds of the loan, 0 when none. */
uint64_t loan_index_loan_revision(loan_index *index, const char *loan_id);
size_t loan_index_loan_count(loan_index *index);
size_t loan_index_user_count(loan_index *index);
/* Bytes the index holds on the heap (entries and tables), for its memory per loan. */
size_t loan_index_bytes(loan_index *index);

#endif
