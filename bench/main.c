/* main.c - the benchmark: references (R1 raw C core no-op, R2 the no-op through libshared,
 * R3 JetStream publish + ack, R4 Redis GET), then the services' workloads with the same
 * client and the same shapes, resident memory before and after a long run, and the ratios
 * against the targets. tools/bench starts the servers and passes their addresses.
 *
 * Exit status: 0 when every measurement ran without an unexpected error, 1 otherwise,
 * 2 for bad arguments. Missed targets are reported, never failed: performance is measured. */
#include <grpc/grpc.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "load.h"
#include "reference.h"
#include "report.h"
#include "workloads.h"

enum { MAX_RESULTS = 64, MAX_RATIOS = 32, MAX_SHAPES = 2 };

typedef struct service_target {
    const char *name;
    const char *address; /* NULL: not running */
    int pid;
} service_target;

typedef struct bench_config {
    bool smoke;
    const char *keys;
    const char *raw;
    const char *framework;
    const char *nats;
    const char *redis;
    service_target services[3]; /* catalog, lending, mypage */
    const char *json;
    const char *machine;
    double warmup;
    double seconds;
    int books;
    uint64_t soak_calls;
    double soak_seconds;
    int shapes[MAX_SHAPES][2];
    int shape_count;
    const char *only; /* run only measurements whose name contains this (profiling) */
} bench_config;

static bench_result results[MAX_RESULTS];
static int result_count;
static ratio ratios[MAX_RATIOS];
static int ratio_count;

static bench_result *result_new(void) {
    if (result_count == MAX_RESULTS) {
        fprintf(stderr, "bench: too many measurements\n");
        exit(1);
    }
    return &results[result_count++];
}

static void progress(const bench_result *r) {
    if (r->skipped) {
        fprintf(stderr, "bench: %-28s %dx%d skipped: %s\n", r->name, r->connections, r->streams,
                r->first_error);
        return;
    }
    fprintf(stderr, "bench: %-28s %dx%d %9.0f ops/s  p99 %7.2f ms  errors %llu%s%s\n", r->name,
            r->connections, r->streams, result_rate(r),
            (double)histogram_quantile(&r->latency, 0.99) / 1000.0,
            (unsigned long long)(r->errors), r->first_error[0] ? "  first: " : "", r->first_error);
}

/* Whether name contains the first length bytes of part. */
static bool contains(const char *name, const char *part, size_t length) {
    for (const char *at = name; *at != '\0'; at++)
        if (strncmp(at, part, length) == 0)
            return true;
    return false;
}

/* --only takes one name part or several separated by commas ("GetBook,GetMypage"). */
static bool wanted(const bench_config *c, const char *name) {
    if (c->only == NULL)
        return true;
    for (const char *part = c->only; *part != '\0';) {
        size_t length = strcspn(part, ",");
        if (length > 0 && contains(name, part, length))
            return true;
        part += length;
        part += *part == ',';
    }
    return false;
}

static const bench_result *find(const char *name, int connections, int streams, bool paced) {
    for (int i = 0; i < result_count; i++) {
        const bench_result *r = &results[i];
        if (strcmp(r->name, name) == 0 && r->connections == connections && r->streams == streams &&
            (r->target_rate > 0) == paced && !r->skipped)
            return r;
    }
    return NULL;
}

/* --- the no-op references through the load client ---------------------------------- */

static const char *const noop_methods[] = {
    "/library.bench.v1.NoopService/Noop",
    "/library.bench.v1.NoopService/NoopAuth",
};

static void noop_begin(void *state, int slot, load_request *request) {
    (void)state;
    (void)slot;
    request->method = 0;
    request->message = grpc_empty_slice();
}

static void noop_auth_begin(void *state, int slot, load_request *request) {
    fixture *f = state;
    request->method = 1;
    request->message = grpc_empty_slice();
    request->authorization = &f->readers[slot];
}

static load_step noop_reply(void *state, int slot, int method, const uint8_t *bytes, size_t size,
                            load_request *next) {
    (void)state, (void)slot, (void)method, (void)bytes, (void)size, (void)next;
    return LOAD_DONE;
}

static void run_noop(const bench_config *c, fixture *f, const char *name, const char *target,
                     bool with_token, int connections, int streams) {
    if (!wanted(c, name))
        return;
    load_plan plan = {.methods = noop_methods, .method_count = 2, .state = f,
                      .begin = with_token ? noop_auth_begin : noop_begin, .reply = noop_reply};
    load_options options = {.targets = &target, .target_count = 1, .connections = connections,
                            .streams = streams, .warmup_seconds = c->warmup,
                            .seconds = c->seconds};
    bench_result *r = result_new();
    load_run(name, &options, &plan, r);
    progress(r);
}

