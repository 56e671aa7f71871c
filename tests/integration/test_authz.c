/* test_authz.c - the authorization matrix, through the nginx gateway: every method that
 * reflection lists x {no token, garbage token, expired token, another user, the owner, an
 * administrator} gets exactly the status the code's method tables promise (RPC_ACCESS_*),
 * plus the ownership rules of docs/decisions.md for another user's resources.
 *
 * Nothing here lists the methods by hand: the method list comes from reflection through the
 * gateway, each method's access and message types from the services' own rpc_service tables
 * (rpc_server_methods on a server built from them, with health and reflection as the
 * framework adds them). The table below only says how to make a valid request for a method
 * and what another user gets; a method without a row fails the test. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_descriptor.h"
#include "catalog/catalog_service.h"
#include "lending/lending_service.h"
#include "library/lending/v1/lending.pb-c.h"
#include "mypage/mypage_service.h"
#include "stack_fixture.h"
#include "text.h"

static harness_process gateway;
static rpc_client *through_gateway;

static void authz_setup(void) {
    fixture_setup();
    char name[32];
    text_random_hex(name, 6);
    fixture_gateway_start(arena_sprintf(mem, "gateway-%s", name), &gateway);
    cr_assert_eq(rpc_client_create(gateway.address, 10000, &through_gateway, NULL), STATUS_OK);
}

static void authz_teardown(void) {
    rpc_client_destroy(through_gateway);
    harness_process_stop(&gateway, SIGTERM, 5000);
    fixture_teardown();
}

TestSuite(authz, .init = authz_setup, .fini = authz_teardown, .timeout = 120);

/* --- who calls ------------------------------------------------------------------------- */

typedef enum caller {
    CALLER_NONE,    /* no authorization header */
    CALLER_GARBAGE, /* "Bearer" + something that is not a JWT */
    CALLER_EXPIRED, /* the owner's token, expired an hour ago */
    CALLER_OTHER,   /* another user, acting on the owner's resources */
    CALLER_OWNER,   /* the user whose resources the requests name */
    CALLER_ADMIN,   /* role admin */
    CALLER_COUNT
} caller;

static const char *const caller_names[CALLER_COUNT] = {"none", "garbage", "expired", "other user",
                                                       "user", "admin"};

/* The resources the requests name; "$book", "$owner" and "$loan" in the rows stand for them. */
typedef struct world {
    const char *owner, *other;
    const char *book_id;
    const char *loan_id; /* the owner's ACTIVE loan */
    const char *bearer[CALLER_COUNT];
} world;

/* --- the rows: how to call each method, and what another user gets ------------------------ */

typedef struct field_value {
    const char *field;
    const char *value;
} field_value;

typedef struct method_row {
    const char *path;
    field_value request[3]; /* a valid request, by field name */
    /* What another user gets when the method is for any user (RPC_ACCESS_USER): OK when the
     * request names nothing of the owner's. */
    status_code other_user;
} method_row;

static const method_row rows[] = {
    {"/library.catalog.v1.CatalogService/RegisterBook",
     {{"title", "Authz matrix"}, {"author", "A"}, {"copies", "1"}}, STATUS_OK},
    {"/library.catalog.v1.CatalogService/UpdateBook", {{"book_id", "$book"}, {"title", "Authz matrix"}},
     STATUS_OK},
    {"/library.catalog.v1.CatalogService/AdjustStock", {{"book_id", "$book"}, {"delta", "1"}}, STATUS_OK},
    {"/library.catalog.v1.CatalogService/GetBook", {{"book_id", "$book"}}, STATUS_OK},
    {"/library.catalog.v1.CatalogService/SearchBooks", {{"query", "authz"}}, STATUS_OK},
    /* the borrower is the caller: another user borrowing makes their own loan */
    {"/library.lending.v1.LendingService/BorrowBook", {{"book_id", "$book"}}, STATUS_OK},
    /* another user's loan does not exist for the caller, so loan ids cannot be probed */
    {"/library.lending.v1.LendingService/ReturnBook", {{"loan_id", "$loan"}}, STATUS_NOT_FOUND},
    {"/library.lending.v1.LendingService/GetLoan", {{"loan_id", "$loan"}}, STATUS_NOT_FOUND},
    {"/library.lending.v1.LendingService/ListLoans", {{"user_id", "$owner"}}, STATUS_PERMISSION_DENIED},
    {"/library.mypage.v1.MypageService/GetMypage", {{"user_id", "$owner"}}, STATUS_PERMISSION_DENIED},
    {"/library.mypage.v1.MypageService/WatchMypage", {{"user_id", "$owner"}}, STATUS_PERMISSION_DENIED},
    {"/grpc.health.v1.Health/Check", {{"service", ""}}, STATUS_OK},
    {"/grpc.health.v1.Health/Watch", {{"service", ""}}, STATUS_OK},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", {{"list_services", "*"}}, STATUS_OK},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", {{"list_services", "*"}},
     STATUS_OK},
};
enum { ROW_COUNT = sizeof rows / sizeof rows[0] };

