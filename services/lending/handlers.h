/* handlers.h - LendingService over gRPC. */
#ifndef LENDING_HANDLERS_H
#define LENDING_HANDLERS_H

#include "catalog_link.h"
#include "lending_service.h"
#include "loan_store.h"
#include "policy.h"
#include "rpc_server.h"
#include "saga.h"

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

/* Fills handlers->service (state = handlers); the other fields must be set first. */
void lending_handlers_init(lending_handlers *handlers);

#endif
