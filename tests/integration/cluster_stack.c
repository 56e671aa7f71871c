/* cluster_stack.c - starting, restarting and calling the cluster shape. */
#include "cluster_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "library/catalog/v1/catalog.pb-c.h"
#include "library/lending/v1/lending.pb-c.h"

static const char *const service_names[CLUSTER_SERVICES] = {"catalog", "lending", "mypage"};
static const char *const grpc_services[CLUSTER_SERVICES] = {
    "library.catalog.v1.CatalogService", "library.lending.v1.LendingService",
    "library.mypage.v1.MypageService"};

/* The settings of one replica: the cluster's URLs, R3, its own fixed ports (so a restart
 * comes back where the gateway and the other services expect it), and what the service
 * needs besides. */
static void start_replica(cluster_stack *c, cluster_service service, int i, int port, int metrics_port) {
    char nats_url[400], grpc_port[32], metrics[32], catalog_target[160], redis_url[160];
    snprintf(nats_url, sizeof nats_url, "NATS_URL=%s", c->nats.urls);
    snprintf(grpc_port, sizeof grpc_port, "GRPC_PORT=%d", port);
    snprintf(metrics, sizeof metrics, "METRICS_PORT=%d", metrics_port);
    snprintf(catalog_target, sizeof catalog_target, "CATALOG_ADDR=ipv4:%s,%s",
             c->replica[CLUSTER_CATALOG][0].address, c->replica[CLUSTER_CATALOG][1].address);
    snprintf(redis_url, sizeof redis_url, "REDIS_URL=%s", c->redis.url);
    const char *env[16] = {nats_url, grpc_port, metrics, "NATS_REPLICAS=3", "EVENT_ACK_WAIT=2s"};
    size_t n = 5;
    if (service == CLUSTER_LENDING) {
        env[n++] = catalog_target;
        env[n++] = "RECONCILE_INTERVAL=500ms";
        /* longer than a leader election, so that a borrow still on its way is not claimed */
        env[n++] = "RECONCILE_AFTER=5s";
    } else if (service == CLUSTER_MYPAGE) {
        env[n++] = redis_url;
    }
    char replica_name[32];
    snprintf(replica_name, sizeof replica_name, "%s-%d", service_names[service], i + 1);
    cr_assert(harness_replica_start(service_names[service], replica_name, c->dir, env,
                                    &c->replica[service][i]),
              "%s did not start: %s", replica_name, c->replica[service][i].log_path);
}

static void connect_clients(cluster_stack *c) {
    cr_assert_eq(rpc_client_create(c->gateway.address, 10000, &c->gateway_client, NULL), STATUS_OK);
    for (int s = 0; s < CLUSTER_SERVICES; s++)
        for (int i = 0; i < CLUSTER_REPLICAS; i++)
            cr_assert_eq(rpc_client_create(c->replica[s][i].address, 10000, &c->client[s][i], NULL),
                         STATUS_OK);
}

static void disconnect_clients(cluster_stack *c) {
    rpc_client_destroy(c->gateway_client);
    c->gateway_client = NULL;
    for (int s = 0; s < CLUSTER_SERVICES; s++)
        for (int i = 0; i < CLUSTER_REPLICAS; i++) {
            rpc_client_destroy(c->client[s][i]);
            c->client[s][i] = NULL;
        }
}

void cluster_stack_reconnect_clients(cluster_stack *c) {
    disconnect_clients(c);
    connect_clients(c);
}

void cluster_stack_start(cluster_stack *c, const char *name) {
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s/%s", fixture_dir(), name);
    mkdir(c->dir, 0755);
    cr_assert(harness_keys_create(c->dir));
    cr_assert(nats_cluster_start(c->dir, &c->nats), "the NATS cluster did not start (%s)", c->dir);
    cr_assert(harness_redis_start(c->dir, 0, &c->redis), "redis-server did not start");
    /* The catalog replicas' addresses are in lending's settings: every port is chosen before
     * any replica starts, all different (a port free now is not taken until its replica binds
     * it, so a later choice could pick it again). */
    int chosen[2 * CLUSTER_SERVICES * CLUSTER_REPLICAS];
    harness_free_ports(chosen, (int)(sizeof chosen / sizeof chosen[0]));
    for (int s = 0, k = 0; s < CLUSTER_SERVICES; s++)
        for (int i = 0; i < CLUSTER_REPLICAS; i++, k += 2) {
            c->replica[s][i].port = chosen[k];
            c->replica[s][i].metrics_port = chosen[k + 1];
            snprintf(c->replica[s][i].address, sizeof c->replica[s][i].address, "127.0.0.1:%d",
                     c->replica[s][i].port);
        }
    for (int s = 0; s < CLUSTER_SERVICES; s++)
        for (int i = 0; i < CLUSTER_REPLICAS; i++)
            start_replica(c, (cluster_service)s, i, c->replica[s][i].port, c->replica[s][i].metrics_port);
    char ports[CLUSTER_SERVICES][32];
    for (int s = 0; s < CLUSTER_SERVICES; s++)
        snprintf(ports[s], sizeof ports[s], "%d,%d", c->replica[s][0].port, c->replica[s][1].port);
    cr_assert(harness_gateway_start_replicas(c->dir, ports[CLUSTER_CATALOG], ports[CLUSTER_LENDING],
                                             ports[CLUSTER_MYPAGE], &c->gateway),
              "the gateway did not start: %s", c->gateway.log_path);
    connect_clients(c);
}

