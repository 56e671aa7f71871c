/* stack_fixture.h - the shared stack of the catalog suites (nats-server and one catalog
 * process, started once before all tests) and shorthands for calling it. */
#ifndef TESTS_STACK_FIXTURE_H
#define TESTS_STACK_FIXTURE_H

#include "harness.h"
#include "library/catalog/v1/catalog.pb-c.h"

typedef Library__Catalog__V1__Book Book;

#define CATALOG "/library.catalog.v1.CatalogService/"

/* The test directory, catalog address and NATS URL of the shared stack (from the env). */
const char *fixture_dir(void);
const char *fixture_catalog_address(void);
const char *fixture_nats_url(void);
const char *fixture_lending_address(void);

/* lending's settings in the shared stack (tests of other settings start their own) */
#define FIXTURE_LENDING_ENV "RECONCILE_INTERVAL=1s", "RECONCILE_AFTER=2s", "BORROW_WAIT=3s"

/* Starts lending against the given catalog and NATS with extra settings (NULL-terminated). */
bool fixture_start_lending(const char *dir, const char *nats_url, const char *catalog_address,
                           const char *const *extra_env, harness_process *out);

/* A client to the shared catalog and an arena, freed by fixture_teardown. */
extern rpc_client *client;
extern rpc_client *lending;
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

#endif
