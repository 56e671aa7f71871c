/* test_wire.c - bad input over the wire, through the nginx gateway and straight to each
 * service: oversize messages, a wrong content-type, truncated and malformed gRPC frames
 * (sent with curl), thousands of calls and streams opened at once, and a WatchMypage client
 * that never reads. Each time the service answers or refuses with a proper gRPC status, in
 * time, does not crash, and its health is SERVING afterwards. (Malformed protobuf and the
 * 2 MiB request to the catalog are in test_framework.c.) */
#include <criterion/criterion.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "events.h"
#include "grpc/health/v1/health.pb-c.h"
#include "library/lending/v1/lending.pb-c.h"
#include "library/mypage/v1/mypage.pb-c.h"
#include "nats_connection.h"
#include "stack_fixture.h"
#include "text.h"

extern char **environ;

#define LENDING "/library.lending.v1.LendingService/"
#define MYPAGE "/library.mypage.v1.MypageService/"

static harness_process gateway;
static rpc_client *through_gateway;

static void wire_setup(void) {
    fixture_setup();
    char id[13];
    text_random_hex(id, 6);
    fixture_gateway_start(arena_sprintf(mem, "gateway-%s", id), &gateway);
    cr_assert_eq(rpc_client_create(gateway.address, 10000, &through_gateway, NULL), STATUS_OK);
}

static void wire_teardown(void) {
    rpc_client_destroy(through_gateway);
    harness_process_stop(&gateway, SIGTERM, 5000);
    fixture_teardown();
}

TestSuite(wire, .init = wire_setup, .fini = wire_teardown, .timeout = 120);

static const char *unique(const char *prefix) {
    char id[13];
    text_random_hex(id, 6);
    return arena_sprintf(mem, "%s-%s", prefix, id);
}

static void assert_serving(const char *address) {
    rpc_client *c = NULL;
    cr_assert_eq(rpc_client_create(address, 5000, &c, NULL), STATUS_OK);
    Grpc__Health__V1__HealthCheckRequest request = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(c, "/grpc.health.v1.Health/Check", &request.base,
                                    &grpc__health__v1__health_check_response__descriptor, mem, NULL,
                                    &response, &st);
    rpc_client_destroy(c);
    cr_assert_eq(code, STATUS_OK, "%s: health Check got %s %s", address, status_code_name(code), st.message);
    cr_assert_eq(((Grpc__Health__V1__HealthCheckResponse *)response)->status,
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING, "%s is not SERVING",
                 address);
}

static void assert_all_serving(void) {
    assert_serving(fixture_catalog_address());
    assert_serving(fixture_lending_address());
    assert_serving(fixture_mypage_address());
    assert_serving(gateway.address);
}

/* --- raw HTTP/2 requests with curl -------------------------------------------------------- */

typedef struct curl_answer {
    int exit_code;
    int http_status;  /* of the :status line, 0: none */
    int grpc_status;  /* -1: no grpc-status header or trailer */
    const char *grpc_message;
    int64_t took_ms;
} curl_answer;

/* POSTs body to http://target/path over h2c (prior knowledge) with the given content-type and
 * te: trailers, and reads the :status and grpc-status from the response headers and trailers. */
static curl_answer curl_post(const char *target, const char *path, const char *content_type,
                             const uint8_t *body, size_t body_size, const char *bearer) {
    const char *file = arena_sprintf(mem, "%s/%s.body", fixture_dir(), unique("wire"));
    FILE *out = fopen(file, "wb");
    cr_assert_not_null(out);
    cr_assert_eq(fwrite(body, 1, body_size, out), body_size);
    fclose(out);
    const char *command = arena_sprintf(
        mem,
        "curl -sS -m 10 --http2-prior-knowledge -o /dev/null -D - -H 'te: trailers' -H 'grpc-timeout: 1S' "
        "-H 'content-type: %s' %s%s%s --data-binary @%s http://%s%s",
        content_type, bearer ? "-H 'authorization: " : "", bearer ? bearer : "", bearer ? "'" : "", file,
        target, path);
    curl_answer answer = {.grpc_status = -1, .grpc_message = ""};
    int64_t started = harness_now_ms();
    char *output = harness_command_output(mem, command, &answer.exit_code);
    answer.took_ms = harness_now_ms() - started;
    for (char *line = strtok(output, "\r\n"); line != NULL; line = strtok(NULL, "\r\n")) {
        if (strncmp(line, "HTTP/2 ", 7) == 0)
            answer.http_status = atoi(line + 7);
        else if (strncasecmp(line, "grpc-status:", 12) == 0)
            answer.grpc_status = atoi(line + 12);
        else if (strncasecmp(line, "grpc-message:", 13) == 0)
            answer.grpc_message = arena_strndup(mem, line + 13, strlen(line + 13));
    }
    return answer;
}

/* The framed request: a 5-byte gRPC prefix (flags, big-endian length) and the message. */
static uint8_t *frame(const ProtobufCMessage *message, size_t *size) {
    size_t packed = protobuf_c_message_get_packed_size(message);
    uint8_t *bytes = arena_alloc(mem, packed + 5);
    bytes[0] = 0;
    bytes[1] = (uint8_t)(packed >> 24);
    bytes[2] = (uint8_t)(packed >> 16);
    bytes[3] = (uint8_t)(packed >> 8);
    bytes[4] = (uint8_t)packed;
    protobuf_c_message_pack(message, bytes + 5);
    *size = packed + 5;
    return bytes;
}

typedef struct target {
    const char *name, *address;
} target;

static void targets(target out[4]) {
    out[0] = (target){"gateway", gateway.address};
    out[1] = (target){"catalog", fixture_catalog_address()};
    out[2] = (target){"lending", fixture_lending_address()};
    out[3] = (target){"mypage", fixture_mypage_address()};
}

/* One method per service, with a well-formed request for it, and what the method answers to
 * that request and to an empty request message. */
typedef struct probe {
    const char *service; /* the target that serves it directly */
    const char *path;
    uint8_t *framed;
    size_t framed_size;
    status_code as_sent;  /* GetBook/GetLoan of an unknown id; the caller's own page */
    status_code as_empty; /* no id is INVALID_ARGUMENT; an empty user_id is the caller's page */
} probe;