void cluster_stack_kill_replica(cluster_stack *c, cluster_service service, int replica) {
    harness_process_stop(&c->replica[service][replica], SIGKILL, 5000);
}

void cluster_stack_restart_replica(cluster_stack *c, cluster_service service, int replica) {
    harness_process *p = &c->replica[service][replica];
    int port = p->port, metrics_port = p->metrics_port;
    start_replica(c, service, replica, port, metrics_port);
}

void cluster_stack_stop(cluster_stack *c) {
    disconnect_clients(c);
    for (int i = 0; i < NATS_CLUSTER_NODES; i++)
        if (c->nats.node[i].pid > 0)
            kill(c->nats.node[i].pid, SIGCONT); /* a test may have paused one */
    int exits[CLUSTER_SERVICES][CLUSTER_REPLICAS] = {{0}};
    for (int s = CLUSTER_SERVICES - 1; s >= 0; s--)
        for (int i = 0; i < CLUSTER_REPLICAS; i++)
            if (c->replica[s][i].pid > 0)
                exits[s][i] = harness_process_stop(&c->replica[s][i], SIGTERM, 15000);
    harness_process_stop(&c->gateway, SIGTERM, 5000);
    harness_process_stop(&c->redis, SIGTERM, 5000);
    nats_cluster_stop(&c->nats);
    for (int s = 0; s < CLUSTER_SERVICES; s++)
        for (int i = 0; i < CLUSTER_REPLICAS; i++)
            cr_assert_eq(exits[s][i], 0, "%s-%d exited with %d; log: %s", service_names[s], i + 1,
                         exits[s][i], c->replica[s][i].log_path);
}

const char *cluster_stack_admin(cluster_stack *c) {
    return harness_bearer(mem, c->dir, "admin", true);
}

Book *cluster_stack_register(cluster_stack *c, const char *title, int copies) {
    return fixture_register_on(c->gateway_client, cluster_stack_admin(c), title, copies);
}

int cluster_stack_available(cluster_stack *c, int replica, const char *book_id) {
    Library__Catalog__V1__GetBookRequest request = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    request.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    cr_assert_eq(harness_call(c->client[CLUSTER_CATALOG][replica], CATALOG "GetBook", &request.base,
                              &library__catalog__v1__book__descriptor, mem, cluster_stack_admin(c),
                              &response, &st),
                 STATUS_OK, "GetBook on catalog-%d: %s", replica + 1, st.message);
    return ((Book *)response)->available_copies;
}

Library__Lending__V1__Loan *cluster_stack_settled_loan(cluster_stack *c, const char *bearer,
                                                       const char *loan_id) {
    Library__Lending__V1__GetLoanRequest request = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    int64_t until = harness_now_ms() + 10000;
    for (;;) {
        ProtobufCMessage *response = NULL;
        status st;
        status_code code = harness_call(c->gateway_client, "/library.lending.v1.LendingService/GetLoan",
                                        &request.base, &library__lending__v1__loan__descriptor, mem,
                                        bearer, &response, &st);
        cr_assert_eq(code, STATUS_OK, "GetLoan %s: %s %s", loan_id, status_code_name(code), st.message);
        Library__Lending__V1__Loan *loan = (Library__Lending__V1__Loan *)response;
        if (loan->status != LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING ||
            harness_now_ms() > until)
            return loan;
        harness_sleep_ms(50);
    }
}

bool cluster_stack_both_replicas_served(cluster_stack *c, const char *service, const char *method) {
    int s = 0;
    while (s < CLUSTER_SERVICES && strcmp(service_names[s], service) != 0)
        s++;
    cr_assert_lt(s, CLUSTER_SERVICES, "no service %s", service);
    char series[256];
    snprintf(series, sizeof series,
             "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"%s\",grpc_method=\"%s\",grpc_code=\"OK\"}",
             grpc_services[s], method);
    for (int i = 0; i < CLUSTER_REPLICAS; i++) {
        char *body = harness_scrape(mem, c->replica[s][i].metrics_port);
        if (body == NULL || harness_sample(body, series) < 1)
            return false;
    }
    return true;
}
