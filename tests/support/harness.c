/* harness.c - processes, ports, keys and tokens for the integration suites. */
#define _GNU_SOURCE /* execvpe, environ */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nats/nats.h>

#include "grpc/health/v1/health.pb-c.h"
#include "timestamp.h"

int64_t harness_now_ms(void) {
    return timestamp_monotonic_ms();
}

void harness_sleep_ms(int64_t ms) {
    timestamp_sleep_ms(ms);
}

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

int64_t harness_latency_bound_ms(int64_t ms) {
#ifdef SANITIZED
    return ms * 3;
#else
    return ms;
#endif
}

/* One look at a consumer: true when it has nothing pending or unacked; *last_sequence is the
 * stream's last sequence at that moment. */
static bool consumer_idle_once(jsCtx *js, const char *durable, uint64_t *last_sequence) {
    jsStreamInfo *stream = NULL;
    jsConsumerInfo *consumer = NULL;
    jsErrCode code = 0;
    bool idle = false;
    if (js_GetStreamInfo(&stream, js, "LIBRARY", NULL, &code) == NATS_OK &&
        js_GetConsumerInfo(&consumer, js, "LIBRARY", durable, NULL, &code) == NATS_OK) {
        *last_sequence = stream->State.LastSeq;
        idle = consumer->NumPending == 0 && consumer->NumAckPending == 0;
    }
    jsStreamInfo_Destroy(stream);
    jsConsumerInfo_Destroy(consumer);
    return idle;
}

bool harness_wait_consumer_idle(const char *nats_url, const char *durable, int64_t timeout_ms) {
    natsConnection *connection = NULL;
    jsCtx *js = NULL;
    if (harness_nats_connect(&connection, nats_url) != NATS_OK ||
        natsConnection_JetStream(&js, connection, NULL) != NATS_OK) {
        natsConnection_Destroy(connection);
        return false;
    }
    int64_t until = harness_now_ms() + timeout_ms;
    uint64_t seen = UINT64_MAX, last = 0;
    bool idle = false;
    while (!idle && harness_now_ms() < until) {
        /* idle twice in a row with no new message in the stream between the two looks */
        bool now_idle = consumer_idle_once(js, durable, &last);
        idle = now_idle && last == seen;
        seen = now_idle ? last : UINT64_MAX;
        if (!idle)
            harness_sleep_ms(50);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
    return idle;
}

/* Everything a pipe gives until it ends, or until max bytes (0: no limit), NUL-terminated,
 * from a. */
static char *read_all(arena *a, FILE *pipe, size_t max) {
    size_t capacity = 64u << 10, length = 0, n;
    char *text = arena_alloc(a, capacity);
    for (;;) {
        if (length + 1 == capacity) {
            if (max != 0 && capacity >= max)
                break;
            char *bigger = arena_alloc(a, capacity * 2);
            memcpy(bigger, text, length);
            text = bigger;
            capacity *= 2;
        }
        if ((n = fread(text + length, 1, capacity - length - 1, pipe)) == 0)
            break;
        length += n;
    }
    text[length] = '\0';
    return text;
}

char *harness_command_output(arena *a, const char *command, int *exit_code) {
    *exit_code = -1;
    char *joined = arena_sprintf(a, "%s 2>&1", command);
    FILE *pipe = popen(joined, "r");
    if (pipe == NULL)
        return arena_strndup(a, "", 0);
    char *output = read_all(a, pipe, 64u << 10);
    int wait_status = pclose(pipe);
    if (wait_status != -1 && WIFEXITED(wait_status))
        *exit_code = WEXITSTATUS(wait_status);
    return output;
}

char *harness_scrape(arena *a, int port) {
    char command[128];
    snprintf(command, sizeof command, "curl -sf --max-time 5 http://127.0.0.1:%d/metrics", port);
    FILE *pipe = popen(command, "r");
    if (pipe == NULL)
        return NULL;
    char *body = read_all(a, pipe, 0);
    int exit_status = pclose(pipe);
    return exit_status == 0 ? body : NULL;
}

double harness_sample(const char *body, const char *series) {
    size_t length = strlen(series);
    for (const char *line = body; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, series, length) == 0 && line[length] == ' ')
            return strtod(line + length + 1, NULL);
    return 0;
}

