/* nats_cluster.h - a three-node JetStream cluster on loopback for the cluster suite: each
 * node's routes to the others pass through test proxies, so one node can be cut off from the
 * other two (a network partition) while clients still reach every node; nodes can be killed
 * and started again on the same ports and store. */
#ifndef TESTS_NATS_CLUSTER_H
#define TESTS_NATS_CLUSTER_H

#include <stdbool.h>

#include "harness.h"
#include "proxy.h"

enum { NATS_CLUSTER_NODES = 3 };

typedef struct nats_cluster {
    char dir[512];
    harness_process node[NATS_CLUSTER_NODES]; /* pid 0 while a node is down */
    int route_port[NATS_CLUSTER_NODES];       /* where each node listens for routes */
    int monitor_port[NATS_CLUSTER_NODES];     /* each node's HTTP monitoring */
    /* link[i]: the proxy node i's route to node i + 1 (the last node's to the first) passes
     * through; a ring, so every pair has exactly one route and one proxy */
    test_proxy *link[NATS_CLUSTER_NODES];
    char urls[320]; /* every node's client URL, comma-separated, as the services take them */
} nats_cluster;

/* Starts the three nodes (names n1..n3, stores under dir/nats-1..3) and waits until
 * JetStream has a meta leader and answers. false (and everything stopped) on failure. */
bool nats_cluster_start(const char *dir, nats_cluster *out);
/* Starts node i (0-based) again after it was stopped, on its ports and store. */
bool nats_cluster_node_start(nats_cluster *cluster, int node);
/* Cuts (true) or heals (false) every route of node i: it keeps its clients, loses its peers. */
void nats_cluster_cut(nats_cluster *cluster, int node, bool cut);
/* The node that leads stream `stream` (0-based), or -1 when none does (or NATS cannot say). */
int nats_cluster_stream_leader(nats_cluster *cluster, const char *stream);
/* Asks the leader of stream `stream` to step down while node `node` leads it, until another
 * node does (at most timeout_ms); false when node still leads it or nobody does. */
bool nats_cluster_move_leader_off(nats_cluster *cluster, const char *stream, int node, int64_t timeout_ms);
/* Waits until every node is up and stream `stream` has a leader and all its replicas current,
 * at most timeout_ms. */
bool nats_cluster_wait_stream_healthy(nats_cluster *cluster, const char *stream, int64_t timeout_ms);
void nats_cluster_stop(nats_cluster *cluster);

#endif
