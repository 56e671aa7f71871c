/* handlers.h - CatalogService over gRPC: decode, check, call the store, answer. */
#ifndef CATALOG_HANDLERS_H
#define CATALOG_HANDLERS_H

#include "book_store.h"
#include "catalog_service.h"
#include "rpc_server.h"
#include "saga.h"

typedef struct catalog_handlers {
    book_store *store;
    nats_connection *connection; /* for the hold events a stock change announces */
    int64_t hold_pickup_ms;
    catalog_saga *saga; /* owned here so stop can end it; handlers do not use it */
    rpc_service service;
} catalog_handlers;

/* Fills handlers->service (state = handlers) for rpc_server_add_service. */
void catalog_handlers_init(catalog_handlers *handlers, book_store *store);

#endif
