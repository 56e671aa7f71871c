/* catalog_link.h - lending's calls to the catalog: GetBook behind a circuit breaker, with
 * the caller's token, trace context and deadline (at most the link's own timeout). */
#ifndef LENDING_CATALOG_LINK_H
#define LENDING_CATALOG_LINK_H

#include <stdint.h>

#include "circuit_breaker.h"
#include "library/catalog/v1/catalog.pb-c.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "status.h"

typedef struct catalog_link {
    rpc_client *client;
    circuit_breaker breaker;
    int64_t timeout_ms;
} catalog_link;

/* Connects to address (a gRPC target). The breaker opens after failures calls in a row that
 * found no catalog, for open_ms. */
status_code catalog_link_open(catalog_link *link, const char *address, int64_t timeout_ms, int failures,
                              int64_t open_ms, status *st);
void catalog_link_close(catalog_link *link);

/* CatalogService.GetBook for the call ctx: NOT_FOUND as the catalog says, UNAVAILABLE
 * (CATALOG_UNAVAILABLE) when it does not answer or the breaker is open. The book is in ctx's
 * arena. */
status_code catalog_link_get_book(catalog_link *link, rpc_context *ctx, const char *book_id,
                                  Library__Catalog__V1__Book **out, status *st);

#endif
