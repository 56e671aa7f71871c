/* harness.h - what the integration suites need to run the real thing: temporary
 * directories, free loopback ports, nats-server and redis-server processes, the service
 * binaries, a test signing key and tokens, and gRPC clients. Nothing is mocked. */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis.h>
#include <nats/nats.h>

#include "arena.h"
#include "nats_connection.h"
#include "rpc_client.h"
#include "status.h"
#include "token.h"

typedef struct harness_process {
    pid_t pid;
    int port;
    int metrics_port; /* services: their /metrics port */
    char address[64]; /* "127.0.0.1:port" */
    char url[96];     /* nats://... or redis://... for servers */
    char log_path[512];
} harness_process;

/* A fresh directory under $TMPDIR (or /tmp); the path is static storage per call site. */
const char *harness_temp_dir(char *buffer, size_t size);
int harness_free_port(void);
/* count different free ports, for processes that start one after the other (a port free now
 * is not taken until its process binds it; harness_free_port never hands one out twice in a
 * row of 256). */
void harness_free_ports(int *ports, int count);

/* Starts a program (argv[0] looked up in PATH) with the extra "KEY=value" settings
 * (NULL-terminated, may be NULL), its output appended to log_path, in a process group of its
 * own, killed when the test process dies. The pid, or -1. */
pid_t harness_spawn(char *const argv[], const char *const *env, const char *log_path);

/* Every server the harness starts wants credentials, as in production. NATS has the users and
 * permissions of charts/library/files/nats-users.conf: one per service, limited to what it
 * needs, and "admin" with every permission, for the tests' own connections. Redis has the
 * ACL user "mypage" (rules from charts/library/files/redis-mypage.acl), and its default user
 * wants admin's password. Services started here get their own user's settings (NATS_USER,
 * NATS_PASSWORD, and for mypage REDIS_USER, REDIS_PASSWORD); a caller's env overrides them.
 * The password of a user (test values, the same for NATS and Redis): */
const char *harness_password(const char *user);
/* nats-server's configuration in dir: nats-users.conf copied there (a nats.conf includes it),
 * and the environment that gives its passwords (NULL-terminated, static). */
bool harness_nats_users_file(const char *dir);
const char *const *harness_nats_server_env(void);
/* Every nats-server the harness starts speaks TLS only, with a certificate for 127.0.0.1
 * signed by a test CA (tools/lib/credentials.sh's lib_dev_tls, made once per build dir under
 * <build>/test-tls), as ./tools/run and the chart do; services get NATS_TLS_CA_FILE and the
 * tests' own connections trust the same CA. The directory (ca.pem, nats.pem, nats.key), its
 * ca.pem, and the tls { } block a nats.conf needs for it; NULL when it cannot be made. */
const char *harness_tls_dir(void);
const char *harness_nats_ca_file(void);
const char *harness_nats_tls_config(void);
/* A connection as admin, over TLS, to a server or a comma-separated list (a cluster). */
natsStatus harness_nats_connect(natsConnection **out, const char *urls);
/* nats_connection options for url as admin. */
nats_connection_options harness_nats_options(const char *url, const char *client_name);
/* A Redis connection on loopback port authenticated as the default user (admin's password); the test fails when it cannot. */
redisContext *harness_redis_connect(int port);

/* Lines of a nats-server log where it refused a user a subject ("Publish Violation",
 * "Subscription Violation"), printed to stderr; their count. The services run as their own
 * users, so a permission charts/library/files/nats-users.conf lacks shows here even when no
 * test noticed the failure. */
int harness_nats_violations(const char *log_path);

/* Starts nats-server with JetStream, its store under dir on port (0: a free one), with
 * credentials and TLS; waits until it accepts connections. */
bool harness_nats_start(const char *dir, int port, harness_process *out);
/* The same with more configuration appended to its nats.conf; a tls { } block there takes
 * the place of the test CA's. */
bool harness_nats_start_with(const char *dir, int port, const char *extra_config, harness_process *out);
/* Starts redis-server with AOF, its data under dir/redis, on port (0: a free one), with ACL
 * users and protected mode. */
bool harness_redis_start(const char *dir, int port, harness_process *out);

/* Creates an RSA key pair under dir (jwt-private.pem, jwt-public.pem). */
bool harness_keys_create(const char *dir);

/* Starts build/services/<name>/<name> with GRPC_PORT (free, unless env sets it), METRICS_PORT
 * (free), JWT_PUBLIC_KEY_FILE (dir's key), LOG_LEVEL=debug and the extra "KEY=value" settings (NULL-terminated); logs to
 * dir/<name>.log; waits until its health check answers SERVING (or fails after 15 s). */
bool harness_service_start(const char *name, const char *dir, const char *const *env,
                           harness_process *out);