/* --- service workloads ---------------------------------------------------------------- */

static bench_result *run_workload(const bench_config *c, fixture *f, workload_kind kind,
                                  int connections, int streams, double rate) {
    if (!wanted(c, workload_name(kind)))
        return NULL;
    bench_result *r = result_new();
    if ((kind == WORKLOAD_GET_MYPAGE && f->mypage == NULL)) {
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "%s", workload_name(kind));
        r->connections = connections;
        r->streams = streams;
        r->skipped = 1;
        snprintf(r->first_error, sizeof r->first_error,
                 "the mypage service is not built or did not start");
        progress(r);
        return r;
    }
    load_plan plan;
    const char *targets[3];
    size_t target_count = 0;
    workload_plan(f, kind, &plan, targets, &target_count);
    load_options options = {.targets = targets, .target_count = target_count,
                            .connections = connections, .streams = streams,
                            .warmup_seconds = c->warmup, .seconds = c->seconds, .rate = rate};
    load_run(workload_name(kind), &options, &plan, r);
    progress(r);
    return r;
}

/* --- resident memory -------------------------------------------------------------------- */

static long rss_kb(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, file))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(file);
    return kb;
}

/* GetLoan has no measurement but its soak: --only GetLoan asks for that. */
static bool soak_wanted(const bench_config *c, workload_kind kind) {
    return wanted(c, "soak") || (kind == WORKLOAD_GET_LOAN && wanted(c, "GetLoan"));
}

/* Calls the service's cheapest read soak_calls/10 times (at most soak_seconds/2), notes RSS,
 * then up to soak_calls in all (at most soak_seconds more), notes RSS again. */
static void soak(const bench_config *c, fixture *f, const service_target *service,
                 workload_kind kind, rss_sample *sample) {
    sample->workload = workload_name(kind);
    if (!sample->measured || service->address == NULL || !soak_wanted(c, kind))
        return;
    load_plan plan;
    const char *targets[3];
    size_t target_count = 0;
    workload_plan(f, kind, &plan, targets, &target_count);
    int connections = c->shapes[c->shape_count - 1][0], streams = c->shapes[c->shape_count - 1][1];
    load_options options = {.targets = targets, .target_count = target_count,
                            .connections = connections, .streams = streams,
                            .max_operations = c->soak_calls / 10,
                            .seconds = c->soak_seconds / 2};
    char name[48];
    snprintf(name, sizeof name, "%s soak", workload_name(kind));
    bench_result *first = result_new();
    load_run(name, &options, &plan, first);
    progress(first);
    sample->small_calls = first->operations;
    sample->small_kb = rss_kb(service->pid);
    options.max_operations = c->soak_calls - c->soak_calls / 10;
    options.seconds = c->soak_seconds;
    bench_result *second = result_new();
    load_run(name, &options, &plan, second);
    progress(second);
    sample->large_calls = first->operations + second->operations;
    sample->large_seconds = second->seconds;
    sample->large_kb = rss_kb(service->pid);
}

/* --- ratios ------------------------------------------------------------------------------- */

static void ratio_of(const char *what, const bench_result *top, const bench_result *bottom,
                     double target, const char *shape) {
    ratio *q = &ratios[ratio_count++];
    memset(q, 0, sizeof *q);
    snprintf(q->what, sizeof q->what, "%s", what);
    snprintf(q->shape, sizeof q->shape, "%s", shape);
    q->target = target;
    q->unit = "%";
    q->available = top != NULL && bottom != NULL && result_rate(bottom) > 0;
    if (q->available)
        q->measured = result_rate(top) / result_rate(bottom);
    else
        snprintf(q->note, sizeof q->note, "not measured");
}