long harness_process_rss_kib(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *file = fopen(path, "r");
    long kib = -1;
    while (file != NULL && fgets(line, sizeof line, file) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (file != NULL)
        fclose(file);
    return kib;
}

const char *harness_temp_dir(char *buffer, size_t size) {
    const char *base = getenv("TMPDIR");
    snprintf(buffer, size, "%s/library-test-XXXXXX", base && base[0] ? base : "/tmp");
    return mkdtemp(buffer);
}

/* The kernel's ephemeral range (where connect() takes its local ports), from procfs. */
static void ephemeral_range(int *low, int *high) {
    *low = 32768;
    *high = 60999;
    FILE *range = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (range) {
        if (fscanf(range, "%d %d", low, high) != 2) {
            *low = 32768;
            *high = 60999;
        }
        fclose(range);
    }
}

static bool port_bindable(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool free = fd >= 0 && bind(fd, (struct sockaddr *)&address, sizeof address) == 0;
    if (fd >= 0)
        close(fd);
    return free;
}

/* Ports come from outside the ephemeral range: a port inside it can be the local end of a
 * client connection, or of one in TIME_WAIT (thousands after a busy suite), at the moment a
 * server binds it, and bind() then fails with "Address already in use" although nothing
 * listens there. Below the range when there is room (20000 up), else above it. The start is
 * random per process, so parallel tests and suites rarely try the same port. */
int harness_free_port(void) {
    int low, high;
    ephemeral_range(&low, &high);
    int first = 20000, last = low - 1;
    if (last - first < 2000) {
        first = high + 1;
        last = 65535;
    }
    /* Criterion forks a process per test: a seed inherited from the runner would give every
     * test the same ports, so each process seeds its own. */
    static unsigned seed;
    static pid_t seeded_by;
    /* Ports handed out lately are not handed out again: a port is free until its process binds
     * it, and a service asks for its gRPC and its metrics port one after the other. */
    enum { RECENT = 256 };
    static int recent[RECENT], recent_next;
    if (seeded_by != getpid()) {
        seeded_by = getpid();
        seed = (unsigned)seeded_by * 2654435761u ^ (unsigned)harness_now_ms();
        memset(recent, 0, sizeof recent);
    }
    int span = last - first + 1;
    for (int attempt = 0; attempt < 500 && span > 0; attempt++) {
        int port = first + (int)(rand_r(&seed) % (unsigned)span);
        bool handed_out = false;
        for (int k = 0; k < RECENT && !handed_out; k++)
            handed_out = recent[k] == port;
        if (handed_out || !port_bindable(port))
            continue;
        recent[recent_next] = port;
        recent_next = (recent_next + 1) % RECENT;
        return port;
    }
    return -1;
}

void harness_free_ports(int *ports, int count) {
    for (int i = 0; i < count; i++)
        ports[i] = harness_free_port(); /* never one it handed out lately */
}

bool harness_wait_port(int port, int64_t timeout_ms) {
    int64_t until = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < until) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                      .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bool open = connect(fd, (struct sockaddr *)&address, sizeof address) == 0;
        close(fd);
        if (open)
            return true;
        harness_sleep_ms(20);
    }
    return false;
}

/* Does "KEY=value" set the same KEY as the entry of an environment? */
static bool same_name(const char *setting, const char *entry) {
    size_t length = strcspn(setting, "=");
    return strncmp(setting, entry, length) == 0 && entry[length] == '=';
}

/* The process's environment with each "KEY=value" of env in place of KEY's own (a later one
 * of env winning, as putenv one after another would), in one allocation; NULL when out of
 * memory. Made before fork: the child of a threaded test must not allocate, as another
 * thread may have held the allocator's lock at the fork (a child once hung in putenv). */
static char **spawn_environment(const char *const *env) {
    size_t inherited = 0, given = 0;
    while (environ[inherited] != NULL)
        inherited++;
    while (env != NULL && env[given] != NULL)
        given++;
    char **out = malloc((inherited + given + 1) * sizeof *out);
    if (out == NULL)
        return NULL;
    size_t count = 0;
    for (size_t i = 0; i < inherited; i++) {
        bool replaced = false;
        for (size_t j = 0; j < given && !replaced; j++)
            replaced = same_name(env[j], environ[i]);
        if (!replaced)
            out[count++] = environ[i];
    }
    for (size_t j = 0; j < given; j++) {
        bool overridden = false;
        for (size_t k = j + 1; k < given && !overridden; k++)
            overridden = same_name(env[k], env[j]);
        if (!overridden)
            out[count++] = (char *)env[j];
    }
    out[count] = NULL;
    return out;
}

