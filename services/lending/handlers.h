/* handlers.h - LendingService over gRPC. */
#ifndef LENDING_HANDLERS_H
#define LENDING_HANDLERS_H

#include "circuit_breaker.h"
#include "lending_service.h"
#include "loan_store.h"
#include "rpc_client.h"
#include "library/catalog/v1/catalog.pb-c.h"
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
    int max_holds;
    int max_renewals;
    int64_t fine_per_interval; /* minor currency units per started fine_interval_ms */
    int64_t fine_interval_ms;
    int64_t fine_max_per_loan;
    int64_t fine_block_at; /* 0: fines never block */
    rpc_service service;
} lending_handlers;

/* CatalogService.GetBook behind the circuit breaker, with the caller's token and deadline:
 * NOT_FOUND as the catalog says, UNAVAILABLE (CATALOG_UNAVAILABLE) when it does not answer. */
status_code lending_fetch_book(lending_handlers *h, rpc_context *ctx, const char *book_id,
                               Library__Catalog__V1__Book **out, status *st);

/* The fine rule a loan made now is lent under, from a. */
Library__Lending__Internal__FineTerms *lending_fine_terms(const lending_handlers *h, arena *a);

/* Fills handlers->service (state = handlers); the other fields must be set first. */
void lending_handlers_init(lending_handlers *handlers);

#endif
