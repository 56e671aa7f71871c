/* handlers.h - MypageService over gRPC: GetMypage from Redis only, and WatchMypage streams
 * that hear about changes from the projection (in any replica) over plain NATS. */
#ifndef MYPAGE_HANDLERS_H
#define MYPAGE_HANDLERS_H

#include <pthread.h>

#include "mypage_service.h"
#include "nats_connection.h"
#include "page_store.h"
#include "rpc_server.h"

typedef struct page_watcher page_watcher;

typedef struct mypage_handlers {
    page_store *store;
    nats_connection *connection;
    int max_watchers;
    int max_watchers_per_user; /* streams on one user's page */
    rpc_service service;
    /* the open WatchMypage streams */
    pthread_mutex_t lock;
    page_watcher *watchers;
    int watcher_count;
    nats_subscription *changes;
    /* This replica's own subject for "send every watcher its page again": after a NATS
     * reconnect, the changes announced meanwhile were never heard here. */
    nats_subscription *resends;
    char resend_subject[64];
} mypage_handlers;

/* Sets up the service (state = handlers) and subscribes to page changes; store and
 * the watcher limits must be set first. */
status_code mypage_handlers_init(mypage_handlers *handlers, nats_connection *connection, status *st);
/* Stops listening for changes; call after the server has drained. */
void mypage_handlers_destroy(mypage_handlers *handlers);

#endif
