/* main.c - the catalog service: books and their copies, stored in NATS JetStream. */
#include <stdlib.h>

#include "book_store.h"
#include "events.h"
#include "handlers.h"
#include "saga.h"
#include "service.h"

static struct {
    int64_t hold_pickup_ms, hold_sweep_ms;
} settings;

static const config_entry catalog_config[] = {
    {"HOLD_PICKUP", CONFIG_DURATION, "72h", "how long a copy set aside for a READY hold waits for its holder",
     &settings.hold_pickup_ms, 1000, 0},
    {"HOLD_SWEEP", CONFIG_DURATION, "1s", "how often expired holds and unpublished hold events are looked for",
     &settings.hold_sweep_ms, 50, 3600000},
};

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
        code = catalog_saga_start(context->nats, store,
                                  &(catalog_saga_options){.ack_wait_ms = context->settings->event_ack_wait_ms,
                                                          .workers = (int)context->settings->event_workers,
                                                          .hold_pickup_ms = settings.hold_pickup_ms,
                                                          .hold_sweep_ms = settings.hold_sweep_ms},
                                  &saga, st);
    if (code == STATUS_OK) {
        catalog_handlers_init(handlers, store);
        handlers->connection = context->nats;
        handlers->hold_pickup_ms = settings.hold_pickup_ms;
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
    .config = catalog_config,
    .config_count = sizeof catalog_config / sizeof catalog_config[0],
    .start = catalog_start,
    .stop = catalog_stop,
};

int main(int argc, char **argv) {
    return service_main(&catalog_definition, argc, argv);
}
