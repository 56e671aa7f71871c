/* test_cluster.c - the shape the chart ships: a three-node JetStream cluster with the stream
 * and every bucket at three replicas, two replicas of each service given all three NATS URLs,
 * lending reaching both catalog replicas, and the gateway spreading each route over both
 * replicas. Each test starts a cluster stack of its own and drives it through the gateway, as
 * a client would. */
#include <criterion/criterion.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cluster_stack.h"
#include "library/catalog/v1/catalog.pb-c.h"
#include "library/lending/v1/lending.pb-c.h"

TestSuite(cluster, .init = fixture_setup, .fini = fixture_teardown, .timeout = 240);

typedef Library__Lending__V1__Loan Loan;

#define LENDING "/library.lending.v1.LendingService/"
#define ACTIVE LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE
#define PENDING LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_PENDING
#define CANCELED LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_CANCELED

/* --- the stream and buckets at R3; NATS_REPLICAS the cluster cannot place ------------------ */

static int replicas_of_stream(const char *urls, const char *stream) {
    natsConnection *connection = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *info = NULL;
    int replicas = -1;
    if (natsConnection_ConnectTo(&connection, urls) == NATS_OK &&
        natsConnection_JetStream(&js, connection, NULL) == NATS_OK &&
        js_GetStreamInfo(&info, js, stream, NULL, NULL) == NATS_OK)
        replicas = (int)info->Config->Replicas;
    jsStreamInfo_Destroy(info);
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
    return replicas;
}

Test(cluster, the_stream_and_every_bucket_have_three_replicas) {
    cluster_stack c;
    cluster_stack_start(&c, "replicas");
    const char *streams[] = {"LIBRARY", "KV_books", "KV_loans"};
    for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++)
        cr_expect_eq(replicas_of_stream(c.nats.urls, streams[i]), 3, "%s has %d replicas", streams[i],
                     replicas_of_stream(c.nats.urls, streams[i]));
    int leader = nats_cluster_stream_leader(&c.nats, "LIBRARY");
    cr_assert_geq(leader, 0, "the LIBRARY stream has no leader");
    cr_log_info("LIBRARY is led by n%d", leader + 1);
    cluster_stack_stop(&c);
}

/* A service whose NATS_REPLICAS the cluster cannot place: exit 2 at once, with a log line that
 * says what to change (not an endless retry). */
static void expect_replicas_refused(const char *dir, const char *urls, const char *replicas) {
    char nats_url[400], replicas_setting[32];
    snprintf(nats_url, sizeof nats_url, "NATS_URL=%s", urls);
    snprintf(replicas_setting, sizeof replicas_setting, "NATS_REPLICAS=%s", replicas);
    const char *env[] = {nats_url, replicas_setting, NULL};
    int64_t started = harness_now_ms();
    int code = harness_service_run("catalog", "", dir, env, 30000);
    int64_t took = harness_now_ms() - started;
    cr_assert_eq(code, 2, "catalog with %s exited with %d", replicas_setting, code);
    char log_path[600];
    snprintf(log_path, sizeof log_path, "%s/catalog.log", dir);
    char command[700];
    snprintf(command, sizeof command, "grep -c 'NATS_REPLICAS=%s, but' '%s'", replicas, log_path);
    int grep_exit = -1;
    harness_command_output(mem, command, &grep_exit);
    cr_assert_eq(grep_exit, 0, "no log line names NATS_REPLICAS (see %s)", log_path);
    cr_log_info("%s: exit 2 after %lld ms", replicas_setting, (long long)took);
}

Test(cluster, nats_replicas_the_cluster_cannot_place_stop_a_service_with_exit_2) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/too-many-replicas", fixture_dir());
    mkdir(dir, 0755);
    cr_assert(harness_keys_create(dir));
    nats_cluster cluster;
    cr_assert(nats_cluster_start(dir, &cluster));
    expect_replicas_refused(dir, cluster.urls, "5");
    nats_cluster_stop(&cluster);

    harness_process single;
    cr_assert(harness_nats_start(dir, 0, &single));
    expect_replicas_refused(dir, single.url, "3");
    harness_process_stop(&single, SIGTERM, 5000);
}

/* --- a rush through both replicas ------------------------------------------------------------ */

typedef struct rush_reader {
    pthread_t thread;
    cluster_stack *stack;
    const char *book_id;
    char user[32];
    char bearer[1024];
    status_code code;
    char loan_id[64];
} rush_reader;

static void *rush_main(void *arg) {
    rush_reader *r = arg;
    arena *a = arena_create(0);
    Library__Lending__V1__BorrowBookRequest request = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    request.book_id = (char *)r->book_id;
    request.request_id = r->user;
    ProtobufCMessage *response = NULL;
    status st;
    r->code = harness_call(r->stack->gateway_client, LENDING "BorrowBook", &request.base,
                           &library__lending__v1__loan__descriptor, a, r->bearer, &response, &st);
    if (r->code == STATUS_OK)
        snprintf(r->loan_id, sizeof r->loan_id, "%s", ((Loan *)response)->loan_id);
    arena_destroy(a);
    return NULL;
}

Test(cluster, a_rush_of_fifty_readers_on_ten_copies_through_both_replicas_lends_exactly_ten) {
    cluster_stack c;
    cluster_stack_start(&c, "rush");
    enum { READERS = 50, COPIES = 10 };
    Book *book = cluster_stack_register(&c, "Rush hour", COPIES);
    static rush_reader readers[READERS];
    for (int i = 0; i < READERS; i++) {
        readers[i] = (rush_reader){.stack = &c, .book_id = book->book_id};
        snprintf(readers[i].user, sizeof readers[i].user, "rusher-%d", i);
        snprintf(readers[i].bearer, sizeof readers[i].bearer, "%s",
                 harness_bearer(mem, c.dir, readers[i].user, false));
    }
    for (int i = 0; i < READERS; i++)
        pthread_create(&readers[i].thread, NULL, rush_main, &readers[i]);
    for (int i = 0; i < READERS; i++)
        pthread_join(readers[i].thread, NULL);

    int active = 0, canceled = 0;
    for (int i = 0; i < READERS; i++) {
        cr_assert_eq(readers[i].code, STATUS_OK, "reader %d: %s", i, status_code_name(readers[i].code));
        Loan *loan = cluster_stack_settled_loan(&c, readers[i].bearer, readers[i].loan_id);
        cr_assert_neq(loan->status, PENDING, "loan %s is still PENDING", loan->loan_id);
        active += loan->status == ACTIVE;
        canceled += loan->status == CANCELED && strcmp(loan->cancel_reason, "OUT_OF_STOCK") == 0;
    }
    cr_assert_eq(active, COPIES, "%d ACTIVE loans of %d copies", active, COPIES);
    cr_assert_eq(canceled, READERS - COPIES, "%d CANCELED OUT_OF_STOCK", canceled);
    /* both catalog replicas agree that the shelf is empty */
    for (int i = 0; i < CLUSTER_REPLICAS; i++)
        cr_assert_eq(cluster_stack_available(&c, i, book->book_id), 0,
                     "catalog replica %d shows copies left", i + 1);
    /* and both lending replicas took part */
    cr_assert(cluster_stack_both_replicas_served(&c, "lending", "BorrowBook"),
              "one lending replica answered every BorrowBook: the gateway did not spread them");
    cluster_stack_stop(&c);
}
