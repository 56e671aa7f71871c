/* loan_store.h - loans and per-user records in the JetStream key-value bucket "loans", with
 * compare-and-set updates. The user record is what makes the borrow checks atomic: a borrow
 * adds its loan to the record only if the record did not change since it was checked. */
#ifndef LENDING_LOAN_STORE_H
#define LENDING_LOAN_STORE_H

#include <stdbool.h>

#include "arena.h"
#include "kv.h"
#include "loan_record.pb-c.h"
#include "status.h"
#include "timestamp.h"

typedef Library__Lending__Internal__LoanRecord loan_record;
typedef Library__Lending__Internal__UserRecord user_record;
typedef Library__Lending__V1__Loan loan_message;

typedef struct loan_store loan_store;

status_code loan_store_open(nats_connection *connection, int replicas, loan_store **out,
                            status *st);
void loan_store_close(loan_store *store); /* NULL is a no-op */
kv_bucket *loan_store_bucket(loan_store *store);

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

#endif