static size_t probes(probe out[4]) {
    Library__Catalog__V1__GetBookRequest get_book = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    get_book.book_id = "0123456789abcdef0123";
    Library__Lending__V1__GetLoanRequest get_loan = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    get_loan.loan_id = "0123456789abcdef0123";
    Library__Mypage__V1__GetMypageRequest get_page = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    Library__Mypage__V1__WatchMypageRequest watch = LIBRARY__MYPAGE__V1__WATCH_MYPAGE_REQUEST__INIT;
    /* an accepted WatchMypage streams until the 1 s grpc-timeout of curl_post ends it */
    out[0] = (probe){"catalog", CATALOG "GetBook", NULL, 0, STATUS_NOT_FOUND, STATUS_INVALID_ARGUMENT};
    out[0].framed = frame(&get_book.base, &out[0].framed_size);
    out[1] = (probe){"lending", LENDING "GetLoan", NULL, 0, STATUS_NOT_FOUND, STATUS_INVALID_ARGUMENT};
    out[1].framed = frame(&get_loan.base, &out[1].framed_size);
    out[2] = (probe){"mypage", MYPAGE "GetMypage", NULL, 0, STATUS_OK, STATUS_OK};
    out[2].framed = frame(&get_page.base, &out[2].framed_size);
    out[3] = (probe){"mypage", MYPAGE "WatchMypage", NULL, 0, STATUS_DEADLINE_EXCEEDED,
                     STATUS_DEADLINE_EXCEEDED};
    out[3].framed = frame(&watch.base, &out[3].framed_size);
    return 4;
}

/* What gRPC core 1.51 hands the service for a body, which decides the status. The core does
 * not pass the 5-byte prefix's flags on: a frame with reserved flag bits ends the stream's
 * reading with an error it keeps to itself, and the service gets an empty message - or,
 * depending on when the bytes arrive, none (seen both, through the gateway and directly);
 * a frame with the compressed flag and no grpc-encoding is handed on as if not compressed
 * (the gRPC spec wants INTERNAL for it, which no service can give: the flag never reaches
 * it). So each service answers what it would answer to the message it gets. */
typedef enum handed_on {
    HANDED_ON_NOTHING,          /* the frame never completes: INVALID_ARGUMENT, no message */
    HANDED_ON_UNDECODABLE,      /* bytes that are no protobuf message: INVALID_ARGUMENT */
    HANDED_ON_EMPTY,            /* an empty message: the probe's as_empty */
    HANDED_ON_EMPTY_OR_NOTHING, /* either of the two */
    HANDED_ON_PROBE,            /* the probe's own request: its as_sent */
} handed_on;

/* The grpc-message an INVALID_ARGUMENT for a missing or undecodable message carries. */
static const char *refusal_text(handed_on what) {
    if (what == HANDED_ON_NOTHING)
        return "the call carried no request message";
    return what == HANDED_ON_UNDECODABLE ? "is not a valid" : NULL;
}

/* Whether a is the answer the method owes a body of this kind. */
static bool answer_is_expected(const probe *p, handed_on what, const curl_answer *a) {
    const char *text = refusal_text(what);
    if (text != NULL)
        return a->grpc_status == STATUS_INVALID_ARGUMENT && strstr(a->grpc_message, text) != NULL;
    if (what == HANDED_ON_PROBE)
        return a->grpc_status == (int)p->as_sent;
    if (a->grpc_status == (int)p->as_empty)
        return true;
    return what == HANDED_ON_EMPTY_OR_NOTHING && a->grpc_status == STATUS_INVALID_ARGUMENT &&
           strstr(a->grpc_message, refusal_text(HANDED_ON_NOTHING)) != NULL;
}

static const char *const handed_on_names[] = {
    [HANDED_ON_NOTHING] = "INVALID_ARGUMENT (no request message)",
    [HANDED_ON_UNDECODABLE] = "INVALID_ARGUMENT (not a valid message)",
    [HANDED_ON_EMPTY] = "what an empty request gets",
    [HANDED_ON_EMPTY_OR_NOTHING] = "what an empty request gets, or INVALID_ARGUMENT (no request message)",
    [HANDED_ON_PROBE] = "what the well-formed request gets",
};

/* Sends body (NULL: each probe's own framed request) to each probe's method through the
 * gateway and straight to its service, with a 1 s deadline (grpc-timeout) so that an
 * accepted WatchMypage ends too; every answer must be the gRPC status the method owes the
 * message the core hands it, within 5 s. */
static int send_everywhere(const char *what, const char *content_type, const uint8_t *body, size_t size,
                           handed_on handed) {
    target t[4];
    targets(t);
    probe p[4];
    size_t probe_count = probes(p);
    const char *bearer = user_bearer("wire-reader");
    int sent = 0;
    for (size_t i = 0; i < probe_count; i++) {
        for (size_t k = 0; k < 4; k++) {
            if (k > 0 && strcmp(t[k].name, p[i].service) != 0)
                continue;
            curl_answer a = curl_post(t[k].address, p[i].path, content_type, body ? body : p[i].framed,
                                      body ? size : p[i].framed_size, bearer);
            cr_log_info("%-34s %-7s %-42s -> HTTP %d, grpc-status %d (%s)%s, %lld ms", what, t[k].name,
                        p[i].path, a.http_status, a.grpc_status,
                        a.grpc_status >= 0 ? status_code_name((status_code)a.grpc_status) : "none",
                        a.grpc_message, (long long)a.took_ms);
            cr_assert_eq(a.exit_code, 0, "%s to %s%s: curl failed (%d)", what, t[k].name, p[i].path,
                         a.exit_code);
            cr_assert_eq(a.http_status, 200, "%s to %s%s: HTTP %d, not a gRPC answer", what, t[k].name,
                         p[i].path, a.http_status);
            cr_assert(answer_is_expected(&p[i], handed, &a), "%s to %s%s: got %s (%s), expected %s", what,
                      t[k].name, p[i].path,
                      a.grpc_status >= 0 ? status_code_name((status_code)a.grpc_status) : "no grpc-status",
                      a.grpc_message, handed_on_names[handed]);
            cr_assert_lt(a.took_ms, harness_latency_bound_ms(5000), "%s to %s%s took %lld ms", what, t[k].name, p[i].path,
                         (long long)a.took_ms);
            sent++;
        }
    }
    return sent;
}

Test(wire, a_wrong_content_type_gets_a_grpc_status) {
    /* '{' is no valid flags byte: the core hands on an empty message or none */
    const char *json = "{\"bookId\":\"0123456789abcdef0123\"}";
    int sent = send_everywhere("JSON body, application/json", "application/json", (const uint8_t *)json,
                               strlen(json), HANDED_ON_EMPTY_OR_NOTHING);
    /* the core reads a well-framed message whatever the content-type says */
    sent += send_everywhere("gRPC body, application/json", "application/json", NULL, 0, HANDED_ON_PROBE);
    sent += send_everywhere("gRPC body, text/plain", "text/plain", NULL, 0, HANDED_ON_PROBE);
    cr_log_info("%d requests with a wrong content-type answered with the status each method owes", sent);
    assert_all_serving();
}