static const method_row *row_for(const char *path) {
    for (size_t i = 0; i < ROW_COUNT; i++)
        if (strcmp(rows[i].path, path) == 0)
            return &rows[i];
    return NULL;
}

/* What the code promises: the access level decides everything but another user's reach. */
static status_code expected_status(rpc_access access, caller who, const method_row *row) {
    if (access == RPC_ACCESS_PUBLIC)
        return STATUS_OK;
    if (who == CALLER_NONE || who == CALLER_GARBAGE || who == CALLER_EXPIRED)
        return STATUS_UNAUTHENTICATED;
    if (who == CALLER_ADMIN)
        return STATUS_OK;
    if (access == RPC_ACCESS_ADMIN)
        return STATUS_PERMISSION_DENIED;
    return who == CALLER_OTHER ? row->other_user : STATUS_OK;
}

/* --- the code's method tables -------------------------------------------------------------- */

typedef struct method_table {
    rpc_server *server; /* never started: it only holds the tables */
    auth_verifier *verifier;
    rpc_method_entry entries[64];
    size_t count;
} method_table;

/* A server with exactly what the three services serve (each binary serves one of them plus
 * health and reflection, added by rpc_server_create). */
static void method_table_load(method_table *t) {
    status st;
    const char *key = arena_sprintf(mem, "%s/jwt-public.pem", fixture_dir());
    cr_assert_eq(auth_verifier_create(key, "library", "library-api", 0, &t->verifier, &st), STATUS_OK,
                 "%s", st.message);
    rpc_server_options options = {.listen_address = "127.0.0.1:0", .verifier = t->verifier,
                                  .descriptor_set = library_api_descriptor_set,
                                  .descriptor_set_size = library_api_descriptor_set_size};
    cr_assert_eq(rpc_server_create(&options, &t->server, &st), STATUS_OK, "%s", st.message);
    const rpc_service *services[] = {&catalog_rpc_service, &lending_rpc_service, &mypage_rpc_service};
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(rpc_server_add_service(t->server, services[i], &st), STATUS_OK, "%s", st.message);
    t->count = rpc_server_methods(t->server, t->entries, 64);
    cr_assert_leq(t->count, 64);
}

static void method_table_free(method_table *t) {
    rpc_server_destroy(t->server);
    auth_verifier_destroy(t->verifier);
}

static const rpc_method_entry *method_table_find(const method_table *t, const char *path) {
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->entries[i].path, path) == 0)
            return &t->entries[i];
    return NULL;
}

/* --- reflection through the gateway --------------------------------------------------------- */

/* "/pkg.Service/Method" of every method `buf curl --list-methods` finds through the gateway. */
static const char **reflected_methods(size_t *count) {
    const char *root = getenv("LIBRARY_SOURCE_ROOT");
    char *command = arena_sprintf(mem, "%s/.tools/node_modules/.bin/buf curl --protocol grpc "
                                       "--http2-prior-knowledge --list-methods http://%s",
                                  root ? root : ".", gateway.address);
    int exit_code = 0;
    char *output = harness_command_output(mem, command, &exit_code);
    cr_assert_eq(exit_code, 0, "buf curl --list-methods through the gateway failed: %s", output);
    const char **paths = arena_alloc(mem, 256 * sizeof *paths);
    *count = 0;
    for (char *line = strtok(output, "\n"); line != NULL && *count < 256; line = strtok(NULL, "\n"))
        if (line[0] != '\0')
            paths[(*count)++] = arena_sprintf(mem, "/%s", line);
    cr_assert_gt(*count, 0, "reflection listed no method");
    return paths;
}

/* --- building and sending requests ---------------------------------------------------------- */

static const char *resolve(const world *w, const char *value) {
    if (strcmp(value, "$book") == 0)
        return w->book_id;
    if (strcmp(value, "$owner") == 0)
        return w->owner;
    if (strcmp(value, "$loan") == 0)
        return w->loan_id;
    return value;
}