/* fork + exec with stdout and stderr appended to log_path, in its own process group so a
 * crashed test never leaves it attached to the terminal. */
pid_t harness_spawn(char *const argv[], const char *const *env, const char *log_path) {
    char **environment = spawn_environment(env);
    if (environment == NULL)
        return -1;
    pid_t pid = fork();
    if (pid != 0) {
        free(environment);
        return pid;
    }
    /* If the test process dies (a failed assertion ends it at once), take the server along. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvpe(argv[0], argv, environment);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Whether every thread of pid is stopped (state T in /proc/<pid>/task/<tid>/stat). */
static bool all_threads_stopped(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *tasks = opendir(path);
    if (tasks == NULL)
        return false;
    bool stopped = true;
    for (struct dirent *task; stopped && (task = readdir(tasks)) != NULL;) {
        if (task->d_name[0] == '.')
            continue;
        char stat_path[400], text[512] = "";
        snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, task->d_name);
        FILE *file = fopen(stat_path, "r");
        if (file == NULL)
            continue; /* the thread is gone */
        size_t n = fread(text, 1, sizeof text - 1, file);
        fclose(file);
        text[n] = '\0';
        const char *end = strrchr(text, ')'); /* "pid (name) S ..." */
        stopped = end != NULL && (end[2] == 'T' || end[2] == 't');
    }
    closedir(tasks);
    return stopped;
}

bool harness_pause(pid_t pid) {
    if (pid <= 0 || kill(pid, SIGSTOP) != 0)
        return false;
    int64_t until = harness_now_ms() + 2000;
    while (!all_threads_stopped(pid)) {
        if (harness_now_ms() > until)
            return false;
        harness_sleep_ms(1);
    }
    return true;
}

int harness_process_stop(harness_process *process, int signal_number, int64_t timeout_ms) {
    if (process->pid <= 0)
        return -1;
    kill(process->pid, signal_number);
    int64_t until = harness_now_ms() + timeout_ms;
    int wait_status = 0;
    for (;;) {
        pid_t done = waitpid(process->pid, &wait_status, WNOHANG);
        if (done == process->pid)
            break;
        if (harness_now_ms() > until) {
            kill(process->pid, SIGKILL);
            waitpid(process->pid, &wait_status, 0);
            process->pid = 0;
            return -1;
        }
        harness_sleep_ms(10);
    }
    process->pid = 0;
    if (WIFEXITED(wait_status))
        return WEXITSTATUS(wait_status);
    return 128 + WTERMSIG(wait_status);
}

/* --- credentials ------------------------------------------------------------------------------ */

static const struct {
    const char *user, *password;
} test_passwords[] = {
    {"admin", "test-admin-secret"},
    {"catalog", "test-catalog-secret"},
    {"lending", "test-lending-secret"},
    {"mypage", "test-mypage-secret"},
};

const char *harness_password(const char *user) {
    for (size_t i = 0; i < sizeof test_passwords / sizeof test_passwords[0]; i++)
        if (strcmp(user, test_passwords[i].user) == 0)
            return test_passwords[i].password;
    return "no-such-user";
}

const char *const *harness_nats_server_env(void) {
    static const char *const env[] = {
        "NATS_ADMIN_PASSWORD=test-admin-secret", "NATS_CATALOG_PASSWORD=test-catalog-secret",
        "NATS_LENDING_PASSWORD=test-lending-secret", "NATS_MYPAGE_PASSWORD=test-mypage-secret", NULL};
    return env;
}

/* The text of a file of the source tree (charts/library/files/...), from a; NULL if unreadable. */
static char *source_file(arena *a, const char *relative) {
    const char *root = getenv("LIBRARY_SOURCE_ROOT");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root ? root : ".", relative);
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        fprintf(stderr, "harness: cannot read %s (LIBRARY_SOURCE_ROOT?)\n", path);
        return NULL;
    }
    char *text = arena_alloc(a, 65536);
    size_t n = text ? fread(text, 1, 65535, file) : 0;
    fclose(file);
    if (text)
        text[n] = '\0';
    return text;
}