Test(wire, truncated_and_malformed_frames_get_a_grpc_status) {
    const uint8_t promises_more[] = {0, 0, 0, 0, 100, 0x0a, 0x02, 'a', 'b'}; /* 100 promised, 4 sent */
    const uint8_t promises_4gib[] = {0, 0xff, 0xff, 0xff, 0xff, 0x0a};     /* over any limit */
    const uint8_t cut_prefix[] = {0, 0};                                     /* 2 of 5 prefix bytes */
    const uint8_t compressed[] = {1, 0, 0, 0, 2, 0x0a, 0x00}; /* compressed, no grpc-encoding */
    /* gzip of {0x0a, 0x00}, flagged compressed, no grpc-encoding: handed on as it is */
    const uint8_t gzipped[] = {1,    0,    0,    0,    22,   0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
                               0x03, 0xe3, 0x62, 0x00, 0x00, 0x75, 0xfa, 0x36, 0xbb, 0x02, 0x00, 0x00, 0x00};
    const uint8_t bad_flags[] = {0x80, 0, 0, 0, 0};           /* reserved flag bits */
    const uint8_t two_messages[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0}; /* two for a unary method */
    const struct {
        const char *what;
        const uint8_t *bytes;
        size_t size;
        handed_on handed;
    } cases[] = {
        {"prefix promises 100, 4 sent", promises_more, sizeof promises_more, HANDED_ON_NOTHING},
        {"prefix promises 4 GiB, 1 sent", promises_4gib, sizeof promises_4gib, HANDED_ON_NOTHING},
        {"2 bytes of the 5-byte prefix", cut_prefix, sizeof cut_prefix, HANDED_ON_NOTHING},
        {"compressed flag, no grpc-encoding", compressed, sizeof compressed, HANDED_ON_EMPTY},
        {"gzip body, no grpc-encoding", gzipped, sizeof gzipped, HANDED_ON_UNDECODABLE},
        {"reserved flag bits set", bad_flags, sizeof bad_flags, HANDED_ON_EMPTY_OR_NOTHING},
        /* the first message is the request; the core drops the second */
        {"two messages for one request", two_messages, sizeof two_messages, HANDED_ON_EMPTY},
    };
    int sent = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        sent += send_everywhere(cases[i].what, "application/grpc", cases[i].bytes, cases[i].size,
                                cases[i].handed);
    cr_log_info("%d truncated or malformed requests answered with the status each method owes", sent);
    assert_all_serving();
}

/* --- oversize ------------------------------------------------------------------------------ */

/* A request whose one string field (field 1) is `length` bytes long. */
static uint8_t *message_with_field_1(size_t length, size_t *size) {
    uint8_t *bytes = arena_alloc(mem, length + 8);
    size_t n = 0;
    bytes[n++] = 0x0a;
    for (size_t v = length; ; v >>= 7) {
        bytes[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80)
            break;
    }
    memset(bytes + n, 'u', length);
    *size = n + length;
    return bytes;
}

static status_code raw_call(rpc_client *c, const char *method, const uint8_t *bytes, size_t size,
                            const char *bearer, status *st) {
    rpc_call_options options = {.timeout_ms = 10000, .authorization = bearer};
    uint8_t *reply = NULL;
    size_t reply_size = 0;
    status_clear(st);
    return rpc_client_call_raw(c, method, bytes, size, mem, &reply, &reply_size, &options, NULL, st);
}

Test(wire, oversize_messages_are_refused_everywhere) {
    const char *bearer = user_bearer("wire-reader");
    size_t size = 0;
    uint8_t *two_mib = message_with_field_1(2u << 20, &size);
    struct {
        const char *name;
        rpc_client *client;
    } via[] = {{"gateway", through_gateway}, {"lending", lending}, {"mypage", mypage}, {"catalog", client}};
    const char *methods[] = {CATALOG "GetBook", CATALOG "RegisterBook", LENDING "BorrowBook",
                             LENDING "ListLoans", MYPAGE "GetMypage"};
    const char *served_by[] = {"catalog", "catalog", "lending", "lending", "mypage"};
    for (size_t v = 0; v < 4; v++) {
        for (size_t m = 0; m < 5; m++) {
            if (v > 0 && strcmp(via[v].name, served_by[m]) != 0)
                continue;
            status st;
            status_code code = raw_call(via[v].client, methods[m], two_mib, size, bearer, &st);
            cr_log_info("2 MiB request   %-8s %-44s -> %s", via[v].name, methods[m], status_code_name(code));
            cr_assert_eq(code, STATUS_RESOURCE_EXHAUSTED, "2 MiB to %s via %s: %s %s", methods[m],
                         via[v].name, status_code_name(code), st.message);
        }
    }
    /* just under the 1 MiB limit, through the gateway: the message is read, the field refused */
    uint8_t *under = message_with_field_1((1u << 20) - 64, &size);
    status st;
    status_code code = raw_call(through_gateway, MYPAGE "GetMypage", under, size, bearer, &st);
    cr_log_info("1 MiB - 64 user_id via gateway GetMypage -> %s (%s)", status_code_name(code), st.message);
    cr_assert_eq(code, STATUS_INVALID_ARGUMENT, "%s %s", status_code_name(code), st.message);

    /* a server stream's request over the limit, through the gateway and straight to mypage */
    Library__Mypage__V1__WatchMypageRequest watch = LIBRARY__MYPAGE__V1__WATCH_MYPAGE_REQUEST__INIT;
    watch.user_id = arena_alloc(mem, (2u << 20) + 1);
    memset(watch.user_id, 'u', 2u << 20);
    watch.user_id[2u << 20] = '\0';
    rpc_client *stream_via[] = {through_gateway, mypage};
    for (size_t v = 0; v < 2; v++) {
        rpc_call_options options = {.timeout_ms = 10000, .authorization = admin_bearer()};
        rpc_client_stream *stream = NULL;
        code = rpc_client_stream_open(stream_via[v], MYPAGE "WatchMypage", &watch.base, &options, &stream, &st);
        ProtobufCMessage *message = NULL;
        if (code == STATUS_OK)
            code = rpc_client_stream_next(stream, &library__mypage__v1__mypage__descriptor, mem, 5000,
                                          &message, &st);
        rpc_client_stream_close(stream);
        cr_log_info("2 MiB WatchMypage %s -> %s", v == 0 ? "via gateway" : "direct", status_code_name(code));
        cr_assert_eq(code, STATUS_RESOURCE_EXHAUSTED, "%s %s", status_code_name(code), st.message);
    }
    assert_all_serving();
}

