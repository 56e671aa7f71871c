/* nats_cluster.c - three nats-server processes as one JetStream cluster, routes through
 * cuttable proxies. */
#include "nats_cluster.h"

#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Writes node i's configuration. Node i solicits one route, to the next node, through
 * link[i] (every node must configure a route for JetStream to start in cluster mode): every
 * route connection passes through the one proxy of its pair. Each node advertises a route
 * address where nothing listens, so the cluster's gossip cannot make a node dial another one
 * past the proxies (a route learned by gossip is tried once and dropped; the configured ones
 * are retried forever). */
static bool write_config(const nats_cluster *c, int i, char *path, size_t size) {
    snprintf(path, size, "%s/nats-%d.conf", c->dir, i + 1);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return false;
    fprintf(f,
            "server_name: n%d\n"
            "listen: 127.0.0.1:%d\n"
            "http: 127.0.0.1:%d\n"
            "jetstream { store_dir: \"%s/nats-%d\" }\n"
            "cluster {\n"
            "  name: library\n"
            "  listen: 127.0.0.1:%d\n"
            "  advertise: \"127.0.0.1:1\"\n"
            "  routes: [\n",
            i + 1, c->node[i].port, c->monitor_port[i], c->dir, i + 1, c->route_port[i]);
    fprintf(f, "    nats://127.0.0.1:%d\n  ]\n}\n", test_proxy_port(c->link[i]));
    fprintf(f, "include nats-users.conf\n%s", harness_nats_tls_config());
    return fclose(f) == 0 && harness_nats_users_file(c->dir);
}

bool nats_cluster_node_start(nats_cluster *c, int i) {
    char config[600];
    if (!write_config(c, i, config, sizeof config))
        return false;
    char log_path[sizeof c->node[i].log_path];
    snprintf(log_path, sizeof log_path, "%.490s/nats-%d.log", c->dir, i + 1);
    memcpy(c->node[i].log_path, log_path, sizeof log_path);
    char *argv[] = {"nats-server", "-c", config, NULL};
    c->node[i].pid = harness_spawn(argv, harness_nats_server_env(), c->node[i].log_path);
    return c->node[i].pid > 0 && harness_wait_port(c->node[i].port, 10000);
}

/* JetStream answers account requests once the cluster has elected its meta leader. */
static bool jetstream_ready(const char *urls, int64_t timeout_ms) {
    int64_t until = harness_now_ms() + timeout_ms;
    bool ready = false;
    while (!ready && harness_now_ms() < until) {
        natsConnection *connection = NULL;
        jsCtx *js = NULL;
        jsAccountInfo *info = NULL;
        if (harness_nats_connect(&connection, urls) == NATS_OK &&
            natsConnection_JetStream(&js, connection, NULL) == NATS_OK &&
            js_GetAccountInfo(&info, js, NULL, NULL) == NATS_OK)
            ready = true;
        jsAccountInfo_Destroy(info);
        jsCtx_Destroy(js);
        natsConnection_Destroy(connection);
        if (!ready)
            harness_sleep_ms(200);
    }
    return ready;
}

bool nats_cluster_start(const char *dir, nats_cluster *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->dir, sizeof out->dir, "%s", dir);
    size_t used = 0;
    int ports[3 * NATS_CLUSTER_NODES];
    harness_free_ports(ports, 3 * NATS_CLUSTER_NODES);
    for (int i = 0; i < NATS_CLUSTER_NODES; i++) {
        out->node[i].port = ports[3 * i];
        out->route_port[i] = ports[3 * i + 1];
        out->monitor_port[i] = ports[3 * i + 2];
        snprintf(out->node[i].address, sizeof out->node[i].address, "127.0.0.1:%d", out->node[i].port);
        snprintf(out->node[i].url, sizeof out->node[i].url, "nats://127.0.0.1:%d", out->node[i].port);
        used += (size_t)snprintf(out->urls + used, sizeof out->urls - used, "%s%s", i ? "," : "",
                                 out->node[i].url);
    }
    bool ok = true;
    for (int i = 0; i < NATS_CLUSTER_NODES; i++)
        ok = ok && (out->link[i] = test_proxy_start(out->route_port[(i + 1) % NATS_CLUSTER_NODES])) != NULL;
    for (int i = 0; ok && i < NATS_CLUSTER_NODES; i++)
        ok = nats_cluster_node_start(out, i);
    if (ok && jetstream_ready(out->urls, 30000))
        return true;
    fprintf(stderr, "nats cluster: did not start; logs in %s\n", dir);
    nats_cluster_stop(out);
    return false;
}