static bool write_text(const char *path, const char *text) {
    FILE *file = fopen(path, "w");
    if (file == NULL)
        return false;
    fputs(text, file);
    return fclose(file) == 0;
}

bool harness_nats_users_file(const char *dir) {
    arena *a = arena_create(0);
    char *users = source_file(a, "charts/library/files/nats-users.conf");
    char path[600];
    snprintf(path, sizeof path, "%s/nats-users.conf", dir);
    bool ok = users != NULL && write_text(path, users);
    arena_destroy(a);
    return ok;
}

const char *harness_tls_dir(void) {
    static char path[600];
    if (path[0] != '\0')
        return path;
    const char *build = getenv("LIBRARY_BUILD_ROOT");
    char wanted[sizeof path], key[sizeof path + 16];
    snprintf(wanted, sizeof wanted, "%s/test-tls", build ? build : "build");
    snprintf(key, sizeof key, "%s/nats.key", wanted);
    struct stat made;
    if (stat(key, &made) != 0 || made.st_size == 0) {
        /* made aside and renamed into place: two suites starting at once both make one, the
         * first rename wins and the other's copy goes */
        char aside[sizeof path + 32], command[2048];
        snprintf(aside, sizeof aside, "%s.%d", wanted, (int)getpid());
        const char *root = getenv("LIBRARY_SOURCE_ROOT");
        snprintf(command, sizeof command,
                 "bash -c 'LIB_ROOT=\"$1\"; source \"$1/tools/lib/credentials.sh\" && lib_dev_tls \"$2\"' _ '%s' '%s'",
                 root ? root : ".", aside);
        if (system(command) != 0) {
            fprintf(stderr, "harness: no test CA in %s (openssl.log there)\n", aside);
            return NULL;
        }
        if (rename(aside, wanted) != 0) {
            snprintf(command, sizeof command, "rm -rf '%s'", aside);
            if (system(command) != 0)
                fprintf(stderr, "harness: cannot remove %s\n", aside);
        }
    }
    snprintf(path, sizeof path, "%s", wanted);
    return path;
}

const char *harness_nats_ca_file(void) {
    static char path[700];
    const char *dir = harness_tls_dir();
    if (dir == NULL)
        return NULL;
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    return path;
}

/* nats.conf's tls { } block: the test CA's certificate for 127.0.0.1. "" when there is none
 * (the server then starts without TLS and every client's handshake fails, saying so). */
static const char *nats_tls_block(void) {
    static char block[1600];
    const char *dir = harness_tls_dir();
    snprintf(block, sizeof block, "tls { cert_file: \"%s/nats.pem\", key_file: \"%s/nats.key\" }\n",
             dir ? dir : ".", dir ? dir : ".");
    return dir ? block : "";
}

const char *harness_nats_tls_config(void) {
    return nats_tls_block();
}

/* "nats://host:port,..." as admin, over TLS with the test CA. */
natsStatus harness_nats_connect(natsConnection **out, const char *urls) {
    char list[1024];
    snprintf(list, sizeof list, "%s", urls);
    const char *servers[16];
    int count = 0;
    for (char *save = NULL, *url = strtok_r(list, ",", &save); url != NULL && count < 16;
         url = strtok_r(NULL, ",", &save))
        servers[count++] = url;
    natsOptions *options = NULL;
    const char *ca = harness_nats_ca_file();
    natsStatus s = ca == NULL ? NATS_ERR : natsOptions_Create(&options);
    if (s == NATS_OK)
        s = natsOptions_SetServers(options, servers, count);
    if (s == NATS_OK)
        s = natsOptions_SetUserInfo(options, "admin", harness_password("admin"));
    if (s == NATS_OK)
        s = natsOptions_SetSecure(options, true);
    if (s == NATS_OK)
        s = natsOptions_LoadCATrustedCertificates(options, ca);
    if (s == NATS_OK)
        s = natsConnection_Connect(out, options);
    natsOptions_Destroy(options);
    return s;
}

nats_connection_options harness_nats_options(const char *url, const char *client_name) {
    return (nats_connection_options){.url = url, .client_name = client_name, .user = "admin",
                                     .password = harness_password("admin"),
                                     .tls_ca_file = harness_nats_ca_file()};
}