/* The same for one of several replicas of a service: it logs to dir/<replica>.log. */
bool harness_replica_start(const char *name, const char *replica, const char *dir,
                           const char *const *env, harness_process *out);

/* Runs a service's one-shot command (`mypage --rebuild`; "" runs the service itself, for a
 * start that must fail) with the same settings as harness_service_start and waits for it;
 * returns its exit status, or -1 when it did not end within timeout_ms: then its threads'
 * stacks (gdb) are in dir/<name><argument>.log.stacks and it is killed. Its output goes to
 * dir/<name><argument>.log. */
int harness_service_run(const char *name, const char *argument, const char *dir,
                        const char *const *env, int64_t timeout_ms);

/* Renders the gateway (tools/gateway from LIBRARY_SOURCE_ROOT) into dir/gateway with the
 * given backend ports and runs nginx there on a free port, as one process (no master, so a
 * test that dies takes it along); waits until it accepts connections. */
bool harness_gateway_start(const char *dir, int catalog_port, int lending_port, int mypage_port,
                           harness_process *out);

/* The same with several replicas per backend: each argument lists ports, "50051,50061"; the
 * gateway spreads calls over them and skips one that refuses connections. */
bool harness_gateway_start_replicas(const char *dir, const char *catalog_ports,
                                    const char *lending_ports, const char *mypage_ports,
                                    harness_process *out);

/* Sends signal (0: none, just wait) up to timeout_ms; returns the exit status (or 128+signal), -1 when
 * it did not exit in time (it is then killed). */
int harness_process_stop(harness_process *process, int signal_number, int64_t timeout_ms);
/* SIGSTOP, then waits (2 s at most) until every thread of pid has really stopped: kill()
 * returns before that, and a server still running for a moment can answer one more request.
 * false when it did not stop. SIGCONT resumes it. */
bool harness_pause(pid_t pid);
bool harness_wait_port(int port, int64_t timeout_ms);

/* Tokens signed with dir's private key. ttl_seconds may be negative (already expired). */
typedef token_claims harness_token_options;
char *harness_token(arena *a, const char *dir, const harness_token_options *options);
/* "Bearer " + a valid one-hour token for subject. */
char *harness_bearer(arena *a, const char *dir, const char *subject, bool admin);

/* A unary call with the given bearer (may be NULL) and a 5 s deadline. */
status_code harness_call(rpc_client *client, const char *method, const ProtobufCMessage *request,
                         const ProtobufCMessageDescriptor *response_type, arena *a,
                         const char *bearer, ProtobufCMessage **response, status *st);

/* Runs a shell command (stderr joined to stdout) and returns its output, at most 64 KiB,
 * NUL-terminated, from a; *exit_code is its exit status (-1: it did not exit normally). */
char *harness_command_output(arena *a, const char *command, int *exit_code);
/* GET http://127.0.0.1:<port>/metrics (curl); the body from a, or NULL when it failed. */
char *harness_scrape(arena *a, int port);
/* The value of the sample whose name and labels are exactly `series` in a scraped body
 * (0 when absent). */
double harness_sample(const char *body, const char *series);
/* Resident memory of a process in KiB (VmRSS), or -1. */
long harness_process_rss_kib(pid_t pid);

/* Waits until the durable JetStream consumer `durable` of stream LIBRARY on nats_url has
 * taken every message the stream holds: nothing pending, nothing delivered and unacked, and
 * its ack floor at the stream's last sequence, seen twice in a row 50 ms apart (a handler
 * that publishes a follow-up event moves the last sequence on). Use it before asserting that
 * something did not change, instead of sleeping. false when not so within timeout_ms. */
bool harness_wait_consumer_idle(const char *nats_url, const char *durable, int64_t timeout_ms);

/* An upper bound for a behaviour that must be quick ("fails fast", "at once"), in ms,
 * stretched in the sanitizer build, where everything runs about three times slower while
 * Criterion runs two tests at once on two cores. Speed itself is measured by tools/bench. */
int64_t harness_latency_bound_ms(int64_t ms);

int64_t harness_now_ms(void);
void harness_sleep_ms(int64_t ms);

/* Starts a service as harness_service_start does, but returns at once without waiting for it
 * to serve: for a test of how it starts, or fails to (harness_process_stop with signal 0
 * then waits for its exit). */
bool harness_service_spawn(const char *name, const char *dir, const char *const *env,
                           harness_process *out);

/* true in a build with AddressSanitizer: its quarantine keeps up to 256 MiB of freed memory
 * resident, so a process's RSS says nothing there about the memory it holds. */
bool harness_sanitized(void);

/* Publishes an empty message on subject (in the LIBRARY stream) with msg_id as its
 * Nats-Msg-Id: a later event of that id is then deduplicated, as if the stream had taken it
 * and lost it. */
bool harness_publish_with_id(const char *nats_url, const char *subject, const char *msg_id);

#endif
