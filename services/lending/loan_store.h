/* loan_store.h - loans and per-user records in the JetStream key-value bucket "loans", with
 * compare-and-set updates. The user record is what makes the borrow checks atomic: a borrow
 * adds its loan to the record only if the record did not change since it was checked.
 *
 * Beside the bucket, a read index (loan_index.h) of every loan and every user's history, kept
 * by a watcher on the bucket and by every loan this process reads or writes here, so a caller
 * answered with a loan never reads an older one from the index afterwards; another replica's
 * writes reach it within the watch delay. */
#ifndef LENDING_LOAN_STORE_H
#define LENDING_LOAN_STORE_H

#include <stdbool.h>

#include "arena.h"
#include "kv.h"
#include "kv_record.h"
#include "library/events/v1/events.pb-c.h"
#include "loan_record.pb-c.h"
#include "status.h"
#include "timestamp.h"

typedef Library__Lending__Internal__LoanRecord loan_record;
typedef Library__Lending__Internal__UserRecord user_record;
typedef Library__Lending__V1__Loan loan_message;
typedef Library__Lending__Internal__HoldRecord hold_record;
typedef Library__Lending__Internal__BookQueue book_queue;
typedef Library__Lending__V1__Hold hold_message;

typedef struct loan_store loan_store;

status_code loan_store_open(nats_connection *connection, int replicas, loan_store **out,
                            status *st);
void loan_store_close(loan_store *store); /* NULL is a no-op */

/* The store's one watch on the bucket feeds its read index; it is renewed this often, and a
 * fresh watch delivers every key again (the reconciler counts on it, see saga.c). */
#define LOAN_STORE_REWATCH_MS (10 * 60 * 1000)
/* A second reader of that watch (kv_follow_branch), for the reconciler: the bucket's changes
 * come from NATS once, not once per view. Once per store; NULL when out of memory or taken.
 * kv_follow_close it before loan_store_close. */
kv_follow *loan_store_follow(loan_store *store);

/* From the index, no I/O: the loan (decoded into a), or false when the index does not hold
 * it yet (then loan_store_get). */
bool loan_store_find_loan(loan_store *store, const char *loan_id, arena *a, loan_message **out);
/* From the index, no I/O: the user's history of loan ids, oldest first (in a), or false when
 * the index does not hold the user (then loan_store_get_user). */
bool loan_store_find_history(loan_store *store, const char *user_id, arena *a, char ***history, size_t *count);

/* NOT_FOUND (reason LOAN_NOT_FOUND) when missing. */
status_code loan_store_get(loan_store *store, const char *loan_id, arena *a, loan_record **out,
                           status *st);
/* ALREADY_EXISTS when a loan with this id exists. */
status_code loan_store_create(loan_store *store, const loan_record *record, arena *a, status *st);

/* Changes a loan in place (set *changed false to write nothing); retried on conflicts. */
typedef status_code (*loan_change)(void *arg, arena *a, loan_record *record, bool *changed,
                                   status *st);
status_code loan_store_update(loan_store *store, const char *loan_id, arena *a, loan_change change,
                              void *arg, loan_record **out, status *st);

/* The user's record (an empty one when the user has none yet). */
status_code loan_store_get_user(loan_store *store, const char *user_id, arena *a, user_record **out,
                                status *st);
typedef status_code (*user_change)(void *arg, arena *a, user_record *record, bool *changed,
                                   status *st);
status_code loan_store_update_user(loan_store *store, const char *user_id, arena *a,
                                   user_change change, void *arg, user_record **out, status *st);

/* The older part of the user's history ("history.<user key>", user_record.h) and its
 * revision: an empty one at revision 0 when nothing was moved there yet. */
typedef Library__Lending__Internal__UserHistory user_history;
status_code loan_store_get_history(loan_store *store, const char *user_id, arena *a, user_history **out,
                                   uint64_t *revision, status *st);
/* Changes it by compare-and-set (an empty one when missing); *out and *revision (each may be
 * NULL): as stored afterwards. The change is a kv_record_change over the UserHistory. */
typedef kv_record_change history_change;
status_code loan_store_update_history(loan_store *store, const char *user_id, arena *a, history_change change,
                                      void *arg, user_history **out, uint64_t *revision, status *st);

/* Removes "loan.<id>" or "hold.<id>" and every revision of it, once its retention is over
 * (retention.h); one not there is removed already. */
status_code loan_store_forget_loan(loan_store *store, const char *loan_id, status *st);
status_code loan_store_forget_hold(loan_store *store, const char *hold_id, status *st);

/* Holds: "hold.<id>". NOT_FOUND (reason HOLD_NOT_FOUND) when missing; ALREADY_EXISTS on a
 * second create. */
status_code loan_store_get_hold(loan_store *store, const char *hold_id, arena *a, hold_record **out,
                                status *st);
status_code loan_store_create_hold(loan_store *store, const hold_record *record, arena *a, status *st);
typedef status_code (*hold_change)(void *arg, arena *a, hold_record *record, bool *changed, status *st);
status_code loan_store_update_hold(loan_store *store, const char *hold_id, arena *a, hold_change change,
                                   void *arg, hold_record **out, status *st);

/* The newest copy of the catalog's queue of WAITING holds of a book ("queue.<book_id>"; an
 * empty one when nobody ever waited), and keeping it: a copy with a higher version replaces
 * it, an older one is ignored. */
status_code loan_store_get_queue(loan_store *store, const char *book_id, arena *a, book_queue **out,
                                 status *st);
status_code loan_store_follow_queue(loan_store *store, const Library__Events__V1__HoldQueue *seen, arena *a,
                                    status *st);

#endif
