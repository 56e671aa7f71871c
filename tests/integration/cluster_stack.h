/* cluster_stack.h - the shipped shape on one machine for the cluster suite: a three-node
 * JetStream cluster (nats_cluster.h), redis-server, two replicas each of catalog, lending and
 * mypage (NATS_REPLICAS=3, all three NATS URLs; lending reaches both catalog replicas), and
 * the gateway spreading every route over both replicas. All under fixture_dir()/name. */
#ifndef TESTS_CLUSTER_STACK_H
#define TESTS_CLUSTER_STACK_H

#include "library/lending/v1/lending.pb-c.h"
#include "nats_cluster.h"
#include "stack_fixture.h"

enum { CLUSTER_REPLICAS = 2 };

typedef enum cluster_service { CLUSTER_CATALOG, CLUSTER_LENDING, CLUSTER_MYPAGE, CLUSTER_SERVICES } cluster_service;

typedef struct cluster_stack {
    char dir[512];
    nats_cluster nats;
    harness_process redis, gateway;
    harness_process replica[CLUSTER_SERVICES][CLUSTER_REPLICAS];
    rpc_client *gateway_client;                      /* calls as a client makes them */
    rpc_client *client[CLUSTER_SERVICES][CLUSTER_REPLICAS]; /* straight to one replica */
} cluster_stack;

void cluster_stack_start(cluster_stack *c, const char *name);
/* Stops everything; asserts that every replica still running exits 0 on SIGTERM. */
void cluster_stack_stop(cluster_stack *c);

/* kill -9 of one replica, and its start again on the same ports (a kubelet's restart). */
void cluster_stack_kill_replica(cluster_stack *c, cluster_service service, int replica);
void cluster_stack_restart_replica(cluster_stack *c, cluster_service service, int replica);
/* Fresh clients to every replica and the gateway: old ones may sit in a reconnect backoff. */
void cluster_stack_reconnect_clients(cluster_stack *c);

const char *cluster_stack_admin(cluster_stack *c);
/* Registers a book through the gateway as admin and asserts success. */
Book *cluster_stack_register(cluster_stack *c, const char *title, int copies);
/* GetBook on one catalog replica: its available copies (asserts the call succeeds). */
int cluster_stack_available(cluster_stack *c, int replica, const char *book_id);
/* GetLoan through the gateway until the loan is no longer PENDING (10 s at most). */
Library__Lending__V1__Loan *cluster_stack_settled_loan(cluster_stack *c, const char *bearer,
                                                       const char *loan_id);
/* true when each replica of service ("catalog", "lending", "mypage") counted at least one
 * `method` answered OK in its metrics. */
bool cluster_stack_both_replicas_served(cluster_stack *c, const char *service, const char *method);

#endif