/* A request of the method's own type (from the code's table), with the row's fields set. */
static ProtobufCMessage *request_build(const rpc_method *method, const method_row *row, const world *w) {
    const ProtobufCMessageDescriptor *type = method->request_type;
    ProtobufCMessage *message = arena_alloc(mem, type->sizeof_message);
    protobuf_c_message_init(type, message);
    for (size_t i = 0; i < 3 && row->request[i].field != NULL; i++) {
        const ProtobufCFieldDescriptor *field =
            protobuf_c_message_descriptor_get_field_by_name(type, row->request[i].field);
        cr_assert_not_null(field, "%s has no field %s", type->name, row->request[i].field);
        char *slot = (char *)message + field->offset;
        const char *value = resolve(w, row->request[i].value);
        if (field->type == PROTOBUF_C_TYPE_STRING)
            *(char **)slot = arena_strndup(mem, value, strlen(value));
        else if (field->type == PROTOBUF_C_TYPE_INT32 || field->type == PROTOBUF_C_TYPE_ENUM)
            *(int32_t *)slot = atoi(value);
        else
            cr_assert_fail("%s.%s: only string and int32 fields are supported", type->name, field->name);
        if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            *(uint32_t *)((char *)message + field->quantifier_offset) = field->id;
    }
    return message;
}

/* The call's status: for a stream, OK once its first message arrives. */
static status_code call_as(const rpc_method_entry *entry, const ProtobufCMessage *request,
                           const char *bearer, status *st) {
    status_clear(st);
    const rpc_method *method = entry->method;
    if (method->kind == RPC_KIND_UNARY) {
        ProtobufCMessage *response = NULL;
        return harness_call(through_gateway, entry->path, request, method->response_type, mem, bearer,
                            &response, st);
    }
    rpc_call_options options = {.timeout_ms = 10000, .authorization = bearer};
    rpc_client_stream *stream = NULL;
    status_code code = rpc_client_stream_open(through_gateway, entry->path, request, &options, &stream, st);
    if (code == STATUS_OK) {
        ProtobufCMessage *message = NULL;
        code = rpc_client_stream_next(stream, method->response_type, mem, 5000, &message, st);
    }
    rpc_client_stream_close(stream);
    return code;
}

/* --- the world -------------------------------------------------------------------------------- */

static Library__Lending__V1__Loan *get_loan(const char *loan_id, const char *bearer) {
    Library__Lending__V1__GetLoanRequest request = LIBRARY__LENDING__V1__GET_LOAN_REQUEST__INIT;
    request.loan_id = (char *)loan_id;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(lending, "/library.lending.v1.LendingService/GetLoan", &request.base,
                                    &library__lending__v1__loan__descriptor, mem, bearer, &response, &st);
    cr_assert_eq(code, STATUS_OK, "GetLoan: %s %s", status_code_name(code), st.message);
    return (Library__Lending__V1__Loan *)response;
}

static void world_make(world *w) {
    char id[13];
    text_random_hex(id, 6);
    w->owner = arena_sprintf(mem, "owner-%s", id);
    w->other = arena_sprintf(mem, "other-%s", id);
    w->book_id = register_book("Authz matrix", "A", "", 50)->book_id;

    harness_token_options expired = {.subject = w->owner, .ttl_seconds = -3600};
    w->bearer[CALLER_NONE] = NULL;
    w->bearer[CALLER_GARBAGE] = "Bearer not-a-jwt";
    w->bearer[CALLER_EXPIRED] = arena_sprintf(mem, "Bearer %s", harness_token(mem, fixture_dir(), &expired));
    w->bearer[CALLER_OTHER] = user_bearer(w->other);
    w->bearer[CALLER_OWNER] = user_bearer(w->owner);
    w->bearer[CALLER_ADMIN] = admin_bearer();

    Library__Lending__V1__BorrowBookRequest borrow = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    borrow.book_id = (char *)w->book_id;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(lending, "/library.lending.v1.LendingService/BorrowBook", &borrow.base,
                                    &library__lending__v1__loan__descriptor, mem,
                                    w->bearer[CALLER_OWNER], &response, &st);
    cr_assert_eq(code, STATUS_OK, "BorrowBook: %s %s", status_code_name(code), st.message);
    w->loan_id = ((Library__Lending__V1__Loan *)response)->loan_id;
    /* ReturnBook must find it ACTIVE: wait out the saga if BorrowBook answered PENDING */
    int64_t deadline = harness_now_ms() + 10000;
    while (get_loan(w->loan_id, w->bearer[CALLER_OWNER])->status !=
           LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE) {
        cr_assert_lt(harness_now_ms(), deadline, "the owner's loan did not become ACTIVE");
        harness_sleep_ms(50);
    }
}

/* --- the tests -------------------------------------------------------------------------------- */

