/* main.c - the catalog service: books and their copies, stored in NATS JetStream. */
#include <stdlib.h>

#include "book_store.h"
#include "events.h"
#include "handlers.h"
#include "saga.h"
#include "service.h"

static status_code catalog_start(const service_context *context, void **state, status *st) {
    catalog_handlers *handlers = calloc(1, sizeof *handlers);
    if (handlers == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    int replicas = (int)context->settings->nats_replicas;
    book_store *store = NULL;
    catalog_saga *saga = NULL;
    status_code code = events_ensure_stream(context->nats, replicas, st);
    if (code == STATUS_OK)
        code = book_store_open(context->nats, replicas, &store, st);
    if (code == STATUS_OK)
        code = catalog_saga_start(context->nats, store, context->settings->event_ack_wait_ms,
                                  (int)context->settings->event_workers, &saga, st);
    if (code == STATUS_OK) {
        catalog_handlers_init(handlers, store);
        handlers->saga = saga;
        code = rpc_server_add_service(context->server, &handlers->service, st);
    }
    if (code != STATUS_OK) {
        catalog_saga_stop(saga);
        book_store_close(store);
        free(handlers);
        return code;
    }
    *state = handlers;
    return STATUS_OK;
}

static void catalog_stop(void *state) {
    catalog_handlers *handlers = state;
    catalog_saga_stop(handlers->saga);
    book_store_close(handlers->store);
    free(handlers);
}

static const service_definition catalog_definition = {
    .name = "catalog",
    .default_grpc_port = "50051",
    .default_metrics_port = "9464",
    .start = catalog_start,
    .stop = catalog_stop,
};

int main(int argc, char **argv) {
    return service_main(&catalog_definition, argc, argv);
}
