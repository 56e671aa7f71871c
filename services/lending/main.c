/* main.c - the lending service: loans, the borrow saga with the catalog, overdue and limits. */
#include <stdlib.h>

#include "log.h"
#include "policy.h"

#include "events.h"
#include "handlers.h"
#include "service.h"

static struct {
    const char *catalog_address, *policy_file;
    int64_t loan_period_ms, max_active_loans, max_holds, max_renewals, borrow_wait_ms, catalog_timeout_ms;
    int64_t fine_per_interval, fine_interval_ms, fine_max_per_loan, fine_block_at;
    int64_t reconcile_interval_ms, reconcile_after_ms, breaker_failures, breaker_open_ms;
    int64_t retention_ms;
} settings;

/* Read at start (lending_configure), before anything is opened: a bad file exits 2. */
static policy_table *policies;

static const config_entry lending_config[] = {
    {"CATALOG_ADDR", CONFIG_STRING, NULL, "catalog gRPC target: host:port, or several replicas as ipv4:host:port,host:port (calls go round-robin)", &settings.catalog_address, 0, 0},
    {"LOAN_PERIOD", CONFIG_DURATION, "14d", "how long a loan lasts", &settings.loan_period_ms, 1000, 0},
    {"MAX_ACTIVE_LOANS", CONFIG_INT, "5", "PENDING + ACTIVE loans a user may hold",
     &settings.max_active_loans, 1, 1000},
    {"MAX_HOLDS", CONFIG_INT, "5", "WAITING + READY holds a user may have", &settings.max_holds, 1, 1000},
    {"MAX_RENEWALS", CONFIG_INT, "2", "how many times RenewLoan may extend one loan",
     &settings.max_renewals, 0, 1000},
    {"FINE_PER_INTERVAL", CONFIG_INT, "25", "fine for each started FINE_INTERVAL a loan is late (minor currency units)",
     &settings.fine_per_interval, 0, 1000000000},
    {"FINE_INTERVAL", CONFIG_DURATION, "24h", "the interval fines accrue by (whole seconds)",
     &settings.fine_interval_ms, 1000, 0},
    {"FINE_MAX_PER_LOAN", CONFIG_INT, "1000", "the most one loan is fined", &settings.fine_max_per_loan, 0,
     1000000000000},
    {"FINE_BLOCK_AT", CONFIG_INT, "500", "a balance from which borrowing, renewals and holds are refused (0: never)",
     &settings.fine_block_at, 0, 1000000000000},
    {"POLICY_FILE", CONFIG_STRING, "",
     "JSON file of the patron groups' loan policies (docs/deployment.md); the settings above are "
     "what a group or field it leaves out gets. Empty: every group gets them",
     &settings.policy_file, 0, 0},
    {"BORROW_WAIT", CONFIG_DURATION, "2s", "how long BorrowBook waits for the saga's outcome",
     &settings.borrow_wait_ms, 0, 60000},
    {"CATALOG_TIMEOUT", CONFIG_DURATION, "1s", "deadline of a call to the catalog",
     &settings.catalog_timeout_ms, 10, 60000},
    {"RECONCILE_INTERVAL", CONFIG_DURATION, "30s", "how often unfinished loans are looked at",
     &settings.reconcile_interval_ms, 100, 86400000},
    {"RECONCILE_AFTER", CONFIG_DURATION, "10s", "age at which an unfinished step is redone",
     &settings.reconcile_after_ms, 0, 86400000},
    {"RETENTION", CONFIG_DURATION, "365d",
     "how long returned and canceled loans, settled holds and events are kept (0: for good)",
     &settings.retention_ms, 0, 0},
    {"BREAKER_FAILURES", CONFIG_INT, "5", "catalog failures in a row that open the circuit",
     &settings.breaker_failures, 1, 1000},
    {"BREAKER_OPEN", CONFIG_DURATION, "2s", "how long the open circuit refuses calls",
     &settings.breaker_open_ms, 10, 600000},
};