static void compute_ratios(const bench_config *c, const rss_sample *samples, int sample_count) {
    for (int i = 0; i < c->shape_count; i++) {
        int n = c->shapes[i][0], m = c->shapes[i][1];
        char shape[16];
        snprintf(shape, sizeof shape, "%dx%d", n, m);
        const bench_result *r1 = find("R1 raw C core no-op", n, m, false);
        ratio_of("framework no-op R2 / R1", find("R2 libshared no-op", n, m, false), r1, 0.90,
                 shape);
        ratio_of("GetBook / R1", find("GetBook", n, m, false), r1, 0.70, shape);
        ratio_of("GetMypage / R1", find("GetMypage", n, m, false), r1, 0.50, shape);
        /* 4%: issue 19's target for this saga (17 acknowledged JetStream writes per cycle at
         * first, so about 6% at best); issue 8 had asked 25% */
        ratio_of("borrow+return cycles / R3 JetStream publish",
                 find("BorrowBook+ReturnBook", n, m, false),
                 find("R3 JetStream publish", n, m, false), 0.04, shape);
        /* reported against R3 like the borrow cycle; the design sets no target for it */
        ratio_of("hold+collect+return cycles / R3 JetStream publish",
                 find("PlaceHold+BorrowBook+ReturnBook", n, m, false),
                 find("R3 JetStream publish", n, m, false), 0.0, shape);
    }
    int n = c->shapes[c->shape_count - 1][0], m = c->shapes[c->shape_count - 1][1];
    const bench_result *half = find("BorrowBook+ReturnBook", n, m, true);
    ratio *q = &ratios[ratio_count++];
    memset(q, 0, sizeof *q);
    snprintf(q->what, sizeof q->what, "borrow+return p99 at half the peak rate");
    snprintf(q->shape, sizeof q->shape, "%dx%d", n, m);
    q->unit = "ms";
    q->at_most = true;
    q->target = 50;
    q->available = half != NULL && half->operations > 0;
    if (q->available) {
        q->measured = (double)histogram_quantile(&half->latency, 0.99) / 1000.0;
        snprintf(q->note, sizeof q->note, "at %.0f cycles/s", half->target_rate);
    } else {
        snprintf(q->note, sizeof q->note, "not measured");
    }
    for (int i = 0; i < sample_count; i++) {
        const rss_sample *s = &samples[i];
        q = &ratios[ratio_count++];
        memset(q, 0, sizeof *q);
        snprintf(q->what, sizeof q->what, "%s idle RSS", s->service);
        snprintf(q->shape, sizeof q->shape, "-");
        q->unit = "MB";
        q->at_most = true;
        q->target = 20;
        q->available = s->measured && s->idle_kb > 0;
        q->measured = s->idle_kb / 1024.0;
        if (!q->available)
            snprintf(q->note, sizeof q->note, "not running");
        q = &ratios[ratio_count++];
        memset(q, 0, sizeof *q);
        snprintf(q->what, sizeof q->what, "%s RSS growth, %llu -> %llu calls", s->service,
                 (unsigned long long)s->small_calls, (unsigned long long)s->large_calls);
        snprintf(q->shape, sizeof q->shape, "-");
        q->unit = "%";
        q->at_most = true;
        q->target = 0.10;
        q->available = s->measured && s->small_kb > 0 && s->large_kb > 0;
        if (q->available)
            q->measured = (double)(s->large_kb - s->small_kb) / (double)s->small_kb;
        else
            snprintf(q->note, sizeof q->note, "not measured");
    }
}

/* --- arguments ------------------------------------------------------------------------------ */

static void usage(void) {
    fprintf(stderr,
            "usage: bench --keys DIR --raw ADDR --framework ADDR --nats URL --redis HOST:PORT\n"
            "             --catalog ADDR --catalog-pid PID --lending ADDR --lending-pid PID\n"
            "             [--mypage ADDR --mypage-pid PID] [--smoke] [--json PATH]\n"
            "             [--machine TEXT] [--seconds S] [--warmup S] [--books N]\n"
            "             [--soak-calls N] [--soak-seconds S] [--only PART[,PART...]]\n"
            "Normally run through tools/bench, which starts every server.\n");
    exit(2);
}