redisContext *harness_redis_connect(int port) {
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c == NULL || c->err != 0) {
        redisFree(c);
        return NULL;
    }
    redisReply *reply = redisCommand(c, "AUTH %s", harness_password("admin"));
    bool ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;
    freeReplyObject(reply);
    if (!ok) {
        redisFree(c);
        return NULL;
    }
    return c;
}

int harness_nats_violations(const char *log_path) {
    FILE *log = fopen(log_path, "r");
    if (log == NULL)
        return 0;
    char line[1024];
    int count = 0;
    while (fgets(line, sizeof line, log) != NULL) {
        if (strstr(line, " Violation") != NULL) {
            fprintf(stderr, "nats refused: %s", line);
            count++;
        }
    }
    fclose(log);
    return count;
}

/* --- servers ---------------------------------------------------------------------------------- */

bool harness_nats_start(const char *dir, int port_number, harness_process *out) {
    return harness_nats_start_with(dir, port_number, NULL, out);
}

bool harness_nats_start_with(const char *dir, int port_number, const char *extra_config,
                             harness_process *out) {
    memset(out, 0, sizeof *out);
    out->port = port_number > 0 ? port_number : harness_free_port();
    char config[512], text[4096];
    snprintf(config, sizeof config, "%s/nats.conf", dir);
    snprintf(text, sizeof text,
             "listen: 127.0.0.1:%d\n"
             "jetstream { store_dir: \"%s/nats\" }\n"
             "include nats-users.conf\n%s\n",
             out->port, dir, extra_config && strstr(extra_config, "tls {") ? extra_config : "");
    if (extra_config == NULL || strstr(extra_config, "tls {") == NULL) /* the test CA's, unless given */
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s%s\n", nats_tls_block(),
                 extra_config ? extra_config : "");
    if (!harness_nats_users_file(dir) || !write_text(config, text))
        return false;
    snprintf(out->log_path, sizeof out->log_path, "%s/nats.log", dir);
    snprintf(out->address, sizeof out->address, "127.0.0.1:%d", out->port);
    snprintf(out->url, sizeof out->url, "nats://127.0.0.1:%d", out->port);
    char *argv[] = {"nats-server", "-c", config, NULL};
    out->pid = harness_spawn(argv, harness_nats_server_env(), out->log_path);
    return out->pid > 0 && harness_wait_port(out->port, 10000);
}

/* redis.conf with the ACL users: passwords in a file, not on the command line. */
static bool write_redis_config(const char *path, int port, const char *data) {
    arena *a = arena_create(0);
    char *rules = source_file(a, "charts/library/files/redis-mypage.acl");
    char *line = rules;
    while (line != NULL && *line == '#') /* the file's comment lines */
        line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL;
    char text[4096];
    bool ok = line != NULL;
    if (ok) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(text, sizeof text,
                 "port %d\nbind 127.0.0.1\nprotected-mode yes\ndir %s\nappendonly yes\nsave \"\"\n"
                 /* the default user keeps every right: Redis 7.0 loads the AOF's MULTI/EXEC
                  * (scripts' effects) as the default user, and refuses them when it may not */
                 "user default on >%s ~* &* +@all\n"
                 "user mypage on >%s %s\n",
                 port, data, harness_password("admin"), harness_password("mypage"), line);
        ok = write_text(path, text);
    }
    arena_destroy(a);
    return ok;
}

bool harness_redis_start(const char *dir, int port_number, harness_process *out) {
    memset(out, 0, sizeof *out);
    out->port = port_number > 0 ? port_number : harness_free_port();
    char data[512], config[600];
    snprintf(data, sizeof data, "%s/redis", dir);
    mkdir(data, 0755);
    snprintf(config, sizeof config, "%s/redis.conf", data);
    if (!write_redis_config(config, out->port, data))
        return false;
    snprintf(out->log_path, sizeof out->log_path, "%s/redis.log", dir);
    snprintf(out->address, sizeof out->address, "127.0.0.1:%d", out->port);
    snprintf(out->url, sizeof out->url, "redis://127.0.0.1:%d", out->port);
    char *argv[] = {"redis-server", config, NULL};
    out->pid = harness_spawn(argv, NULL, out->log_path);
    return out->pid > 0 && harness_wait_port(out->port, 10000);
}