/* The settings above as the policy of every group the file does not name. A set-aside copy
 * waits the catalog's HOLD_PICKUP unless the group's row says otherwise (hold_pickup 0). */
static loan_policy default_policy(void) {
    return (loan_policy){.loan_period_ms = settings.loan_period_ms,
                         .max_active_loans = (int)settings.max_active_loans,
                         .max_renewals = (int)settings.max_renewals,
                         .max_holds = (int)settings.max_holds,
                         .hold_pickup_ms = 0,
                         .fine_per_interval = settings.fine_per_interval,
                         .fine_interval_ms = settings.fine_interval_ms,
                         .fine_max_per_loan = settings.fine_max_per_loan,
                         .fine_block_at = settings.fine_block_at};
}

static status_code lending_configure(status *st) {
    if (settings.fine_interval_ms % 1000 != 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_CONFIG",
                          "FINE_INTERVAL must be whole seconds (got %lld ms)", (long long)settings.fine_interval_ms);
    if (settings.retention_ms != 0 && settings.retention_ms < 2000)
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_CONFIG",
                          "RETENTION must be 0 (keep for good) or at least 2s (got %lld ms)",
                          (long long)settings.retention_ms);
    loan_policy defaults = default_policy();
    return policy_table_load(settings.policy_file, &defaults, &policies, st);
}

static status_code lending_start(const service_context *context, void **state, status *st) {
    lending_handlers *h = calloc(1, sizeof *h);
    if (h == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    int replicas = (int)context->settings->nats_replicas;
    h->connection = context->nats;
    h->policies = policies;
    if (settings.policy_file[0] != '\0')
        LOG_INFO("loan policies of %d patron groups from %s; the settings for the others",
                 policy_table_group_count(policies), settings.policy_file);
    h->borrow_wait_ms = settings.borrow_wait_ms;
    saga_options saga = {.reconcile_interval_ms = settings.reconcile_interval_ms,
                         .reconcile_after_ms = settings.reconcile_after_ms,
                         .ack_wait_ms = context->settings->event_ack_wait_ms,
                         .event_workers = (int)context->settings->event_workers,
                         .retention_ms = settings.retention_ms};
    status_code code = events_ensure_stream(context->nats, replicas, st);
    if (code == STATUS_OK)
        code = events_keep_for(context->nats, settings.retention_ms, st);
    if (code == STATUS_OK)
        code = loan_store_open(context->nats, replicas, &h->store, st);
    if (code == STATUS_OK)
        code = catalog_link_open(&h->catalog, settings.catalog_address, settings.catalog_timeout_ms,
                                 (int)settings.breaker_failures, settings.breaker_open_ms, st);
    if (code == STATUS_OK)
        code = lending_saga_start(context->nats, h->store, &saga, &h->saga, st);
    if (code == STATUS_OK) {
        lending_handlers_init(h);
        code = rpc_server_add_service(context->server, &h->service, st);
    }
    if (code != STATUS_OK) {
        lending_saga_stop(h->saga);
        catalog_link_close(&h->catalog);
        loan_store_close(h->store);
        free(h);
        return code;
    }
    *state = h;
    return STATUS_OK;
}

static void lending_stop(void *state) {
    lending_handlers *h = state;
    lending_saga_stop(h->saga);
    catalog_link_close(&h->catalog);
    loan_store_close(h->store);
    free(h);
}

static const service_definition lending_definition = {
    .name = "lending",
    .default_grpc_port = "50052",
    .default_metrics_port = "9465",
    .config = lending_config,
    .config_count = sizeof lending_config / sizeof lending_config[0],
    .configure = lending_configure,
    .start = lending_start,
    .stop = lending_stop,
};

int main(int argc, char **argv) {
    int exit_status = service_main(&lending_definition, argc, argv);
    policy_table_destroy(policies);
    return exit_status;
}
