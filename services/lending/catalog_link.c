/* catalog_link.c - lending's calls to the catalog, behind a circuit breaker. */
#include "catalog_link.h"

#include <string.h>

#include "timestamp.h"

status_code catalog_link_open(catalog_link *link, const char *address, int64_t timeout_ms, int failures,
                              int64_t open_ms, status *st) {
    memset(link, 0, sizeof *link);
    link->timeout_ms = timeout_ms;
    circuit_breaker_init(&link->breaker, "catalog", failures, open_ms);
    status_code code = rpc_client_create(address, timeout_ms, &link->client, st);
    if (code != STATUS_OK)
        circuit_breaker_destroy(&link->breaker);
    return code;
}

void catalog_link_close(catalog_link *link) {
    if (link->client == NULL)
        return;
    rpc_client_destroy(link->client);
    circuit_breaker_destroy(&link->breaker);
    link->client = NULL;
}

status_code catalog_link_get_book(catalog_link *link, rpc_context *ctx, const char *book_id,
                                  Library__Catalog__V1__Book **out, status *st) {
    if (!circuit_breaker_allow(&link->breaker, timestamp_now_ms()))
        return status_set(st, STATUS_UNAVAILABLE, "CATALOG_UNAVAILABLE",
                          "the catalog is unavailable; try again shortly");
    Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    int64_t timeout = rpc_context_remaining_ms(ctx);
    if (timeout > link->timeout_ms)
        timeout = link->timeout_ms;
    rpc_call_options options = {.timeout_ms = timeout > 0 ? timeout : 1,
                                .authorization = rpc_context_authorization(ctx),
                                .traceparent = rpc_context_traceparent(ctx),
                                .extra_metadata = rpc_context_forward_metadata(ctx)};
    ProtobufCMessage *response = NULL;
    status_code code = rpc_client_call(link->client, "/library.catalog.v1.CatalogService/GetBook",
                                       &request.base, &library__catalog__v1__book__descriptor,
                                       rpc_context_arena(ctx), &response, &options, st);
    circuit_breaker_record(&link->breaker, code, timestamp_now_ms());
    if (code == STATUS_UNAVAILABLE || code == STATUS_DEADLINE_EXCEEDED)
        return status_set(st, STATUS_UNAVAILABLE, "CATALOG_UNAVAILABLE",
                          "the catalog did not answer; try again shortly");
    if (code != STATUS_OK)
        return code; /* NOT_FOUND, INVALID_ARGUMENT... as the catalog said */
    *out = (Library__Catalog__V1__Book *)response;
    return STATUS_OK;
}