/* --- thousands at once ------------------------------------------------------------------------ */

/* Calls started at once with the core's async API, spread over `channels` connections. */
typedef struct burst {
    grpc_completion_queue *cq;
    grpc_channel *channels[8];
    int channel_count;
    struct burst_call {
        grpc_call *call;
        grpc_metadata_array initial, trailing;
        grpc_byte_buffer *reply;
        grpc_status_code code;
        grpc_slice details;
        bool first_done, status_done;
    } *calls;
    int count;
    int by_code[17];
    int first_messages; /* streams whose first message arrived */
    int over_watcher_limit; /* RESOURCE_EXHAUSTED from MAX_WATCHERS, not from shedding */
} burst;

/* SEND: each call sends its request and closes. WITHHOLD: each sends its headers only and
 * keeps its request back, as a client that stalls (or lost the rest of its frame) would. */
typedef enum { SEND, WITHHOLD } burst_request;

static void burst_start(burst *b, const char *address, int channels, int count, const char *method,
                        const ProtobufCMessage *request, const char *bearer, int64_t timeout_ms,
                        burst_request sending) {
    memset(b, 0, sizeof *b);
    grpc_init();
    b->cq = grpc_completion_queue_create_for_next(NULL);
    b->channel_count = channels;
    for (int i = 0; i < channels; i++) {
        /* a local subchannel pool gives each channel its own connection */
        grpc_arg args[] = {{.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1},
                           {.type = GRPC_ARG_INTEGER, .key = "grpc.channel_id", .value.integer = i}};
        grpc_channel_args channel_args = {.num_args = 2, .args = args};
        grpc_channel_credentials *credentials = grpc_insecure_credentials_create();
        b->channels[i] = grpc_channel_create(address, credentials, &channel_args);
        grpc_channel_credentials_release(credentials);
    }
    b->count = count;
    b->calls = calloc((size_t)count, sizeof *b->calls);
    size_t packed = protobuf_c_message_get_packed_size(request);
    grpc_slice payload = grpc_slice_malloc(packed);
    protobuf_c_message_pack(request, GRPC_SLICE_START_PTR(payload));
    grpc_metadata authorization = {.key = grpc_slice_from_static_string("authorization"),
                                   .value = grpc_slice_from_copied_string(bearer)};
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice path = grpc_slice_from_copied_string(method);
    for (int i = 0; i < count; i++) {
        struct burst_call *c = &b->calls[i];
        c->call = grpc_channel_create_call(b->channels[i % channels], NULL, GRPC_PROPAGATE_DEFAULTS, b->cq,
                                           path, NULL, deadline, NULL);
        grpc_metadata_array_init(&c->initial);
        grpc_metadata_array_init(&c->trailing);
        grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&payload, 1);
        grpc_op ops[6];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &authorization;
        size_t n = 1;
        if (sending == SEND) {
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n++].data.send_message.send_message = send;
            ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        }
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &c->initial;
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &c->reply;
        grpc_op status_op;
        memset(&status_op, 0, sizeof status_op);
        status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        status_op.data.recv_status_on_client.trailing_metadata = &c->trailing;
        status_op.data.recv_status_on_client.status = &c->code;
        status_op.data.recv_status_on_client.status_details = &c->details;
        /* tags: 2i the first batch, 2i+1 the status */
        cr_assert_eq(grpc_call_start_batch(c->call, ops, n, (void *)(intptr_t)(2 * i), NULL), GRPC_CALL_OK);
        cr_assert_eq(grpc_call_start_batch(c->call, &status_op, 1, (void *)(intptr_t)(2 * i + 1), NULL),
                     GRPC_CALL_OK);
        grpc_byte_buffer_destroy(send);
    }
    grpc_slice_unref(path);
    grpc_slice_unref(payload);
    grpc_slice_unref(authorization.value);
}

/* Waits until every call has its first message or its status (streams), or its status
 * (unary), for up to wait_ms; returns how many are still waiting. */
static int burst_wait(burst *b, bool streaming, int64_t wait_ms) {
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(wait_ms, GPR_TIMESPAN));
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < b->count; i++)
            if (streaming ? !(b->calls[i].first_done && (b->calls[i].reply || b->calls[i].status_done))
                          : !b->calls[i].status_done)
                waiting++;
        if (waiting == 0)
            return 0;
        grpc_event completed = grpc_completion_queue_next(b->cq, until, NULL);
        if (completed.type == GRPC_QUEUE_TIMEOUT)
            return waiting;
        intptr_t tag = (intptr_t)completed.tag;
        struct burst_call *c = &b->calls[tag / 2];
        if (tag % 2 == 0) {
            c->first_done = true;
            if (c->reply != NULL)
                b->first_messages++;
        } else {
            c->status_done = true;
            b->by_code[c->code >= 0 && c->code <= 16 ? c->code : 2]++;
            char *details = grpc_slice_to_c_string(c->details);
            if (c->code == GRPC_STATUS_RESOURCE_EXHAUSTED && strstr(details, "WatchMypage streams open"))
                b->over_watcher_limit++;
            gpr_free(details);
        }
    }
}