static void parse(int argc, char **argv, bench_config *c) {
    memset(c, 0, sizeof *c);
    c->services[0].name = "catalog";
    c->services[1].name = "lending";
    c->services[2].name = "mypage";
    double seconds = -1, warmup = -1, soak_seconds = -1;
    int books = -1;
    long long soak_calls = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--smoke") == 0) {
            c->smoke = true;
            continue;
        }
        if (v == NULL)
            usage();
        i++;
        if (strcmp(a, "--keys") == 0) c->keys = v;
        else if (strcmp(a, "--raw") == 0) c->raw = v;
        else if (strcmp(a, "--framework") == 0) c->framework = v;
        else if (strcmp(a, "--nats") == 0) c->nats = v;
        else if (strcmp(a, "--redis") == 0) c->redis = v;
        else if (strcmp(a, "--catalog") == 0) c->services[0].address = v;
        else if (strcmp(a, "--catalog-pid") == 0) c->services[0].pid = atoi(v);
        else if (strcmp(a, "--lending") == 0) c->services[1].address = v;
        else if (strcmp(a, "--lending-pid") == 0) c->services[1].pid = atoi(v);
        else if (strcmp(a, "--mypage") == 0) c->services[2].address = v;
        else if (strcmp(a, "--mypage-pid") == 0) c->services[2].pid = atoi(v);
        else if (strcmp(a, "--json") == 0) c->json = v;
        else if (strcmp(a, "--machine") == 0) c->machine = v;
        else if (strcmp(a, "--seconds") == 0) seconds = atof(v);
        else if (strcmp(a, "--warmup") == 0) warmup = atof(v);
        else if (strcmp(a, "--books") == 0) books = atoi(v);
        else if (strcmp(a, "--soak-calls") == 0) soak_calls = atoll(v);
        else if (strcmp(a, "--soak-seconds") == 0) soak_seconds = atof(v);
        else if (strcmp(a, "--only") == 0) c->only = v;
        else usage();
    }
    if (!c->keys || !c->raw || !c->framework || !c->nats || !c->redis || !c->services[0].address ||
        !c->services[1].address)
        usage();
    if (c->smoke) {
        c->seconds = 0.25;
        c->warmup = 0.15;
        c->books = 200;
        c->soak_calls = 2000;
        c->soak_seconds = 5;
        c->shape_count = 2;
        c->shapes[0][0] = c->shapes[0][1] = 1;
        c->shapes[1][0] = c->shapes[1][1] = 4;
    } else {
        c->seconds = 4;
        c->warmup = 1;
        c->books = 10000;
        c->soak_calls = 1000000;
        c->soak_seconds = 50; /* per service: keeps the whole run, build included, under 10 min */
        c->shape_count = 2;
        c->shapes[0][0] = c->shapes[0][1] = 1;
        c->shapes[1][0] = c->shapes[1][1] = 16;
    }
    if (seconds > 0) c->seconds = seconds;
    if (warmup >= 0) c->warmup = warmup;
    if (books > 0) c->books = books;
    if (soak_calls > 0) c->soak_calls = (uint64_t)soak_calls;
    if (soak_seconds > 0) c->soak_seconds = soak_seconds;
}

static bool errors_in(const bench_result *r) {
    return !r->skipped && (r->errors > 0 || r->bad_replies > 0);
}

