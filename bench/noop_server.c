/* noop_server.c - the benchmark's reference servers: one unary no-op method answered
 *   raw        directly on the gRPC C core, on the completion-queue threads (R1: what the
 *              core can do on this machine), or
 *   framework  through libshared's rpc_server, public and with a bearer token (R2: what the
 *              framework costs on top).
 *
 *   bench_noop_server raw|framework PORT [JWT_PUBLIC_KEY_FILE]
 *
 * Prints "listening on PORT" once it serves; stops on SIGTERM or SIGINT. */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "noop.pb-c.h"
#include "rpc_server.h"
#include "service.h"

enum {
    RAW_POLLER_THREADS = 2,   /* as many as rpc_server's default */
    RAW_REQUESTS_POSTED = 64, /* calls kept requested per completion queue */
};

#define NOOP_METHOD "/library.bench.v1.NoopService/Noop"

/* --- raw: the C core alone ----------------------------------------------------------- */

typedef enum raw_tag_kind { RAW_REQUESTED, RAW_REPLIED } raw_tag_kind;

typedef struct raw_call {
    raw_tag_kind kind;
    grpc_server *server;
    void *method;
    grpc_completion_queue *cq;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array metadata;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *reply;
    int cancelled;
} raw_call;

static void raw_post(grpc_server *server, void *method, grpc_completion_queue *cq) {
    raw_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->kind = RAW_REQUESTED;
    c->server = server;
    c->method = method;
    c->cq = cq;
    grpc_metadata_array_init(&c->metadata);
    if (grpc_server_request_registered_call(server, method, &c->call, &c->deadline, &c->metadata,
                                            &c->payload, cq, cq, c) != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&c->metadata);
        free(c);
    }
}

static void raw_free(raw_call *c) {
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply)
        grpc_byte_buffer_destroy(c->reply);
    grpc_metadata_array_destroy(&c->metadata);
    if (c->call)
        grpc_call_unref(c->call);
    free(c);
}

/* Answers with an empty NoopResponse and OK in one batch, like rpc_server does. */
static void raw_reply(raw_call *c) {
    c->kind = RAW_REPLIED;
    grpc_slice empty = grpc_empty_slice();
    c->reply = grpc_raw_byte_buffer_create(&empty, 1);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->reply;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, ops, 4, c, NULL) != GRPC_CALL_OK)
        raw_free(c);
}

static void *raw_poller(void *arg) {
    grpc_completion_queue *cq = arg;
    for (;;) {
        grpc_event event = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (event.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (event.type != GRPC_OP_COMPLETE || event.tag == NULL)
            continue;
        raw_call *c = event.tag;
        if (c->kind == RAW_REQUESTED) {
            if (!event.success) { /* shutting down */
                raw_free(c);
                continue;
            }
            raw_post(c->server, c->method, cq);
            raw_reply(c);
        } else {
            raw_free(c);
        }
    }
}

static int run_raw(int port) {
    grpc_init();
    grpc_server *server = grpc_server_create(NULL, NULL);
    void *method = grpc_server_register_method(server, NOOP_METHOD, NULL,
                                               GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_completion_queue *cqs[RAW_POLLER_THREADS];
    for (int i = 0; i < RAW_POLLER_THREADS; i++) {
        cqs[i] = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(server, cqs[i], NULL);
    }
    char address[32];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    grpc_server_credentials *credentials = grpc_insecure_server_credentials_create();
    int bound = grpc_server_add_http2_port(server, address, credentials);
    grpc_server_credentials_release(credentials);
    if (bound == 0) {
        fprintf(stderr, "bench_noop_server: cannot listen on %s\n", address);
        return 1;
    }
    grpc_server_start(server);
    pthread_t threads[RAW_POLLER_THREADS];
    for (int i = 0; i < RAW_POLLER_THREADS; i++) {
        for (int k = 0; k < RAW_REQUESTS_POSTED; k++)
            raw_post(server, method, cqs[i]);
        pthread_create(&threads[i], NULL, raw_poller, cqs[i]);
    }
    printf("listening on %d\n", bound);
    fflush(stdout);

    service_wait_for_signal(NULL, NULL);

    grpc_completion_queue *shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
    int shutdown_tag = 0;
    grpc_server_shutdown_and_notify(server, shutdown_cq, &shutdown_tag);
    grpc_server_cancel_all_calls(server);
    grpc_completion_queue_pluck(shutdown_cq, &shutdown_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_server_destroy(server);
    for (int i = 0; i < RAW_POLLER_THREADS; i++)
        grpc_completion_queue_shutdown(cqs[i]);
    for (int i = 0; i < RAW_POLLER_THREADS; i++) {
        pthread_join(threads[i], NULL);
        grpc_completion_queue_destroy(cqs[i]);
    }
    grpc_completion_queue_shutdown(shutdown_cq);
    grpc_completion_queue_destroy(shutdown_cq);
    grpc_shutdown();
    return 0;
}

/* --- framework: the same no-op as a libshared service ------------------------------ */

static status_code noop(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                        ProtobufCMessage **response, status *st) {
    (void)state;
    (void)request;
    (void)st;
    *response = arena_new_message(rpc_context_arena(ctx), &library__bench__v1__noop_response__descriptor);
    return *response ? STATUS_OK : STATUS_RESOURCE_EXHAUSTED;
}

static const rpc_method noop_methods[] = {
    RPC_UNARY_NONBLOCKING("Noop", library__bench__v1__noop_request, library__bench__v1__noop_response, noop,
              RPC_ACCESS_PUBLIC),
    RPC_UNARY_NONBLOCKING("NoopAuth", library__bench__v1__noop_request, library__bench__v1__noop_response, noop,
              RPC_ACCESS_USER),
};

static const rpc_service noop_service = {
    .name = "library.bench.v1.NoopService",
    .methods = noop_methods,
    .method_count = sizeof noop_methods / sizeof noop_methods[0],
};

static int run_framework(int port, const char *key_file) {
    status st;
    status_clear(&st);
    log_init("bench-noop", LOG_LEVEL_WARN);
    auth_verifier *verifier = NULL;
    if (auth_verifier_create(key_file, "library", "library-api", 30, &verifier, &st) != STATUS_OK) {
        fprintf(stderr, "bench_noop_server: %s\n", st.message);
        return 1;
    }
    char address[32];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    /* The services' defaults, but an in-flight limit the benchmark never reaches. */
    rpc_server_options options = {
        .listen_address = address,
        .error_domain = "bench.library",
        .verifier = verifier,
        .max_in_flight = 100000,
    };
    rpc_server *server = NULL;
    int exit_status = 1;
    if (rpc_server_create(&options, &server, &st) == STATUS_OK &&
        rpc_server_add_service(server, &noop_service, &st) == STATUS_OK &&
        rpc_server_start(server, &st) == STATUS_OK) {
        printf("listening on %d\n", rpc_server_port(server));
        fflush(stdout);
        service_wait_for_signal(NULL, NULL);
        exit_status = 0;
    } else {
        fprintf(stderr, "bench_noop_server: %s\n", st.message);
    }
    rpc_server_destroy(server);
    auth_verifier_destroy(verifier);
    return exit_status;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "raw") != 0 && strcmp(argv[1], "framework") != 0) ||
        (strcmp(argv[1], "framework") == 0 && argc < 4)) {
        fprintf(stderr, "usage: %s raw PORT | framework PORT JWT_PUBLIC_KEY_FILE\n", argv[0]);
        return 2;
    }
    service_block_signals();
    int port = atoi(argv[2]);
    return strcmp(argv[1], "raw") == 0 ? run_raw(port) : run_framework(port, argv[3]);
}
