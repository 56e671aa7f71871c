/* health.c - grpc.health.v1.Health: a table of service statuses and the streams that
 * watch them. Watch sends the current status, then each change. */
#include "health.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"

enum { HEALTH_MAX_ENTRIES = 32, HEALTH_NAME_MAX = 200 };

typedef struct health_entry {
    char name[HEALTH_NAME_MAX];
    bool serving;
} health_entry;

typedef struct health_watcher {
    struct health_watcher *next;
    health *owner;
    rpc_stream *stream;
    char service[HEALTH_NAME_MAX];
    int last_sent; /* the Grpc__Health__V1__HealthCheckResponse__ServingStatus last sent */
} health_watcher;

struct health {
    pthread_mutex_t lock;
    health_entry entries[HEALTH_MAX_ENTRIES];
    size_t entry_count;
    char down_dependencies[HEALTH_MAX_ENTRIES][64];
    size_t down_count;
    bool shut_down;
    health_watcher *watchers;
    rpc_method methods[2];
    rpc_service service;
};

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

static health_entry *entry_find(health *h, const char *name) {
    for (size_t i = 0; i < h->entry_count; i++)
        if (strcmp(h->entries[i].name, name) == 0)
            return &h->entries[i];
    return NULL;
}

static serving_status effective_locked(health *h, const char *name) {
    if (strcmp(name, HEALTH_LIVENESS) == 0)
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    health_entry *entry = entry_find(h, name);
    if (entry == NULL)
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    if (entry->serving && !h->shut_down && h->down_count == 0)
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static void watcher_send(health_watcher *watcher, serving_status value) {
    Grpc__Health__V1__HealthCheckResponse response = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    response.status = value;
    watcher->last_sent = (int)value;
    rpc_stream_send(watcher->stream, &response.base, NULL);
}

static void notify_locked(health *h) {
    for (health_watcher *w = h->watchers; w != NULL; w = w->next) {
        serving_status now = effective_locked(h, w->service);
        if ((int)now != w->last_sent)
            watcher_send(w, now);
    }
}

void health_set(health *h, const char *service, bool serving) {
    pthread_mutex_lock(&h->lock);
    health_entry *entry = entry_find(h, service);
    if (entry == NULL && h->entry_count < HEALTH_MAX_ENTRIES) {
        entry = &h->entries[h->entry_count++];
        snprintf(entry->name, sizeof entry->name, "%s", service);
    }
    if (entry != NULL)
        entry->serving = serving;
    notify_locked(h);
    pthread_mutex_unlock(&h->lock);
}

void health_set_dependency(health *h, const char *dependency, bool up) {
    pthread_mutex_lock(&h->lock);
    size_t found = h->down_count;
    for (size_t i = 0; i < h->down_count; i++)
        if (strcmp(h->down_dependencies[i], dependency) == 0)
            found = i;
    if (!up && found == h->down_count && h->down_count < HEALTH_MAX_ENTRIES)
        snprintf(h->down_dependencies[h->down_count++], 64, "%s", dependency);
    if (up && found < h->down_count) {
        memmove(h->down_dependencies[found], h->down_dependencies[h->down_count - 1], 64);
        h->down_count--;
    }
    notify_locked(h);
    pthread_mutex_unlock(&h->lock);
}

int health_check(health *h, const char *service) {
    pthread_mutex_lock(&h->lock);
    serving_status value = effective_locked(h, service);
    pthread_mutex_unlock(&h->lock);
    if (value == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN)
        return -1;
    return value == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

void health_shutdown(health *h) {
    pthread_mutex_lock(&h->lock);
    h->shut_down = true;
    notify_locked(h);
    pthread_mutex_unlock(&h->lock);
}

static status_code check(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                         ProtobufCMessage **response, status *st) {
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)request;
    const char *name = req->service ? req->service : "";
    health *h = state;
    pthread_mutex_lock(&h->lock);
    serving_status value = effective_locked(h, name);
    pthread_mutex_unlock(&h->lock);
    if (value == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN)
        return status_set(st, STATUS_NOT_FOUND, "UNKNOWN_SERVICE", "unknown service \"%.100s\"",
                          name);
    Grpc__Health__V1__HealthCheckResponse *out =
        (void *)arena_new_message(rpc_context_arena(ctx), &grpc__health__v1__health_check_response__descriptor);
    if (out == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    out->status = value;
    *response = &out->base;
    return STATUS_OK;
}

static void watcher_closed(void *arg) {
    health_watcher *watcher = arg;
    health *h = watcher->owner;
    pthread_mutex_lock(&h->lock);
    for (health_watcher **link = &h->watchers; *link != NULL; link = &(*link)->next) {
        if (*link == watcher) {
            *link = watcher->next;
            break;
        }
    }
    pthread_mutex_unlock(&h->lock);
    rpc_stream_release(watcher->stream);
    free(watcher);
}

static status_code watch(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                         rpc_stream *stream, status *st) {
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)request;
    health *h = state;
    health_watcher *watcher = calloc(1, sizeof *watcher);
    if (watcher == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    watcher->owner = h;
    watcher->stream = stream;
    snprintf(watcher->service, sizeof watcher->service, "%s", req->service ? req->service : "");
    rpc_stream_retain(stream);
    pthread_mutex_lock(&h->lock);
    watcher->next = h->watchers;
    h->watchers = watcher;
    watcher_send(watcher, effective_locked(h, watcher->service));
    pthread_mutex_unlock(&h->lock);
    rpc_stream_on_close(stream, watcher_closed, watcher);
    return STATUS_OK;
}

status_code health_create(health **out, status *st) {
    health *h = calloc(1, sizeof *h);
    if (h == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    pthread_mutex_init(&h->lock, NULL);
    h->methods[0] = (rpc_method)RPC_UNARY_NONBLOCKING("Check", grpc__health__v1__health_check_request,
                                          grpc__health__v1__health_check_response, check,
                                          RPC_ACCESS_PUBLIC);
    h->methods[1] = (rpc_method)RPC_SERVER_STREAM("Watch", grpc__health__v1__health_check_request,
                                                  grpc__health__v1__health_check_response, watch,
                                                  RPC_ACCESS_PUBLIC);
    h->service = (rpc_service){.name = "grpc.health.v1.Health", .methods = h->methods,
                               .method_count = 2, .state = h};
    *out = h;
    return STATUS_OK;
}

const rpc_service *health_service(health *h) {
    return &h->service;
}

void health_destroy(health *h) {
    if (h == NULL)
        return;
    pthread_mutex_destroy(&h->lock);
    free(h);
}