int main(int argc, char **argv) {
    bench_config c;
    parse(argc, argv, &c);
    setvbuf(stdout, NULL, _IOLBF, 0);
    grpc_init();
    nats_Open(0); /* R3 uses NATS.c as the services do: no spinning on its mutexes */
    bool setup_ok = true;

    rss_sample samples[3];
    memset(samples, 0, sizeof samples);
    for (int i = 0; i < 3; i++) {
        samples[i].service = c.services[i].name;
        samples[i].measured = c.services[i].address != NULL && c.services[i].pid > 0;
        if (samples[i].measured)
            samples[i].idle_kb = rss_kb(c.services[i].pid);
    }

    fixture f;
    char private_key[512];
    snprintf(private_key, sizeof private_key, "%s/jwt-private.pem", c.keys);
    if (!fixture_init(&f, private_key, c.services[0].address, c.services[1].address,
                      c.services[2].address)) {
        fixture_destroy(&f);
        grpc_shutdown();
        return 1;
    }

    /* References. */
    char redis_host[64] = "127.0.0.1";
    int redis_port = 6379;
    const char *colon = strrchr(c.redis, ':');
    if (colon) {
        snprintf(redis_host, sizeof redis_host, "%.*s", (int)(colon - c.redis), c.redis);
        redis_port = atoi(colon + 1);
    }
    for (int i = 0; i < c.shape_count; i++) {
        int n = c.shapes[i][0], m = c.shapes[i][1];
        run_noop(&c, &f, "R1 raw C core no-op", c.raw, false, n, m);
        run_noop(&c, &f, "R2 libshared no-op", c.framework, false, n, m);
        run_noop(&c, &f, "R2 libshared no-op + JWT", c.framework, true, n, m);
        reference_options options = {.connections = n, .streams = m,
                                     .warmup_seconds = c.warmup, .seconds = c.seconds};
        if (wanted(&c, "R3 JetStream publish")) {
            reference_jetstream_publish(c.nats, &options, result_new());
            progress(&results[result_count - 1]);
        }
        if (wanted(&c, "R4 Redis GET")) {
            reference_redis_get(redis_host, redis_port, &options, result_new());
            progress(&results[result_count - 1]);
        }
    }

    /* Data: the search corpus, a book per slot, mypage pages. */
    int max_n = c.shapes[c.shape_count - 1][0], max_m = c.shapes[c.shape_count - 1][1];
    bool any_workload = wanted(&c, "GetBook SearchBooks GetMypage BorrowBook+ReturnBook "
                                   "PlaceHold+BorrowBook+ReturnBook Mixed 90/10 GetLoan soak");
    bench_result *seeding = any_workload ? result_new() : NULL;
    if (!any_workload) {
        setup_ok = true;
    } else if (!fixture_seed_books(&f, c.books, max_n, max_m, seeding)) {
        setup_ok = false;
    } else {
        progress(seeding);
        if (f.mypage && !fixture_fill_mypages(&f, c.smoke ? 20000 : 30000)) {
            fprintf(stderr, "bench: GetMypage workloads skipped: the pages did not fill\n");
            f.mypage = NULL;
            setup_ok = false;
        }
    }

    if (setup_ok && any_workload) {
        for (int i = 0; i < c.shape_count; i++) {
            int n = c.shapes[i][0], m = c.shapes[i][1];
            run_workload(&c, &f, WORKLOAD_GET_BOOK, n, m, 0);
            run_workload(&c, &f, WORKLOAD_SEARCH_BOOKS, n, m, 0);
            run_workload(&c, &f, WORKLOAD_GET_MYPAGE, n, m, 0);
            bench_result *peak = run_workload(&c, &f, WORKLOAD_BORROW_RETURN, n, m, 0);
            if (i == c.shape_count - 1 && peak && result_rate(peak) > 0)
                run_workload(&c, &f, WORKLOAD_BORROW_RETURN, n, m, result_rate(peak) / 2);
            run_workload(&c, &f, WORKLOAD_HOLD_CYCLE, n, m, 0);
            run_workload(&c, &f, WORKLOAD_MIXED, n, m, 0);
        }
        soak(&c, &f, &c.services[0], WORKLOAD_GET_BOOK, &samples[0]);
        bool loans = fixture_prepare_get_loan(&f, max_n * max_m);
        if (!loans && soak_wanted(&c, WORKLOAD_GET_LOAN)) {
            /* no borrow cycles ran (--only): one second of them leaves a loan per slot */
            load_plan plan;
            const char *targets[3];
            size_t target_count = 0;
            workload_plan(&f, WORKLOAD_BORROW_RETURN, &plan, targets, &target_count);
            load_options options = {.targets = targets, .target_count = target_count,
                                    .connections = max_n, .streams = max_m, .seconds = 1};
            bench_result *r = result_new();
            load_run("BorrowBook+ReturnBook (loans for GetLoan)", &options, &plan, r);
            progress(r);
            loans = fixture_prepare_get_loan(&f, max_n * max_m);
        }
        if (loans)
            soak(&c, &f, &c.services[1], WORKLOAD_GET_LOAN, &samples[1]);
        if (f.mypage)
            soak(&c, &f, &c.services[2], WORKLOAD_GET_MYPAGE, &samples[2]);
    }

    compute_ratios(&c, samples, 3);
    struct utsname system;
    char machine[256];
    if (c.machine == NULL) {
        uname(&system);
        snprintf(machine, sizeof machine, "%s %s", system.machine, system.release);
    }
    const char *machine_text = c.machine ? c.machine : machine;
    printf("\n== library benchmark%s (%s)\n\n", c.smoke ? " smoke" : "", machine_text);
    report_table(stdout, results, result_count);
    printf("\n");
    report_ratios(stdout, ratios, ratio_count);
    printf("\n");
    report_rss(stdout, samples, 3);
    if (c.json && !report_json(c.json, machine_text, c.smoke, results, result_count, ratios,
                               ratio_count, samples, 3))
        fprintf(stderr, "bench: cannot write %s\n", c.json);

    int failed = setup_ok ? 0 : 1;
    for (int i = 0; i < result_count; i++) {
        if (errors_in(&results[i])) {
            fprintf(stderr, "bench: %s %dx%d had errors: %s\n", results[i].name,
                    results[i].connections, results[i].streams, results[i].first_error);
            failed++;
        }
    }
    fixture_destroy(&f);
    grpc_shutdown();
    nats_Close();
    printf("\n%d passed, %d failed\n", failed ? 0 : 1, failed ? 1 : 0);
    return failed ? 1 : 0;
}