static bool write_key(const char *path, EVP_PKEY *key, bool private_key) {
    FILE *file = fopen(path, "w");
    if (file == NULL)
        return false;
    int ok = private_key ? PEM_write_PrivateKey(file, key, NULL, NULL, 0, NULL, NULL)
                         : PEM_write_PUBKEY(file, key);
    return fclose(file) == 0 && ok == 1;
}

bool harness_keys_create(const char *dir) {
    EVP_PKEY *key = EVP_RSA_gen(2048);
    if (key == NULL)
        return false;
    char path[512];
    snprintf(path, sizeof path, "%s/jwt-private.pem", dir);
    bool ok = write_key(path, key, true);
    snprintf(path, sizeof path, "%s/jwt-public.pem", dir);
    ok = ok && write_key(path, key, false);
    EVP_PKEY_free(key);
    return ok;
}

static bool service_serving(const char *address) {
    rpc_client *client = NULL;
    if (rpc_client_create(address, 1000, &client, NULL) != STATUS_OK)
        return false;
    arena *a = arena_create(0);
    Grpc__Health__V1__HealthCheckRequest request = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *response = NULL;
    status st;
    rpc_call_options options = {.timeout_ms = 1000};
    bool serving = rpc_client_call(client, "/grpc.health.v1.Health/Check", &request.base,
                                   &grpc__health__v1__health_check_response__descriptor, a,
                                   &response, &options, &st) == STATUS_OK &&
                   ((Grpc__Health__V1__HealthCheckResponse *)response)->status ==
                       GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    arena_destroy(a);
    rpc_client_destroy(client);
    return serving;
}

/* The binary of a service and its environment: the test key, debug logs, the given port
 * and the extra settings. The strings live in static storage until the next call. */
static void service_command(const char *name, const char *dir, int port, int metrics_port,
                            const char *const *env, char binary[512], const char *all[40]) {
    const char *build = getenv("LIBRARY_BUILD_ROOT");
    snprintf(binary, 512, "%s/services/%s/%s", build ? build : "build", name, name);
    static char settings[10][600];
    int count = 0;
    snprintf(settings[count++], sizeof settings[0], "JWT_PUBLIC_KEY_FILE=%s/jwt-public.pem", dir);
    snprintf(settings[count++], sizeof settings[0], "LOG_LEVEL=debug");
    /* The suites' loads make hundreds of writes a second as one user; the per-user write
     * limit has tests of its own, which set WRITE_RATE (the test's env comes later and wins). */
    snprintf(settings[count++], sizeof settings[0], "WRITE_RATE=0");
    snprintf(settings[count++], sizeof settings[0], "NATS_USER=%s", name);
    snprintf(settings[count++], sizeof settings[0], "NATS_PASSWORD=%s", harness_password(name));
    snprintf(settings[count++], sizeof settings[0], "NATS_TLS_CA_FILE=%s",
             harness_nats_ca_file() ? harness_nats_ca_file() : "");
    if (strcmp(name, "mypage") == 0) {
        snprintf(settings[count++], sizeof settings[0], "REDIS_USER=mypage");
        snprintf(settings[count++], sizeof settings[0], "REDIS_PASSWORD=%s", harness_password("mypage"));
    }
    if (port > 0) { /* no ports for one-shot commands */
        snprintf(settings[count++], sizeof settings[0], "METRICS_PORT=%d", metrics_port);
        snprintf(settings[count++], sizeof settings[0], "GRPC_PORT=%d", port);
    }
    size_t n = 0;
    for (int i = 0; i < count; i++)
        all[n++] = settings[i];
    for (const char *const *e = env; e && *e && n < 39; e++)
        all[n++] = *e;
    all[n] = NULL;
}

/* Starts replica `replica` of service `name` (its log dir/<replica>.log) without waiting. */
static bool replica_spawn(const char *name, const char *replica, const char *dir,
                          const char *const *env, harness_process *out) {
    memset(out, 0, sizeof *out);
    out->port = harness_free_port();
    for (const char *const *e = env; e && *e; e++) /* a fixed port wins (restarts) */
        if (strncmp(*e, "GRPC_PORT=", 10) == 0)
            out->port = atoi(*e + 10);
    snprintf(out->address, sizeof out->address, "127.0.0.1:%d", out->port);
    out->metrics_port = harness_free_port();
    for (const char *const *e = env; e && *e; e++)
        if (strncmp(*e, "METRICS_PORT=", 13) == 0)
            out->metrics_port = atoi(*e + 13);
    snprintf(out->log_path, sizeof out->log_path, "%s/%s.log", dir, replica);
    char binary[512];
    const char *all[40];
    service_command(name, dir, out->port, out->metrics_port, env, binary, all);
    char *argv[] = {binary, NULL};
    out->pid = harness_spawn(argv, all, out->log_path);
    return out->pid > 0;
}

