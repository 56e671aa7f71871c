/* stack_fixture.h - the shared stack of the integration suites (nats-server, redis-server,
 * catalog, lending and mypage, started once before all tests) and shorthands for calling it. */
#ifndef TESTS_STACK_FIXTURE_H
#define TESTS_STACK_FIXTURE_H

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "library/catalog/v1/catalog.pb-c.h"
#include "library/lending/v1/lending.pb-c.h"

typedef Library__Catalog__V1__Book Book;

#define CATALOG "/library.catalog.v1.CatalogService/"

/* The test directory, catalog address and NATS URL of the shared stack (from the env). */
const char *fixture_dir(void);
const char *fixture_catalog_address(void);
const char *fixture_nats_url(void);
const char *fixture_lending_address(void);
const char *fixture_mypage_address(void);
const char *fixture_redis_url(void);
/* The /metrics port of a shared service: "catalog", "lending" or "mypage". */
int fixture_metrics_port(const char *service);

/* lending's settings in the shared stack (tests of other settings start their own) */
#define FIXTURE_LENDING_ENV "RECONCILE_INTERVAL=1s", "RECONCILE_AFTER=2s", "BORROW_WAIT=3s"

/* Starts lending against the given catalog and NATS with extra settings (NULL-terminated). */
bool fixture_start_lending(const char *dir, const char *nats_url, const char *catalog_address,
                           const char *const *extra_env, harness_process *out);

/* Starts mypage against the given NATS and Redis with extra settings (NULL-terminated). */
bool fixture_start_mypage(const char *dir, const char *nats_url, const char *redis_url,
                          const char *const *extra_env, harness_process *out);

/* Starts the nginx gateway (tools/gateway) in front of the shared catalog, lending and mypage,
 * rendered into fixture_dir()/name (one name per test); stop it with harness_process_stop. */
void fixture_gateway_start(const char *name, harness_process *out);

/* Clients to the shared services and an arena, freed by fixture_teardown. */
extern rpc_client *client;
extern rpc_client *lending;
extern rpc_client *mypage;
extern arena *mem;
void fixture_setup(void);
void fixture_teardown(void);

const char *admin_bearer(void);
const char *user_bearer(const char *user);

/* Registers a book as admin and asserts success. */
Book *register_book(const char *title, const char *author, const char *isbn, int copies);
status_code call_catalog(const char *method, const ProtobufCMessage *request,
                         const ProtobufCMessageDescriptor *response_type, const char *bearer,
                         ProtobufCMessage **response, status *st);

/* A stack of a test's own, for tests that crash, stop or reconfigure its parts: nats-server,
 * the catalog (events redelivered after 2 s), lending with lending_env and, when with_mypage,
 * redis-server and mypage with mypage_env; all under fixture_dir()/name. */
typedef struct test_stack {
    char dir[512];
    harness_process nats, redis, catalog, lending, mypage;
    rpc_client *catalog_client, *lending_client, *mypage_client;
} test_stack;

void test_stack_start(test_stack *s, const char *name, const char *const *lending_env,
                      bool with_mypage, const char *const *mypage_env);
/* Only nats-server and the catalog, with catalog_env added to its settings (NULL-terminated). */
void test_stack_start_catalog(test_stack *s, const char *name, const char *const *catalog_env);
/* Stops what still runs and asserts that every service exited cleanly (0) on SIGTERM (a
 * service the test stopped itself is not stopped again). */
void test_stack_stop(test_stack *s);
/* Every loan of user, all pages of ListLoans through lending_client as bearer, from a; false
 * when a call failed. */
bool fixture_list_loans(rpc_client *lending_client, arena *a, const char *bearer, const char *user,
                        Library__Lending__V1__Loan ***out, size_t *count);
/* Registers a book (author "A") with `copies` copies through catalog, as the admin bearer. */
Book *fixture_register_on(rpc_client *catalog, const char *admin, const char *title, int copies);
/* Writes a user's record into lending's "loans" bucket of the stack's NATS, as lending would
 * store it (created: the user must have none yet); for tests that plant what a crash leaves. */
void test_stack_plant_user_record(test_stack *s, const char *user, const ProtobufCMessage *record);

/* Registers a book with `copies` copies in the stack's catalog. */
Book *test_stack_register(test_stack *s, const char *title, int copies);

/* BorrowBook of book_id in the stack's lending as user, then GetLoan until the saga has
 * decided (ACTIVE or CANCELED; asserts it does within 10 s). */
Library__Lending__V1__Loan *test_stack_borrow_decided(test_stack *s, const char *book_id, const char *user);
/* BorrowBook as bearer on the stack's lending: the loan, asserted ACTIVE (the saga done within
 * BORROW_WAIT). */
Library__Lending__V1__Loan *test_stack_borrow_as(test_stack *s, const char *bearer, const char *book_id);
/* ReturnBook as bearer, asserted OK. */
Library__Lending__V1__Loan *test_stack_return_as(test_stack *s, const char *bearer, const char *loan_id);

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
/* grpc.health.v1 Check of one name ("" is the whole server's readiness): the status, or -1
 * when the call itself failed. */
int fixture_health(rpc_client *service, const char *name);

/* Polls the gRPC health check of a service until it says SERVING (its dependencies are back,
 * after a restart); asserts it does within timeout_ms. what names it in the message. */
void wait_serving(rpc_client *service, const char *what, int64_t timeout_ms);

/* A mypage of a test's own beside the shared one (on the shared NATS and Redis), with the
 * extra settings (NULL-terminated) and its log and test key under dir; asserts that it starts
 * and connects *client_out to it. Stop it with harness_process_stop. */
void fixture_own_mypage(const char *dir, const char *const *env, harness_process *out,
                        rpc_client **client_out);

#endif