Test(authz, reflection_the_method_tables_and_the_rows_list_the_same_methods) {
    method_table table;
    method_table_load(&table);
    size_t reflected_count = 0;
    const char **reflected = reflected_methods(&reflected_count);
    int problems = 0;
    for (size_t i = 0; i < reflected_count; i++) {
        if (method_table_find(&table, reflected[i]) == NULL) {
            cr_log_error("%s: reflection lists it, but no service's method table has it", reflected[i]);
            problems++;
        }
        if (row_for(reflected[i]) == NULL) {
            cr_log_error("%s: no row in test_authz.c says how to call it", reflected[i]);
            problems++;
        }
    }
    for (size_t i = 0; i < table.count; i++) {
        bool listed = false;
        for (size_t j = 0; j < reflected_count && !listed; j++)
            listed = strcmp(reflected[j], table.entries[i].path) == 0;
        if (!listed) {
            cr_log_error("%s: served, but reflection through the gateway does not list it",
                         table.entries[i].path);
            problems++;
        }
    }
    for (size_t i = 0; i < ROW_COUNT; i++) {
        if (method_table_find(&table, rows[i].path) == NULL) {
            cr_log_error("%s: a row for a method no service serves", rows[i].path);
            problems++;
        }
    }
    cr_log_info("%zu methods reflected, %zu in the method tables, %d rows", reflected_count, table.count,
                (int)ROW_COUNT);
    method_table_free(&table);
    cr_assert_eq(problems, 0, "%d differences between reflection, the method tables and the rows",
                 problems);
}

Test(authz, every_method_times_every_caller_gets_exactly_the_expected_status) {
    method_table table;
    method_table_load(&table);
    size_t method_count = 0;
    const char **methods = reflected_methods(&method_count);
    world w;
    world_make(&w);

    const char *access_names[] = {[RPC_ACCESS_PUBLIC] = "public", [RPC_ACCESS_USER] = "user",
                                  [RPC_ACCESS_ADMIN] = "admin"};
    cr_log_info("%-62s %-6s | %-18s %-18s %-18s %-18s %-18s %-18s", "method (through the gateway)",
                "access", caller_names[0], caller_names[1], caller_names[2], caller_names[3],
                caller_names[4], caller_names[5]);
    int cells = 0, wrong = 0, missing = 0;
    for (size_t m = 0; m < method_count; m++) {
        const rpc_method_entry *entry = method_table_find(&table, methods[m]);
        const method_row *row = row_for(methods[m]);
        if (entry == NULL || row == NULL) {
            cr_log_error("%s: %s", methods[m], entry == NULL ? "in no method table" : "no row");
            missing++;
            continue;
        }
        ProtobufCMessage *request = request_build(entry->method, row, &w);
        char line[512];
        int used = snprintf(line, sizeof line, "%-62s %-6s |", methods[m] + 1,
                            access_names[entry->method->access]);
        for (int who = 0; who < CALLER_COUNT; who++) {
            status st;
            status_code got = call_as(entry, request, w.bearer[who], &st);
            status_code expected = expected_status(entry->method->access, (caller)who, row);
            cells++;
            const char *mark = got == expected ? "" : "!";
            if (got != expected) {
                wrong++;
                cr_log_error("%s as %s: got %s (%s), expected %s", methods[m], caller_names[who],
                             status_code_name(got), st.message, status_code_name(expected));
            }
            if (used > 0 && (size_t)used < sizeof line)
                used += snprintf(line + used, sizeof line - (size_t)used, " %s%-18s", mark,
                                 status_code_name(got));
        }
        cr_log_info("%s", line);
    }
    cr_log_info("authorization matrix: %zu methods x %d callers = %d calls through the gateway, %d "
                "unexpected, %d methods without a row",
                method_count, CALLER_COUNT, cells, wrong, missing);
    method_table_free(&table);
    cr_assert_eq(missing, 0, "%d methods have no row or no table entry", missing);
    cr_assert_eq(wrong, 0, "%d of %d calls got an unexpected status (marked ! above)", wrong, cells);
}

/* The bidirectional path checks no token, so the framework refuses a table that would put a
 * USER or ADMIN method there, and adds none of that service's methods. */
Test(authz, a_bidirectional_method_that_needs_a_token_is_refused_when_added) {
    method_table table;
    method_table_load(&table);
    const rpc_method methods[] = {
        RPC_UNARY("Fine", library__catalog__v1__get_book_request, library__catalog__v1__book, NULL,
                  RPC_ACCESS_USER),
        {.name = "Chat", .kind = RPC_KIND_BIDI_STREAMING,
         .request_type = &library__catalog__v1__get_book_request__descriptor,
         .response_type = &library__catalog__v1__book__descriptor, .access = RPC_ACCESS_USER},
    };
    const rpc_service chat = {.name = "test.Chat", .methods = methods, .method_count = 2};
    status st;
    status_clear(&st);
    cr_assert_eq(rpc_server_add_service(table.server, &chat, &st), STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(st.reason, "BIDI_NOT_PUBLIC");
    cr_assert_not_null(strstr(st.message, "test.Chat/Chat"), "%s", st.message);
    rpc_method_entry entries[64];
    cr_assert_eq(rpc_server_methods(table.server, entries, 64), table.count, "a method was added");
    method_table_free(&table);
}