bool harness_service_spawn(const char *name, const char *dir, const char *const *env,
                           harness_process *out) {
    return replica_spawn(name, name, dir, env, out);
}

bool harness_service_start(const char *name, const char *dir, const char *const *env,
                           harness_process *out) {
    return harness_replica_start(name, name, dir, env, out);
}

static long file_size(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 ? (long)info.st_size : 0;
}

/* Did the service, whose log grew from offset, stop because a port it was given was bound by
 * someone else first? A port is free when harness_free_port looks at it; another test process
 * (Criterion runs two at once) may bind it before the service does. */
static bool lost_a_port(const char *log_path, long offset) {
    FILE *log = fopen(log_path, "r");
    if (log == NULL)
        return false;
    bool lost = false;
    char line[1024];
    if (fseek(log, offset, SEEK_SET) == 0)
        while (!lost && fgets(line, sizeof line, log) != NULL)
            lost = strstr(line, "(in use?)") != NULL || strstr(line, "cannot listen on") != NULL;
    fclose(log);
    return lost;
}

bool harness_replica_start(const char *name, const char *replica, const char *dir,
                           const char *const *env, harness_process *out) {
    for (int attempt = 0; attempt < 3; attempt++) {
        char log_path[sizeof out->log_path];
        snprintf(log_path, sizeof log_path, "%s/%s.log", dir, replica);
        long offset = file_size(log_path);
        if (!replica_spawn(name, replica, dir, env, out))
            return false;
        int64_t until = harness_now_ms() + 15000;
        while (harness_now_ms() < until) {
            if (waitpid(out->pid, NULL, WNOHANG) == out->pid) {
                out->pid = 0;
                break;
            }
            if (service_serving(out->address))
                return true;
            harness_sleep_ms(50);
        }
        if (out->pid != 0 || !lost_a_port(out->log_path, offset))
            return false; /* too slow, or failed for a reason of its own */
        fprintf(stderr, "harness: %s lost a port to another process; starting it on others\n", replica);
    }
    return false;
}