/* Cancels what is still open and frees everything. */
static void burst_end(burst *b) {
    for (int i = 0; i < b->count; i++)
        if (!b->calls[i].status_done)
            grpc_call_cancel(b->calls[i].call, NULL);
    int outstanding = 0;
    for (int i = 0; i < b->count; i++)
        outstanding += !b->calls[i].first_done + !b->calls[i].status_done;
    while (outstanding > 0) {
        grpc_event completed = grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (completed.type != GRPC_OP_COMPLETE)
            continue;
        intptr_t tag = (intptr_t)completed.tag;
        struct burst_call *c = &b->calls[tag / 2];
        if (tag % 2 == 0)
            c->first_done = true;
        else
            c->status_done = true;
        outstanding--;
    }
    for (int i = 0; i < b->count; i++) {
        struct burst_call *c = &b->calls[i];
        if (c->reply)
            grpc_byte_buffer_destroy(c->reply);
        grpc_metadata_array_destroy(&c->initial);
        grpc_metadata_array_destroy(&c->trailing);
        grpc_slice_unref(c->details);
        grpc_call_unref(c->call);
    }
    free(b->calls);
    for (int i = 0; i < b->channel_count; i++)
        grpc_channel_destroy(b->channels[i]);
    grpc_completion_queue_shutdown(b->cq);
    while (grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(b->cq);
    grpc_shutdown();
}

static void log_codes(const char *what, const burst *b) {
    char line[512];
    int used = snprintf(line, sizeof line, "%s:", what);
    for (int code = 0; code <= 16; code++)
        if (b->by_code[code] > 0 && used > 0 && (size_t)used < sizeof line)
            used += snprintf(line + used, sizeof line - (size_t)used, " %s %d", status_code_name((status_code)code),
                             b->by_code[code]);
    cr_log_info("%s", line);
}

enum { BURST = 2000, MAX_WATCHERS_OF_OWN_MYPAGE = 1500 };

Test(wire, two_thousand_calls_and_streams_at_once_are_answered_or_refused) {
    /* a mypage replica of the test's own (same NATS and Redis), with a watcher limit the
     * burst goes past */
    harness_process own;
    const char *dir = arena_sprintf(mem, "%s/%s", fixture_dir(), unique("burst"));
    mkdir(dir, 0755);
    cr_assert(harness_keys_create(dir));
    char limit[64];
    snprintf(limit, sizeof limit, "MAX_WATCHERS=%d", MAX_WATCHERS_OF_OWN_MYPAGE);
    /* one user's streams stand for many users' here: the per-user cap is out of the way */
    const char *env[] = {limit, "MAX_WATCHERS_PER_USER=1000000", NULL};
    cr_assert(fixture_start_mypage(dir, fixture_nats_url(), fixture_redis_url(), env, &own),
              "mypage did not start: %s", own.log_path);
    const char *user = unique("burst");
    const char *bearer = harness_bearer(mem, dir, user, false);

    /* 2000 unary calls on 4 connections: each OK, or shed with RESOURCE_EXHAUSTED */
    Library__Mypage__V1__GetMypageRequest get = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    burst b;
    int64_t started = harness_now_ms();
    burst_start(&b, own.address, 4, BURST, MYPAGE "GetMypage", &get.base, bearer, 20000, SEND);
    int waiting = burst_wait(&b, false, 25000);
    int64_t took = harness_now_ms() - started;
    log_codes(arena_sprintf(mem, "%d GetMypage at once (%lld ms)", BURST, (long long)took), &b);
    burst_end(&b);
    cr_assert_eq(waiting, 0, "%d calls were not answered", waiting);
    cr_assert_eq(b.by_code[STATUS_OK] + b.by_code[STATUS_RESOURCE_EXHAUSTED], BURST,
                 "some calls got neither OK nor RESOURCE_EXHAUSTED");
    cr_assert_gt(b.by_code[STATUS_OK], 0);
    assert_serving(own.address);

    /* 2000 WatchMypage streams on 4 connections: each gets its page, or RESOURCE_EXHAUSTED
     * (shed over MAX_IN_FLIGHT while its handler would run, or over MAX_WATCHERS) */
    Library__Mypage__V1__WatchMypageRequest watch = LIBRARY__MYPAGE__V1__WATCH_MYPAGE_REQUEST__INIT;
    started = harness_now_ms();
    burst_start(&b, own.address, 4, BURST, MYPAGE "WatchMypage", &watch.base, bearer, 60000, SEND);
    waiting = burst_wait(&b, true, 30000);
    took = harness_now_ms() - started;
    log_codes(arena_sprintf(mem, "%d WatchMypage at once (%lld ms): %d streams got their page, %d refused "
                                 "over MAX_WATCHERS=%d; ended",
                            BURST, (long long)took, b.first_messages, b.over_watcher_limit,
                            MAX_WATCHERS_OF_OWN_MYPAGE),
              &b);
    int pages = b.first_messages, refused = b.by_code[STATUS_RESOURCE_EXHAUSTED];
    cr_assert_eq(waiting, 0, "%d streams got neither a page nor a status", waiting);
    assert_serving(own.address);
    burst_end(&b); /* the client cancels every stream */
    cr_assert_eq(pages + refused, BURST, "%d pages + %d RESOURCE_EXHAUSTED of %d streams", pages, refused,
                 BURST);
    cr_assert_leq(pages, MAX_WATCHERS_OF_OWN_MYPAGE);
    cr_assert_gt(pages, 0);

    /* The cancelled streams give their watcher slots back (as the server hears of each
     * cancellation): 1500 fit again, opened 150 at a time so that none is shed, and the
     * next one is over MAX_WATCHERS. */
    enum { CHUNK = 150, CHUNKS = MAX_WATCHERS_OF_OWN_MYPAGE / CHUNK };
    burst chunks[CHUNKS];
    int64_t deadline = harness_now_ms() + 15000;
    for (;;) {
        pages = 0;
        for (int i = 0; i < CHUNKS; i++) {
            burst_start(&chunks[i], own.address, 1, CHUNK, MYPAGE "WatchMypage", &watch.base, bearer, 30000,
                        SEND);
            burst_wait(&chunks[i], true, 10000);
            pages += chunks[i].first_messages;
        }
        if (pages == MAX_WATCHERS_OF_OWN_MYPAGE || harness_now_ms() > deadline)
            break;
        for (int i = 0; i < CHUNKS; i++)
            burst_end(&chunks[i]);
        harness_sleep_ms(500);
    }
    cr_assert_eq(pages, MAX_WATCHERS_OF_OWN_MYPAGE,
                 "after the streams were cancelled, only %d of %d watchers could open again", pages,
                 MAX_WATCHERS_OF_OWN_MYPAGE);
    burst_start(&b, own.address, 1, 1, MYPAGE "WatchMypage", &watch.base, bearer, 10000, SEND);
    burst_wait(&b, true, 10000);
    int over = b.over_watcher_limit;
    burst_end(&b);
    for (int i = 0; i < CHUNKS; i++)
        burst_end(&chunks[i]);
    cr_log_info("after the burst: %d watchers open again, the next one refused over MAX_WATCHERS: %s",
                pages, over == 1 ? "yes" : "no");
    cr_assert_eq(over, 1, "watcher %d was not refused over MAX_WATCHERS", MAX_WATCHERS_OF_OWN_MYPAGE + 1);
    assert_serving(own.address);
    cr_assert_eq(harness_process_stop(&own, SIGTERM, 15000), 0, "mypage did not exit cleanly: %s", own.log_path);
}

Test(wire, two_thousand_calls_and_streams_at_once_through_the_gateway_are_answered_or_refused) {
    Book *book = register_book("Wire burst", "A", "", 1);
    Library__Catalog__V1__GetBookRequest get = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    get.book_id = book->book_id;
    burst b;
    int64_t started = harness_now_ms();
    burst_start(&b, gateway.address, 4, BURST, CATALOG "GetBook", &get.base, user_bearer("wire-reader"), 20000,
                SEND);
    int waiting = burst_wait(&b, false, 25000);
    int64_t took = harness_now_ms() - started;
    log_codes(arena_sprintf(mem, "%d GetBook at once through the gateway (%lld ms)", BURST, (long long)took), &b);
    burst_end(&b);
    cr_assert_eq(waiting, 0, "%d calls were not answered", waiting);
    cr_assert_eq(b.by_code[STATUS_OK] + b.by_code[STATUS_RESOURCE_EXHAUSTED], BURST,
                 "some calls got neither OK nor RESOURCE_EXHAUSTED");
    cr_assert_gt(b.by_code[STATUS_OK], 0);

    /* 2000 WatchMypage streams through the gateway, which proxies each on a connection of its
     * own: each gets its page or RESOURCE_EXHAUSTED, none waits for its deadline */
    Library__Mypage__V1__WatchMypageRequest watch = LIBRARY__MYPAGE__V1__WATCH_MYPAGE_REQUEST__INIT;
    started = harness_now_ms();
    burst_start(&b, gateway.address, 4, BURST, MYPAGE "WatchMypage", &watch.base,
                user_bearer(unique("wire-watcher")), 60000, SEND);
    waiting = burst_wait(&b, true, 30000);
    took = harness_now_ms() - started;
    log_codes(arena_sprintf(mem, "%d WatchMypage at once through the gateway (%lld ms): %d got their page; ended",
                            BURST, (long long)took, b.first_messages),
              &b);
    int pages = b.first_messages, refused = b.by_code[STATUS_RESOURCE_EXHAUSTED];
    assert_all_serving();
    burst_end(&b);
    cr_assert_eq(waiting, 0, "%d streams got neither a page nor a status", waiting);
    cr_assert_eq(pages + refused, BURST, "%d pages + %d RESOURCE_EXHAUSTED of %d streams", pages, refused, BURST);
    cr_assert_gt(pages, 0);
    assert_all_serving();
}

/* --- requests that never arrive ----------------------------------------------------------- */

/* Calls whose request never comes (headers sent, the message held back) wait inside the gRPC
 * core: they take no worker and no in-flight slot, so more of them than MAX_IN_FLIGHT (256)
 * leave each service answering everyone else at once. They end DEADLINE_EXCEEDED at their
 * deadline, on the client's side; the server answers them when their stream ends (below). */
Test(wire, calls_whose_request_never_comes_take_no_slot_and_end_at_their_deadline) {
    enum { STALLED = 600 };
    const char *services[3] = {fixture_catalog_address(), fixture_lending_address(), fixture_mypage_address()};
    const char *paths[3] = {CATALOG "GetBook", LENDING "GetLoan", MYPAGE "GetMypage"};
    Library__Mypage__V1__GetMypageRequest empty = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    const char *bearer = user_bearer("wire-staller");
    burst stalled[3];
    int64_t started = harness_now_ms();
    for (int i = 0; i < 3; i++)
        burst_start(&stalled[i], services[i], 4, STALLED, paths[i], &empty.base, bearer, 3000, WITHHOLD);
    harness_sleep_ms(500);

    /* everyone else is answered at once, by a worker where the method needs one */
    Library__Catalog__V1__GetBookRequest get_book = LIBRARY__CATALOG__V1__GET_BOOK_REQUEST__INIT;
    get_book.book_id = "0123456789abcdef0123";
    Library__Lending__V1__GetLoanRequest get_loan = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    get_loan.loan_id = "0123456789abcdef0123";
    struct {
        rpc_client *client;
        const char *path;
        const ProtobufCMessage *request;
        const ProtobufCMessageDescriptor *reply;
        status_code expected;
    } calls[] = {
        {client, CATALOG "GetBook", &get_book.base, &library__catalog__v1__book__descriptor, STATUS_NOT_FOUND},
        {lending, LENDING "GetLoan", &get_loan.base, &library__lending__v1__loan__descriptor, STATUS_NOT_FOUND},
        {mypage, MYPAGE "GetMypage", &empty.base, &library__mypage__v1__mypage__descriptor, STATUS_OK},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        ProtobufCMessage *reply = NULL;
        status st;
        int64_t call_started = harness_now_ms();
        status_code code = harness_call(calls[i].client, calls[i].path, calls[i].request, calls[i].reply, mem,
                                        bearer, &reply, &st);
        int64_t took = harness_now_ms() - call_started;
        cr_log_info("%s with %d stalled calls open on each service: %s in %lld ms", calls[i].path, STALLED,
                    status_code_name(code), (long long)took);
        cr_assert_eq(code, calls[i].expected, "%s: %s %s", calls[i].path, status_code_name(code), st.message);
        cr_assert_lt(took, harness_latency_bound_ms(1000), "%s took %lld ms", calls[i].path, (long long)took);
    }
    assert_all_serving();

    for (int i = 0; i < 3; i++) {
        int waiting = burst_wait(&stalled[i], false, 10000);
        int64_t took = harness_now_ms() - started;
        log_codes(arena_sprintf(mem, "%d stalled %s (after %lld ms)", STALLED, paths[i], (long long)took),
                  &stalled[i]);
        burst_end(&stalled[i]);
        cr_assert_eq(waiting, 0, "%d stalled calls to %s did not end", waiting, paths[i]);
        cr_assert_eq(stalled[i].by_code[STATUS_DEADLINE_EXCEEDED], STALLED);
    }
    assert_all_serving();
}

/* The header file curl writes (-D) once it holds a grpc-status (HTTP/2 names are lower case),
 * or NULL after wait_ms. */
static char *wait_for_grpc_status(const char *file, int64_t wait_ms) {
    int64_t until = harness_now_ms() + wait_ms;
    do {
        FILE *in = fopen(file, "r");
        if (in != NULL) {
            char *text = arena_alloc(mem, 8192);
            size_t n = fread(text, 1, 8191, in);
            fclose(in);
            text[n] = '\0';
            if (strstr(text, "grpc-status:") != NULL)
                return text;
        }
        harness_sleep_ms(20);
    } while (harness_now_ms() < until);
    return NULL;
}

/* A gRPC frame cut short on a stream the client keeps open: curl uploads the request from a
 * pipe that stays open after the first 9 of the 105 bytes the prefix promises, with a 1 s
 * grpc-timeout. The gRPC core (1.51) hands a unary call to the service only with its whole
 * request, and answers an incomplete one only when its stream ends: the services and the
 * gateway answer nothing while the upload stays open (a gRPC client ends the call at its own
 * deadline; the connection's end ends it too), other calls go on meanwhile, and once the
 * upload ends each answers DEADLINE_EXCEEDED, never OK, and stays healthy. */
Test(wire, a_frame_cut_short_on_a_stream_kept_open_is_answered_when_it_ends) {
    const uint8_t promises_more[] = {0, 0, 0, 0, 100, 0x0a, 0x02, 'a', 'b'}; /* 100 promised, 4 sent */
    target t[4];
    targets(t);
    const char *paths[4] = {CATALOG "GetBook", CATALOG "GetBook", LENDING "GetLoan", MYPAGE "GetMypage"};
    FILE *uploads[4];
    const char *headers[4];
    for (int k = 0; k < 4; k++) {
        headers[k] = arena_sprintf(mem, "%s/%s.headers", fixture_dir(), unique("cut"));
        const char *command = arena_sprintf(
            mem,
            "exec curl -sS -m 20 --http2-prior-knowledge -o /dev/null -D %s -X POST -T - "
            "-H 'te: trailers' -H 'grpc-timeout: 1S' -H 'content-type: application/grpc' "
            "-H 'authorization: %s' http://%s%s 2>/dev/null",
            headers[k], user_bearer("wire-cutter"), t[k].address, paths[k]);
        uploads[k] = popen(command, "w");
        cr_assert_not_null(uploads[k]);
        cr_assert_eq(fwrite(promises_more, 1, sizeof promises_more, uploads[k]), sizeof promises_more);
        fflush(uploads[k]);
    }
    harness_sleep_ms(1500); /* past the deadline, the uploads still open */
    assert_all_serving();
    for (int k = 0; k < 4; k++)
        pclose(uploads[k]); /* the uploads end: curl sends the end of the stream */
    for (int k = 0; k < 4; k++) {
        char *answer = wait_for_grpc_status(headers[k], 5000);
        cr_assert_not_null(answer, "%s%s: no grpc-status once the upload ended", t[k].name, paths[k]);
        int code = atoi(strstr(answer, "grpc-status:") + 12);
        cr_log_info("cut frame on a stream kept open: %-7s %-42s -> grpc-status %d (%s)", t[k].name, paths[k],
                    code, status_code_name((status_code)code));
        cr_assert_eq(code, STATUS_DEADLINE_EXCEEDED, "%s%s: grpc-status %d", t[k].name, paths[k], code);
    }
    assert_all_serving();
}

/* --- a client that never reads -------------------------------------------------------------- */

/* Whether one more WatchMypage is let in and gets its first page (a replica started with
 * MAX_WATCHERS=1 has room only once the server has ended the stream that held the slot). */
static bool another_watch_fits(rpc_client *c, const char *bearer) {
    Library__Mypage__V1__WatchMypageRequest watch = LIBRARY__MYPAGE__V1__WATCH_MYPAGE_REQUEST__INIT;
    rpc_call_options options = {.timeout_ms = 5000, .authorization = bearer};
    rpc_client_stream *stream = NULL;
    ProtobufCMessage *message = NULL;
    status st;
    bool fits = rpc_client_stream_open(c, MYPAGE "WatchMypage", &watch.base, &options, &stream, &st) == STATUS_OK &&
                rpc_client_stream_next(stream, &library__mypage__v1__mypage__descriptor, mem, 3000, &message,
                                       &st) == STATUS_OK &&
                message != NULL;
    rpc_client_stream_close(stream);
    return fits;
}

/* Two page changes for `user`: a new ACTIVE loan (LoanActivated), then its overdue flag
 * (LoanOverdue); the catalog ignores both, lending knows no such loan. */
static void publish_loan_changes(nats_connection *connection, const char *user, int n) {
    char prefix[9], loan_id[24], event_id[64];
    text_random_hex(prefix, 4);
    snprintf(loan_id, sizeof loan_id, "%s%012d", prefix, n);
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    due.seconds = 4102444800; /* 2100 */
    Library__Events__V1__LoanActivated activated = LIBRARY__EVENTS__V1__LOAN_ACTIVATED__INIT;
    activated.loan_id = loan_id;
    activated.user_id = (char *)user;
    activated.book_id = "0123456789abcdef0123";
    activated.book_title = "A slow reader's book";
    activated.due_time = &due;
    Library__Events__V1__LoanOverdue overdue = LIBRARY__EVENTS__V1__LOAN_OVERDUE__INIT;
    overdue.loan_id = loan_id;
    overdue.user_id = (char *)user;
    overdue.book_id = activated.book_id;
    overdue.due_time = &due;
    event e = LIBRARY__EVENTS__V1__EVENT__INIT;
    e.event_id = event_id;
    e.correlation_id = loan_id;
    status st;
    snprintf(event_id, sizeof event_id, "loan-activated-%s", loan_id);
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_ACTIVATED;
    e.loan_activated = &activated;
    cr_assert_eq(events_publish(connection, &e, &st), STATUS_OK, "%s",
                 st.message);
    harness_sleep_ms(2); /* one page per change, rather than one for a burst of them */
    snprintf(event_id, sizeof event_id, "loan-overdue-%s", loan_id);
    e.body_case = LIBRARY__EVENTS__V1__EVENT__BODY_LOAN_OVERDUE;
    e.loan_overdue = &overdue;
    cr_assert_eq(events_publish(connection, &e, &st), STATUS_OK, "%s",
                 st.message);
    harness_sleep_ms(2);
}

Test(wire, a_watch_client_that_never_reads_is_ended_and_memory_stays_bounded) {
    /* a replica of the test's own with room for one watcher: it is free again only once the
     * server has really ended the slow stream */
    harness_process own;
    const char *dir = arena_sprintf(mem, "%s/%s", fixture_dir(), unique("slow"));
    mkdir(dir, 0755);
    cr_assert(harness_keys_create(dir));
    /* Under ASan, freed memory waits in a quarantine of 256 MB before reuse, which would
     * count as growth here: this replica gets a small one (the bound is about our buffers). */
    const char *asan = getenv("ASAN_OPTIONS");
    const char *env[] = {"MAX_WATCHERS=1",
                         arena_sprintf(mem, "ASAN_OPTIONS=%s%squarantine_size_mb=16", asan ? asan : "",
                                       asan && asan[0] ? ":" : ""),
                         NULL};
    cr_assert(fixture_start_mypage(dir, fixture_nats_url(), fixture_redis_url(), env, &own),
              "mypage did not start: %s", own.log_path);
    const char *user = unique("slow");
    const char *bearer = harness_bearer(mem, dir, user, false);
    rpc_client *c = NULL;
    cr_assert_eq(rpc_client_create(own.address, 10000, &c, NULL), STATUS_OK);
    Library__Mypage__V1__WatchMypageRequest watch = LIBRARY__MYPAGE__V1__WATCH_MYPAGE_REQUEST__INIT;
    rpc_call_options options = {.timeout_ms = 110000, .authorization = bearer};
    rpc_client_stream *slow = NULL;
    status st;
    cr_assert_eq(rpc_client_stream_open(c, MYPAGE "WatchMypage", &watch.base, &options, &slow, &st), STATUS_OK);

    nats_connection *connection = NULL;
    nats_connection_options nats_options = harness_nats_options(fixture_nats_url(), "test_wire");
    nats_options.connect_timeout_ms = 5000;
    cr_assert_eq(nats_connection_open(&nats_options, &connection, &st), STATUS_OK, "%s", st.message);

    long rss_start = harness_process_rss_kib(own.pid), rss_max = rss_start;
    bool freed = false;
    int loans = 0;
    int64_t started = harness_now_ms();
    while (!freed && loans < 2000 && harness_now_ms() - started < 40000) {
        for (int i = 0; i < 20; i++)
            publish_loan_changes(connection, user, loans++);
        long rss = harness_process_rss_kib(own.pid);
        if (rss > rss_max)
            rss_max = rss;
        freed = another_watch_fits(c, bearer); /* once the slow one is gone */
    }
    int published = 2 * loans;
    cr_log_info("slow client: %d page changes published in %lld ms; mypage RSS %ld KiB -> max %ld KiB; "
                "the slow stream %s",
                published, (long long)(harness_now_ms() - started), rss_start, rss_max,
                freed ? "was ended by the server" : "was NOT ended");
    cr_assert(freed, "the server kept the stream of a client that never reads (%d changes)", published);
    cr_assert_lt(rss_max - rss_start, 256 * 1024, "mypage grew by %ld KiB", rss_max - rss_start);

    /* the slow client, reading at last, learns why: RESOURCE_EXHAUSTED after what it had */
    ProtobufCMessage *message = NULL;
    status_code code = STATUS_OK;
    int read = 0;
    while (code == STATUS_OK && read < 100000) {
        code = rpc_client_stream_next(slow, &library__mypage__v1__mypage__descriptor, mem, 5000, &message, &st);
        if (code == STATUS_OK && message == NULL)
            break;
        read++;
    }
    cr_log_info("the slow client read %d pages, then %s (%s)", read, status_code_name(code), st.message);
    cr_assert_eq(code, STATUS_RESOURCE_EXHAUSTED, "%s %s", status_code_name(code), st.message);
    rpc_client_stream_close(slow);
    nats_connection_close(connection);
    rpc_client_destroy(c);
    assert_serving(own.address);
    cr_assert_eq(harness_process_stop(&own, SIGTERM, 15000), 0, "mypage did not exit cleanly: %s", own.log_path);
}

/* A watch whose client vanished without closing its connection (here: curl, stopped with
 * SIGSTOP after its first page, so the kernel still acknowledges every byte but nothing
 * answers HTTP/2) holds a watcher slot until the server's keepalive ping goes unanswered:
 * with GRPC_KEEPALIVE=1s and GRPC_KEEPALIVE_TIMEOUT=1s the slot is free again within
 * seconds. Without keepalive the stream would stay open for good: nothing else is sent on it. */
Test(wire, a_watch_whose_client_vanished_is_ended_by_keepalive) {
    harness_process own;
    const char *dir = arena_sprintf(mem, "%s/%s", fixture_dir(), unique("vanished"));
    mkdir(dir, 0755);
    cr_assert(harness_keys_create(dir));
    const char *env[] = {"MAX_WATCHERS=1", "GRPC_KEEPALIVE=1s", "GRPC_KEEPALIVE_TIMEOUT=1s", NULL};
    cr_assert(fixture_start_mypage(dir, fixture_nats_url(), fixture_redis_url(), env, &own),
              "mypage did not start: %s", own.log_path);
    const char *bearer = harness_bearer(mem, dir, unique("vanished"), false);

    /* the request: one gRPC message frame holding an empty WatchMypageRequest */
    const char *request = arena_sprintf(mem, "%s/watch.bin", dir);
    const char *pages = arena_sprintf(mem, "%s/pages.bin", dir);
    FILE *out = fopen(request, "wb");
    cr_assert_not_null(out);
    cr_assert_eq(fwrite("\0\0\0\0\0", 1, 5, out), 5);
    fclose(out);
    const char *authorization = arena_sprintf(mem, "authorization: %s", bearer);
    const char *url = arena_sprintf(mem, "http://%s" MYPAGE "WatchMypage", own.address);
    char *argv[] = {"curl", "-sS", "-N", "--http2-prior-knowledge", "-o", (char *)pages, "-X", "POST",
                    "--data-binary", arena_sprintf(mem, "@%s", request), "-H", "te: trailers",
                    "-H", "content-type: application/grpc", "-H", (char *)authorization, (char *)url, NULL};
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 2, arena_sprintf(mem, "%s/curl.log", dir),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t curl = 0;
    cr_assert_eq(posix_spawnp(&curl, "curl", &files, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&files);

    /* its first page arrives, and it holds the one slot */
    struct stat info = {0};
    int64_t until = harness_now_ms() + 5000;
    while ((stat(pages, &info) != 0 || info.st_size == 0) && harness_now_ms() < until)
        harness_sleep_ms(20);
    cr_assert_gt(info.st_size, 0, "curl received no page");
    rpc_client *c = NULL;
    cr_assert_eq(rpc_client_create(own.address, 10000, &c, NULL), STATUS_OK);
    cr_assert_not(another_watch_fits(c, bearer), "MAX_WATCHERS=1 let a second watch in");

    /* the client vanishes */
    cr_assert(harness_pause(curl));
    int64_t stopped = harness_now_ms();
    bool freed = false;
    while (!freed && harness_now_ms() - stopped < 20000) {
        harness_sleep_ms(250);
        freed = another_watch_fits(c, bearer);
    }
    int64_t took = harness_now_ms() - stopped;
    kill(curl, SIGKILL);
    kill(curl, SIGCONT);
    waitpid(curl, NULL, 0);
    cr_log_info("a watch client stopped without closing its connection: its slot was %s %lld ms later",
                freed ? "free again" : "still taken", (long long)took);
    cr_assert(freed, "the server kept the stream of a vanished client for %lld ms", (long long)took);
    rpc_client_destroy(c);
    assert_serving(own.address);
    cr_assert_eq(harness_process_stop(&own, SIGTERM, 15000), 0, "mypage did not exit cleanly: %s", own.log_path);
}
