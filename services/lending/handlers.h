/* handlers.h - LendingService over gRPC. */
#ifndef LENDING_HANDLERS_H
#define LENDING_HANDLERS_H

#include "circuit_breaker.h"
#include "lending_service.h"
#include "loan_store.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "saga.h"

typedef struct lending_handlers {
    loan_store *store;
    lending_saga *saga;
    nats_connection *connection;
    rpc_client *catalog;
    circuit_breaker catalog_breaker;
    int64_t loan_period_ms;
    int64_t borrow_wait_ms;
    int64_t catalog_timeout_ms;
    int max_active_loans;
    int max_renewals;
    rpc_service service;
} lending_handlers;

/* Fills handlers->service (state = handlers); the other fields must be set first. */
void lending_handlers_init(lending_handlers *handlers);

#endif