int harness_service_run(const char *name, const char *argument, const char *dir,
                        const char *const *env, int64_t timeout_ms) {
    harness_process process = {0};
    snprintf(process.log_path, sizeof process.log_path, "%s/%s%s.log", dir, name, argument);
    char binary[512];
    const char *all[40];
    /* the service itself (a start that must fail) gets free ports, as harness_service_start
     * gives: its defaults may be taken by whatever else runs here */
    int ports[2] = {0, 0};
    if (argument[0] == '\0')
        harness_free_ports(ports, 2);
    service_command(name, dir, ports[0], ports[1], env, binary, all);
    char *argv[] = {binary, argument[0] ? (char *)argument : NULL, NULL};
    process.pid = harness_spawn(argv, all, process.log_path);
    if (process.pid <= 0)
        return -1;
    /* the command ends by itself; one that overstays has its threads' stacks written beside
     * its log (gdb) before it is killed, so a hang leaves evidence */
    int64_t until = harness_now_ms() + timeout_ms;
    int wait_status = 0;
    while (waitpid(process.pid, &wait_status, WNOHANG) != process.pid) {
        if (harness_now_ms() > until) {
            char command[1200];
            snprintf(command, sizeof command,
                     "gdb -p %d -batch -ex 'thread apply all bt' > '%s.stacks' 2>&1", (int)process.pid,
                     process.log_path);
            if (system(command) != 0)
                fprintf(stderr, "harness: could not take the stacks of %s %s\n", name, argument);
            fprintf(stderr, "harness: %s %s did not end in %lld ms; stacks in %s.stacks\n", name, argument,
                    (long long)timeout_ms, process.log_path);
            harness_process_stop(&process, SIGKILL, 5000);
            return -1;
        }
        harness_sleep_ms(10);
    }
    return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

char *harness_token(arena *a, const char *dir, const harness_token_options *options) {
    char path[512];
    snprintf(path, sizeof path, "%s/jwt-private.pem", dir);
    char *encoded = token_sign(path, options);
    char *copy = encoded ? arena_strdup(a, encoded) : NULL;
    free(encoded);
    return copy;
}

char *harness_bearer(arena *a, const char *dir, const char *subject, bool admin) {
    harness_token_options options = {.subject = subject, .admin = admin, .ttl_seconds = 3600};
    char *token = harness_token(a, dir, &options);
    return token ? arena_sprintf(a, "Bearer %s", token) : NULL;
}

status_code harness_call(rpc_client *client, const char *method, const ProtobufCMessage *request,
                         const ProtobufCMessageDescriptor *response_type, arena *a,
                         const char *bearer, ProtobufCMessage **response, status *st) {
    rpc_call_options options = {.timeout_ms = 5000, .authorization = bearer};
    status_clear(st);
    return rpc_client_call(client, method, request, response_type, a, response, &options, st);
}

bool harness_gateway_start(const char *dir, int catalog_port, int lending_port, int mypage_port,
                           harness_process *out) {
    char catalog[16], lending[16], mypage[16];
    snprintf(catalog, sizeof catalog, "%d", catalog_port);
    snprintf(lending, sizeof lending, "%d", lending_port);
    snprintf(mypage, sizeof mypage, "%d", mypage_port);
    return harness_gateway_start_replicas(dir, catalog, lending, mypage, out);
}

bool harness_gateway_start_replicas(const char *dir, const char *catalog_ports,
                                    const char *lending_ports, const char *mypage_ports,
                                    harness_process *out) {
    memset(out, 0, sizeof *out);
    out->port = harness_free_port();
    snprintf(out->address, sizeof out->address, "127.0.0.1:%d", out->port);
    snprintf(out->log_path, sizeof out->log_path, "%s/gateway.log", dir);
    const char *source = getenv("LIBRARY_SOURCE_ROOT");
    char script[512], gateway_dir[512], conf[600], port[16];
    snprintf(script, sizeof script, "%s/tools/gateway", source ? source : ".");
    snprintf(gateway_dir, sizeof gateway_dir, "%s/gateway", dir);
    snprintf(conf, sizeof conf, "%s/nginx.conf", gateway_dir);
    snprintf(port, sizeof port, "%d", out->port);
    char catalog[128], lending[128], mypage[128];
    snprintf(catalog, sizeof catalog, "GATEWAY_PORT_CATALOG=%s", catalog_ports);
    snprintf(lending, sizeof lending, "GATEWAY_PORT_LENDING=%s", lending_ports);
    snprintf(mypage, sizeof mypage, "GATEWAY_PORT_MYPAGE=%s", mypage_ports);
    const char *env[] = {catalog, lending, mypage, NULL};
    char *render[] = {script, gateway_dir, port, NULL};
    harness_process renderer = {.pid = harness_spawn(render, env, out->log_path)};
    if (renderer.pid <= 0 || harness_process_stop(&renderer, 0, 20000) != 0)
        return false;
    /* "master_process off": one process, so PR_SET_PDEATHSIG in spawn() reaches the process
     * that holds the port; a master's workers would outlive a test that crashed. */
    char *argv[] = {"nginx", "-c", conf, "-p", gateway_dir, "-g", "master_process off;", NULL};
    out->pid = harness_spawn(argv, NULL, out->log_path);
    return out->pid > 0 && harness_wait_port(out->port, 10000);
}

bool harness_sanitized(void) {
#ifdef SANITIZED
    return true;
#else
    return false;
#endif
}

bool harness_publish_with_id(const char *nats_url, const char *subject, const char *msg_id) {
    natsConnection *connection = NULL;
    jsCtx *js = NULL;
    natsMsg *message = NULL;
    jsPubAck *ack = NULL;
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MsgId = msg_id;
    bool ok = harness_nats_connect(&connection, nats_url) == NATS_OK &&
              natsConnection_JetStream(&js, connection, NULL) == NATS_OK &&
              natsMsg_Create(&message, subject, NULL, "", 0) == NATS_OK &&
              js_PublishMsg(&ack, js, message, &options, NULL) == NATS_OK;
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(message);
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
    return ok;
}
