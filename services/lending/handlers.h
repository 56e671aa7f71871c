/* handlers.h - LendingService over gRPC. */
#ifndef LENDING_HANDLERS_H
#define LENDING_HANDLERS_H

#include "catalog_link.h"
#include "lending_service.h"
#include "loan_store.h"
#include "policy.h"
#include "rpc_server.h"
#include "saga.h"
#include "user_record.h"

typedef struct lending_handlers {
    loan_store *store;
    lending_saga *saga;
    nats_connection *connection;
    catalog_link catalog;
    /* The loan rules of each patron group (the caller's token's group claim); the env
     * settings for groups the policy file does not name. */
    const policy_table *policies;
    int64_t borrow_wait_ms;
    rpc_service service;
} lending_handlers;

/* A loan's fine terms under the policy, from a: the interval in whole seconds. NULL when out
 * of memory. */
Library__Lending__Internal__FineTerms *lending_fine_terms(arena *a, const loan_policy *policy);

/* Runs change (over job) on the user's record as loan_store_update_user does, and again
 * while the change sets *need_archive: each time after reading the user's UserHistory into
 * *archive at *archive_revision (user_record.h; a few reads at most, then UNAVAILABLE
 * HISTORY_MOVING). *user (may be NULL): the record as stored afterwards. */
status_code lending_update_user_reading(lending_handlers *h, arena *a, const char *user_id, user_change change,
                                        void *job, const bool *need_archive, const user_history **archive,
                                        uint64_t *archive_revision, user_record **user, status *st);

/* Moves the older ids of the list's full window (user_record_history_full) to the user's
 * UserHistory: that first, then the record drops what it holds (a crash in between leaves
 * them in both, which the listings read once and the next move settles). A failure only
 * leaves the window longer for now. user: the record as stored. */
void lending_move_history(lending_handlers *h, arena *a, const char *user_id, const user_record *user,
                          user_list list);

/* The list's whole history (history[0..count) being the record's window, oldest first)
 * becomes the older part read from the bucket, then the window: for a page past the window. */
status_code lending_whole_history(lending_handlers *h, arena *a, const char *user_id, user_list list,
                                  char ***history, size_t *count, status *st);

/* Fills handlers->service (state = handlers); the other fields must be set first. */
void lending_handlers_init(lending_handlers *handlers);

#endif