void nats_cluster_cut(nats_cluster *c, int node, bool cut) {
    test_proxy_cut(c->link[node], cut);                                               /* its own */
    test_proxy_cut(c->link[(node + NATS_CLUSTER_NODES - 1) % NATS_CLUSTER_NODES], cut); /* to it */
}

/* Asks for the stream's cluster state; the caller destroys *info. */
static bool stream_info(nats_cluster *c, const char *stream, jsStreamInfo **info) {
    natsConnection *connection = NULL;
    jsCtx *js = NULL;
    jsOptions js_options;
    jsOptions_Init(&js_options);
    js_options.Wait = 2000;
    bool ok = harness_nats_connect(&connection, c->urls) == NATS_OK && /* splits the list */
              natsConnection_JetStream(&js, connection, &js_options) == NATS_OK &&
              js_GetStreamInfo(info, js, stream, NULL, NULL) == NATS_OK;
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
    return ok;
}

static int node_of(const char *server_name) {
    int n = 0;
    if (server_name != NULL && sscanf(server_name, "n%d", &n) == 1 && n >= 1 && n <= NATS_CLUSTER_NODES)
        return n - 1;
    return -1;
}

int nats_cluster_stream_leader(nats_cluster *c, const char *stream) {
    jsStreamInfo *info = NULL;
    int leader = -1;
    if (stream_info(c, stream, &info) && info->Cluster != NULL)
        leader = node_of(info->Cluster->Leader);
    jsStreamInfo_Destroy(info);
    return leader;
}

bool nats_cluster_move_leader_off(nats_cluster *c, const char *stream, int node, int64_t timeout_ms) {
    int64_t until = harness_now_ms() + timeout_ms;
    int leader = nats_cluster_stream_leader(c, stream);
    while ((leader == node || leader < 0) && harness_now_ms() < until) {
        if (leader == node) {
            natsConnection *connection = NULL;
            natsMsg *reply = NULL;
            char subject[200];
            snprintf(subject, sizeof subject, "$JS.API.STREAM.LEADER.STEPDOWN.%s", stream);
            if (harness_nats_connect(&connection, c->urls) == NATS_OK)
                natsConnection_RequestString(&reply, connection, subject, "", 2000);
            natsMsg_Destroy(reply);
            natsConnection_Destroy(connection);
        }
        harness_sleep_ms(300);
        leader = nats_cluster_stream_leader(c, stream);
    }
    return leader >= 0 && leader != node;
}

bool nats_cluster_wait_stream_healthy(nats_cluster *c, const char *stream, int64_t timeout_ms) {
    int64_t until = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < until) {
        jsStreamInfo *info = NULL;
        bool healthy = stream_info(c, stream, &info) && info->Cluster != NULL &&
                       node_of(info->Cluster->Leader) >= 0 &&
                       info->Cluster->ReplicasLen == NATS_CLUSTER_NODES - 1;
        for (int i = 0; healthy && i < info->Cluster->ReplicasLen; i++)
            healthy = info->Cluster->Replicas[i]->Current && !info->Cluster->Replicas[i]->Offline;
        jsStreamInfo_Destroy(info);
        if (healthy)
            return true;
        harness_sleep_ms(200);
    }
    return false;
}

void nats_cluster_stop(nats_cluster *c) {
    for (int i = 0; i < NATS_CLUSTER_NODES; i++)
        if (c->node[i].pid > 0)
            harness_process_stop(&c->node[i], SIGTERM, 10000);
    for (int i = 0; i < NATS_CLUSTER_NODES; i++) {
        test_proxy_stop(c->link[i]);
        c->link[i] = NULL;
    }
}
