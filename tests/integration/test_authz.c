/* test_authz.c - the authorization matrix, through the nginx gateway: every method that
 * reflection lists x {no token, garbage token, expired token, another user, the owner, an
 * administrator} gets exactly the status the code's method tables promise (RPC_ACCESS_*),
 * plus the ownership rules of docs/decisions.md for another user's resources.
 *
 * The first matrix lists no method by hand: the method list comes from reflection through the
 * gateway, each method's access and message types from the services' own rpc_service tables
 * (rpc_server_methods on a server built from them, with health and reflection as the
 * framework adds them). A table and the server that enforces it cannot disagree, so a second
 * matrix expects what DESIGN.md says, written out by hand below (`design`): a wrong entry in
 * a method table fails there. The rows say how to make a valid request for a method; a
 * method without a row or without a design entry fails the test. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_descriptor.h"
#include "builtins.h"
#include "catalog/catalog_service.h"
#include "lending/lending_service.h"
#include "library/lending/v1/lending.pb-c.h"
#include "library/mypage/v1/mypage.pb-c.h"
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
    const char *renewable_loan_id; /* another, for RenewLoan (ReturnBook may end the first) */
    const char *hold_book_id;      /* a book nobody holds or borrows yet, for PlaceHold */
    const char *hold_ids[CALLER_COUNT]; /* "$hold": an open hold of the owner for each caller, as
                                           a cancel ends one */
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
} method_row;

static const method_row rows[] = {
    {"/library.catalog.v1.CatalogService/RegisterBook",
     {{"title", "Authz matrix"}, {"author", "A"}, {"copies", "1"}}},
    {"/library.catalog.v1.CatalogService/UpdateBook", {{"book_id", "$book"}, {"title", "Authz matrix"}}},
    {"/library.catalog.v1.CatalogService/AdjustStock", {{"book_id", "$book"}, {"delta", "1"}}},
    {"/library.catalog.v1.CatalogService/GetBook", {{"book_id", "$book"}}},
    {"/library.catalog.v1.CatalogService/SearchBooks", {{"query", "authz"}}},
    {"/library.lending.v1.LendingService/BorrowBook", {{"book_id", "$book"}}},
    {"/library.lending.v1.LendingService/ReturnBook", {{"loan_id", "$loan"}}},
    {"/library.lending.v1.LendingService/GetLoan", {{"loan_id", "$loan"}}},
    {"/library.lending.v1.LendingService/ListLoans", {{"user_id", "$owner"}}},
    {"/library.lending.v1.LendingService/RenewLoan", {{"loan_id", "$renewable"}}},
    {"/library.lending.v1.LendingService/PlaceHold", {{"book_id", "$holdbook"}}},
    {"/library.lending.v1.LendingService/CancelHold", {{"hold_id", "$hold"}}},
    {"/library.lending.v1.LendingService/GetHold", {{"hold_id", "$hold"}}},
    {"/library.lending.v1.LendingService/ListHolds", {{"user_id", "$owner"}}},
    {"/library.lending.v1.LendingService/GetAccount", {{"user_id", "$owner"}}},
    {"/library.lending.v1.LendingService/PayFines", {{"user_id", "$owner"}, {"amount", "1"}}},
    {"/library.lending.v1.LendingService/WaiveFine", {{"loan_id", "$loan"}}},
    {"/library.mypage.v1.MypageService/GetMypage", {{"user_id", "$owner"}}},
    {"/library.mypage.v1.MypageService/WatchMypage", {{"user_id", "$owner"}}},
    {"/grpc.health.v1.Health/Check", {{"service", ""}}},
    {"/grpc.health.v1.Health/Watch", {{"service", ""}}},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", {{"list_services", "*"}}},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", {{"list_services", "*"}}},
};
enum { ROW_COUNT = sizeof rows / sizeof rows[0] };

/* What a caller who is let through gets from these rows, instead of OK: the rules' own answer,
 * which shows the call got past authorization (the shared stack has no late loans, so nobody
 * owes a fine: OVERPAYMENT and NO_FINE). */
static const struct {
    const char *path;
    status_code code;
} authorized_answers[] = {
    {"/library.lending.v1.LendingService/PayFines", STATUS_FAILED_PRECONDITION},
    {"/library.lending.v1.LendingService/WaiveFine", STATUS_FAILED_PRECONDITION},
};

static status_code authorized_answer(const char *path) {
    for (size_t i = 0; i < sizeof authorized_answers / sizeof authorized_answers[0]; i++)
        if (strcmp(authorized_answers[i].path, path) == 0)
            return authorized_answers[i].code;
    return STATUS_OK;
}

static const method_row *row_for(const char *path) {
    for (size_t i = 0; i < ROW_COUNT; i++)
        if (strcmp(rows[i].path, path) == 0)
            return &rows[i];
    return NULL;
}

/* --- the design, by hand --------------------------------------------------------------------- */

/* Who may call what, as DESIGN.md sections 2, 3 and 6 (and docs/decisions.md for another
 * user's loans) say it. Written out here and nowhere derived from the code, so that a method
 * table marking an admin method USER, or a handler that forgets an owner check, disagrees. */
typedef enum design_rule {
    DESIGN_PUBLIC,           /* health, reflection: no token needed */
    DESIGN_ANY_USER,         /* any valid token; another user's call is their own (BorrowBook) */
    DESIGN_OWNER_OR_ADMIN,   /* the owner's data: another user is refused (PERMISSION_DENIED) */
    DESIGN_OWNER_HIDDEN,     /* the owner's loan: for another user it does not exist (NOT_FOUND) */
    DESIGN_ADMIN_ONLY,       /* role admin; anyone else PERMISSION_DENIED */
} design_rule;

typedef struct design_entry {
    const char *path;
    design_rule rule;
} design_entry;

static const design_entry design[] = {
    {"/library.catalog.v1.CatalogService/RegisterBook", DESIGN_ADMIN_ONLY},
    {"/library.catalog.v1.CatalogService/UpdateBook", DESIGN_ADMIN_ONLY},
    {"/library.catalog.v1.CatalogService/AdjustStock", DESIGN_ADMIN_ONLY},
    {"/library.catalog.v1.CatalogService/GetBook", DESIGN_ANY_USER},
    {"/library.catalog.v1.CatalogService/SearchBooks", DESIGN_ANY_USER},
    {"/library.lending.v1.LendingService/BorrowBook", DESIGN_ANY_USER},
    {"/library.lending.v1.LendingService/ReturnBook", DESIGN_OWNER_HIDDEN},
    {"/library.lending.v1.LendingService/GetLoan", DESIGN_OWNER_HIDDEN},
    {"/library.lending.v1.LendingService/ListLoans", DESIGN_OWNER_OR_ADMIN},
    {"/library.lending.v1.LendingService/RenewLoan", DESIGN_OWNER_HIDDEN},
    {"/library.lending.v1.LendingService/PlaceHold", DESIGN_ANY_USER},
    {"/library.lending.v1.LendingService/CancelHold", DESIGN_OWNER_HIDDEN},
    {"/library.lending.v1.LendingService/GetHold", DESIGN_OWNER_HIDDEN},
    {"/library.lending.v1.LendingService/ListHolds", DESIGN_OWNER_OR_ADMIN},
    {"/library.lending.v1.LendingService/GetAccount", DESIGN_OWNER_OR_ADMIN},
    {"/library.lending.v1.LendingService/PayFines", DESIGN_ADMIN_ONLY},
    {"/library.lending.v1.LendingService/WaiveFine", DESIGN_ADMIN_ONLY},
    {"/library.mypage.v1.MypageService/GetMypage", DESIGN_OWNER_OR_ADMIN},
    {"/library.mypage.v1.MypageService/WatchMypage", DESIGN_OWNER_OR_ADMIN},
    {"/grpc.health.v1.Health/Check", DESIGN_PUBLIC},
    {"/grpc.health.v1.Health/Watch", DESIGN_PUBLIC},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", DESIGN_PUBLIC},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", DESIGN_PUBLIC},
};
enum { DESIGN_COUNT = sizeof design / sizeof design[0] };

static const design_entry *design_for(const char *path) {
    for (size_t i = 0; i < DESIGN_COUNT; i++)
        if (strcmp(design[i].path, path) == 0)
            return &design[i];
    return NULL;
}

static rpc_access design_access(design_rule rule) {
    if (rule == DESIGN_PUBLIC)
        return RPC_ACCESS_PUBLIC;
    return rule == DESIGN_ADMIN_ONLY ? RPC_ACCESS_ADMIN : RPC_ACCESS_USER;
}

/* What another user gets from a method for any user, acting on the owner's resources. */
static status_code design_other_user(design_rule rule) {
    if (rule == DESIGN_OWNER_HIDDEN)
        return STATUS_NOT_FOUND;
    return rule == DESIGN_OWNER_OR_ADMIN ? STATUS_PERMISSION_DENIED : STATUS_OK;
}

/* The access level decides everything but another user's reach, which only the design says. */
static status_code expected_status(rpc_access access, caller who, design_rule rule) {
    if (access == RPC_ACCESS_PUBLIC)
        return STATUS_OK;
    if (who == CALLER_NONE || who == CALLER_GARBAGE || who == CALLER_EXPIRED)
        return STATUS_UNAUTHENTICATED;
    if (who == CALLER_ADMIN)
        return STATUS_OK;
    if (access == RPC_ACCESS_ADMIN)
        return STATUS_PERMISSION_DENIED;
    return who == CALLER_OTHER ? design_other_user(rule) : STATUS_OK;
}

/* --- the code's method tables -------------------------------------------------------------- */

typedef struct method_table {
    rpc_server *server; /* never started: it only holds the tables */
    rpc_builtins builtins;
    auth_verifier *verifier;
    rpc_method_entry entries[64];
    size_t count;
} method_table;

/* A server with exactly what the three services serve (each binary serves one of them plus
 * health and reflection, the builtins service.c adds). */
static void method_table_load(method_table *t) {
    status st;
    const char *key = arena_sprintf(mem, "%s/jwt-public.pem", fixture_dir());
    cr_assert_eq(auth_verifier_create(key, "library", "library-api", 0, &t->verifier, &st), STATUS_OK,
                 "%s", st.message);
    rpc_server_options options = {.listen_address = "127.0.0.1:0", .verifier = t->verifier};
    cr_assert_eq(rpc_server_create(&options, &t->server, &st), STATUS_OK, "%s", st.message);
    cr_assert_eq(rpc_builtins_add(t->server, library_api_descriptor_set, library_api_descriptor_set_size,
                                  &t->builtins, &st),
                 STATUS_OK, "%s", st.message);
    const rpc_service *services[] = {&catalog_rpc_service, &lending_rpc_service, &mypage_rpc_service};
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(rpc_server_add_service(t->server, services[i], &st), STATUS_OK, "%s", st.message);
    t->count = rpc_server_methods(t->server, t->entries, 64);
    cr_assert_leq(t->count, 64);
}

static void method_table_free(method_table *t) {
    rpc_server_destroy(t->server);
    rpc_builtins_destroy(&t->builtins);
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

static const char *resolve(const world *w, const char *value, int who) {
    if (strcmp(value, "$holdbook") == 0)
        return w->hold_book_id;
    if (strcmp(value, "$hold") == 0)
        return w->hold_ids[who];
    if (strcmp(value, "$book") == 0)
        return w->book_id;
    if (strcmp(value, "$owner") == 0)
        return w->owner;
    if (strcmp(value, "$loan") == 0)
        return w->loan_id;
    if (strcmp(value, "$renewable") == 0)
        return w->renewable_loan_id;
    return value;
}

/* A request of the method's own type (from the code's table), with the row's fields set. */
static ProtobufCMessage *request_build(const rpc_method *method, const method_row *row, const world *w,
                                       int who) {
    const ProtobufCMessageDescriptor *type = method->request_type;
    ProtobufCMessage *message = arena_alloc(mem, type->sizeof_message);
    protobuf_c_message_init(type, message);
    for (size_t i = 0; i < 3 && row->request[i].field != NULL; i++) {
        const ProtobufCFieldDescriptor *field =
            protobuf_c_message_descriptor_get_field_by_name(type, row->request[i].field);
        cr_assert_not_null(field, "%s has no field %s", type->name, row->request[i].field);
        char *slot = (char *)message + field->offset;
        const char *value = resolve(w, row->request[i].value, who);
        if (field->type == PROTOBUF_C_TYPE_STRING)
            *(char **)slot = arena_strndup(mem, value, strlen(value));
        else if (field->type == PROTOBUF_C_TYPE_INT32 || field->type == PROTOBUF_C_TYPE_ENUM)
            *(int32_t *)slot = atoi(value);
        else if (field->type == PROTOBUF_C_TYPE_INT64)
            *(int64_t *)slot = atoll(value);
        else
            cr_assert_fail("%s.%s: only string, int32 and int64 fields are supported", type->name, field->name);
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

/* A loan of book_id by bearer, ACTIVE (ReturnBook and RenewLoan must find it so: the saga's
 * outcome is waited out if BorrowBook answered PENDING). */
static const char *borrow_active(const char *book_id, const char *bearer) {
    Library__Lending__V1__BorrowBookRequest borrow = LIBRARY__LENDING__V1__BORROW_BOOK_REQUEST__INIT;
    borrow.book_id = (char *)book_id;
    ProtobufCMessage *response = NULL;
    status st;
    status_code code = harness_call(lending, "/library.lending.v1.LendingService/BorrowBook", &borrow.base,
                                    &library__lending__v1__loan__descriptor, mem, bearer, &response, &st);
    cr_assert_eq(code, STATUS_OK, "BorrowBook: %s %s", status_code_name(code), st.message);
    const char *loan_id = ((Library__Lending__V1__Loan *)response)->loan_id;
    int64_t deadline = harness_now_ms() + 10000;
    while (get_loan(loan_id, bearer)->status != LIBRARY__LENDING__V1__LOAN_STATUS__LOAN_STATUS_ACTIVE) {
        cr_assert_lt(harness_now_ms(), deadline, "the owner's loan did not become ACTIVE");
        harness_sleep_ms(50);
    }
    return loan_id;
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

    w->loan_id = borrow_active(w->book_id, w->bearer[CALLER_OWNER]);
    /* the owner and the administrator each renew it once: within the default MAX_RENEWALS 2 */
    w->renewable_loan_id = borrow_active(w->book_id, w->bearer[CALLER_OWNER]);
    /* holds of the owner on books of their own: three open ones (other user, owner, admin each
     * cancel one), and a fourth book PlaceHold uses; MAX_HOLDS is 5 */
    w->hold_book_id = register_book("Authz holds", "A", "", 1)->book_id;
    for (int who = 0; who < CALLER_COUNT; who++) {
        if (who < CALLER_OTHER) {
            w->hold_ids[who] = NULL;
            continue;
        }
        Library__Lending__V1__PlaceHoldRequest place = LIBRARY__LENDING__V1__PLACE_HOLD_REQUEST__INIT;
        place.book_id = register_book("Authz hold", "A", "", 0)->book_id;
        ProtobufCMessage *response = NULL;
        status st;
        cr_assert_eq(harness_call(lending, "/library.lending.v1.LendingService/PlaceHold", &place.base,
                                  &library__lending__v1__hold__descriptor, mem, w->bearer[CALLER_OWNER], &response, &st),
                     STATUS_OK, "PlaceHold: %s", st.message);
        w->hold_ids[who] = ((Library__Lending__V1__Hold *)response)->hold_id;
    }
    for (int who = 0; who < CALLER_OTHER; who++)
        w->hold_ids[who] = w->hold_ids[CALLER_OWNER];
}

/* --- the tests -------------------------------------------------------------------------------- */

/* Logs a problem with one method and counts it. */
static void problem(int *problems, const char *path, const char *what) {
    cr_log_error("%s: %s", path, what);
    (*problems)++;
}

Test(authz, reflection_the_method_tables_the_rows_and_the_design_list_the_same_methods) {
    method_table table;
    method_table_load(&table);
    size_t reflected_count = 0;
    const char **reflected = reflected_methods(&reflected_count);
    int problems = 0;
    for (size_t i = 0; i < reflected_count; i++) {
        if (method_table_find(&table, reflected[i]) == NULL)
            problem(&problems, reflected[i], "reflection lists it, but no service's method table has it");
        if (row_for(reflected[i]) == NULL)
            problem(&problems, reflected[i], "no row in test_authz.c says how to call it");
    }
    for (size_t i = 0; i < table.count; i++) {
        bool listed = false;
        for (size_t j = 0; j < reflected_count && !listed; j++)
            listed = strcmp(reflected[j], table.entries[i].path) == 0;
        if (!listed)
            problem(&problems, table.entries[i].path,
                    "served, but reflection through the gateway does not list it");
        if (design_for(table.entries[i].path) == NULL)
            problem(&problems, table.entries[i].path,
                    "served, but the design list in test_authz.c does not say who may call it");
    }
    for (size_t i = 0; i < ROW_COUNT; i++)
        if (method_table_find(&table, rows[i].path) == NULL)
            problem(&problems, rows[i].path, "a row for a method no service serves");
    for (size_t i = 0; i < DESIGN_COUNT; i++)
        if (method_table_find(&table, design[i].path) == NULL)
            problem(&problems, design[i].path, "the design names it, but no service serves it");
    cr_log_info("%zu methods reflected, %zu in the method tables, %d rows, %d in the design",
                reflected_count, table.count, (int)ROW_COUNT, (int)DESIGN_COUNT);
    method_table_free(&table);
    cr_assert_eq(problems, 0,
                 "%d differences between reflection, the method tables, the rows and the design", problems);
}

/* Where a matrix takes each method's access level from. */
typedef enum access_source { FROM_METHOD_TABLE, FROM_DESIGN } access_source;

typedef struct matrix_result {
    int cells, wrong, missing;
} matrix_result;

/* One method's line of the matrix: calls it as every caller, counts and logs what differs. */
static void matrix_line(const rpc_method_entry *entry, const method_row *row, rpc_access access,
                        design_rule rule, const world *w, matrix_result *result) {
    static const char *const access_names[] = {[RPC_ACCESS_PUBLIC] = "public",
                                               [RPC_ACCESS_USER] = "user",
                                               [RPC_ACCESS_ADMIN] = "admin"};
    char line[512];
    int used = snprintf(line, sizeof line, "%-62s %-6s |", entry->path + 1, access_names[access]);
    for (int who = 0; who < CALLER_COUNT; who++) {
        status st;
        ProtobufCMessage *request = request_build(entry->method, row, w, who);
        status_code got = call_as(entry, request, w->bearer[who], &st);
        status_code expected = expected_status(access, (caller)who, rule);
        if (expected == STATUS_OK)
            expected = authorized_answer(row->path);
        result->cells++;
        if (got != expected) {
            result->wrong++;
            cr_log_error("%s as %s: got %s (%s), expected %s", entry->path, caller_names[who],
                         status_code_name(got), st.message, status_code_name(expected));
        }
        if (used > 0 && (size_t)used < sizeof line)
            used += snprintf(line + used, sizeof line - (size_t)used, " %s%-18s",
                             got == expected ? "" : "!", status_code_name(got));
    }
    cr_log_info("%s", line);
}

/* Calls every method as every caller through the gateway and compares each status with what
 * the access level (from the method table or from the design) and the design's rule for
 * another user promise. A method without a table entry, a row or a design entry is missing. */
static matrix_result matrix_check(const char *const *methods, size_t method_count,
                                  const method_table *table, access_source source, const world *w) {
    cr_log_info("%-62s %-6s | %-18s %-18s %-18s %-18s %-18s %-18s",
                source == FROM_DESIGN ? "method (access from the design)" : "method (access from the table)",
                "access", caller_names[0], caller_names[1], caller_names[2], caller_names[3],
                caller_names[4], caller_names[5]);
    matrix_result result = {0};
    for (size_t m = 0; m < method_count; m++) {
        const rpc_method_entry *entry = method_table_find(table, methods[m]);
        const method_row *row = row_for(methods[m]);
        const design_entry *d = design_for(methods[m]);
        if (entry == NULL || row == NULL || d == NULL) {
            cr_log_error("%s: %s", methods[m],
                         entry == NULL ? "in no method table" : row == NULL ? "no row" : "not in the design");
            result.missing++;
            continue;
        }
        rpc_access access = source == FROM_DESIGN ? design_access(d->rule) : entry->method->access;
        matrix_line(entry, row, access, d->rule, w, &result);
    }
    cr_log_info("authorization matrix: %zu methods x %d callers = %d calls through the gateway, %d "
                "unexpected, %d methods missing",
                method_count, CALLER_COUNT, result.cells, result.wrong, result.missing);
    return result;
}

Test(authz, every_method_times_every_caller_gets_exactly_what_the_method_tables_promise) {
    method_table table;
    method_table_load(&table);
    size_t method_count = 0;
    const char **methods = reflected_methods(&method_count);
    world w;
    world_make(&w);
    matrix_result result = matrix_check(methods, method_count, &table, FROM_METHOD_TABLE, &w);
    method_table_free(&table);
    cr_assert_eq(result.missing, 0, "%d methods have no row, table entry or design entry", result.missing);
    cr_assert_eq(result.wrong, 0, "%d of %d calls got an unexpected status (marked ! above)", result.wrong,
                 result.cells);
}

/* Every method the tables serve, called as every caller, against the hand-written design: the
 * admin-only methods refuse users, the owner's reads refuse (or hide from) other users. */
Test(authz, every_method_times_every_caller_gets_exactly_what_the_design_says) {
    method_table table;
    method_table_load(&table);
    const char **methods = arena_alloc(mem, table.count * sizeof *methods);
    for (size_t i = 0; i < table.count; i++)
        methods[i] = table.entries[i].path;
    world w;
    world_make(&w);
    matrix_result result = matrix_check(methods, table.count, &table, FROM_DESIGN, &w);
    method_table_free(&table);
    cr_assert_eq(result.missing, 0, "%d served methods have no row or no design entry (see above)",
                 result.missing);
    cr_assert_eq(result.wrong, 0, "%d of %d calls disagree with the design (marked ! above)", result.wrong,
                 result.cells);
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

/* --- rotating the signing key ------------------------------------------------------------- */

/* Puts dir/<pair>/jwt-public.pem into dir/keys as <kid>.pem as README says: copied under a
 * name the services ignore, then renamed, so no service reads half a file. */
static void key_publish(const char *dir, const char *pair, const char *kid) {
    const char *hidden = arena_sprintf(mem, "%s/keys/.%s.tmp", dir, kid);
    const char *command = arena_sprintf(mem, "cp '%s/%s/jwt-public.pem' '%s'", dir, pair, hidden);
    cr_assert_eq(system(command), 0, "%s", command);
    cr_assert_eq(rename(hidden, arena_sprintf(mem, "%s/keys/%s.pem", dir, kid)), 0);
}

static const char *bearer_signed(const char *dir, const char *pair, const char *kid, const char *user) {
    token_claims claims = {.subject = user, .ttl_seconds = 3600, .kid = kid};
    char *token = token_sign(arena_sprintf(mem, "%s/%s/jwt-private.pem", dir, pair), &claims);
    cr_assert_not_null(token);
    const char *bearer = arena_sprintf(mem, "Bearer %s", token);
    free(token);
    return bearer;
}

static status_code get_own_page(rpc_client *service, arena *a, const char *bearer, status *st) {
    Library__Mypage__V1__GetMypageRequest request = LIBRARY__MYPAGE__V1__GET_MYPAGE_REQUEST__INIT;
    ProtobufCMessage *response = NULL;
    return harness_call(service, "/library.mypage.v1.MypageService/GetMypage", &request.base,
                        &library__mypage__v1__mypage__descriptor, a, bearer, &response, st);
}

static void expect_page(rpc_client *service, const char *bearer, const char *what) {
    status st;
    status_code code = get_own_page(service, mem, bearer, &st);
    cr_assert_eq(code, STATUS_OK, "%s: %s %s", what, status_code_name(code), st.message);
}

static void expect_unauthenticated(rpc_client *service, const char *bearer, const char *words,
                                   const char *what) {
    status st;
    status_code code = get_own_page(service, mem, bearer, &st);
    cr_assert_eq(code, STATUS_UNAUTHENTICATED, "%s: %s %s", what, status_code_name(code), st.message);
    cr_assert(strstr(st.message, words) != NULL, "%s: \"%s\" does not say \"%s\"", what, st.message, words);
}

/* A client that calls GetMypage all along with the token its signer issues now. */
typedef struct steady_client {
    rpc_client *service;
    _Atomic(const char *) bearer;
    atomic_bool stop;
    atomic_int calls, failures;
    char first_failure[800];
    pthread_t thread;
} steady_client;

static void *steady_client_main(void *arg) {
    steady_client *c = arg;
    arena *a = arena_create(0);
    while (!atomic_load(&c->stop)) {
        status st;
        status_code code = get_own_page(c->service, a, atomic_load(&c->bearer), &st);
        if (code != STATUS_OK && atomic_fetch_add(&c->failures, 1) == 0)
            snprintf(c->first_failure, sizeof c->first_failure, "%s %s", status_code_name(code), st.message);
        atomic_fetch_add(&c->calls, 1);
        arena_reset(a);
        harness_sleep_ms(10);
    }
    arena_destroy(a);
    return NULL;
}

/* Waits until the client has made `more` calls from now (so it has used its current token). */
static void steady_client_wait(steady_client *c, int more) {
    int target = atomic_load(&c->calls) + more;
    int64_t until = harness_now_ms() + 10000;
    while (atomic_load(&c->calls) < target && harness_now_ms() < until)
        harness_sleep_ms(10);
    cr_assert_geq(atomic_load(&c->calls), target, "the client stopped calling");
}

/* The rotation of README ("Rotating the signing key") on a running mypage whose
 * JWT_PUBLIC_KEY_FILE is a directory: add the new key, switch the signer, remove the old key.
 * A client that always uses its signer's current token never fails; the old kid works until
 * its file goes, the new one as soon as its file is there; the service is never restarted. */
Test(authz, a_signing_key_rotation_while_clients_call_needs_no_restart) {
    char name[13];
    text_random_hex(name, 6);
    const char *dir = arena_sprintf(mem, "%s/rotation-%s", fixture_dir(), name);
    cr_assert_eq(mkdir(dir, 0755), 0);
    cr_assert_eq(mkdir(arena_sprintf(mem, "%s/keys", dir), 0755), 0);
    const char *pairs[] = {"old", "new"};
    for (int i = 0; i < 2; i++) {
        const char *pair_dir = arena_sprintf(mem, "%s/%s", dir, pairs[i]);
        cr_assert(mkdir(pair_dir, 0700) == 0 && harness_keys_create(pair_dir));
    }
    key_publish(dir, "old", "2026-06");
    const char *const env[] = {arena_sprintf(mem, "JWT_PUBLIC_KEY_FILE=%s/keys", dir), NULL};
    harness_process own;
    rpc_client *service = NULL;
    fixture_own_mypage(dir, env, &own, &service);

    const char *user = arena_sprintf(mem, "rotating-%s", name);
    const char *old_bearer = bearer_signed(dir, "old", "2026-06", user);
    const char *new_bearer = bearer_signed(dir, "new", "2026-12", user);
    const char *no_kid_bearer = bearer_signed(dir, "old", NULL, user);
    expect_page(service, old_bearer, "the old kid");
    expect_page(service, no_kid_bearer, "no kid while there is one key");
    expect_unauthenticated(service, new_bearer, "\"2026-12\"", "the new kid before its file is there");

    steady_client steady = {.service = service};
    atomic_init(&steady.bearer, old_bearer);
    cr_assert_eq(pthread_create(&steady.thread, NULL, steady_client_main, &steady), 0);
    steady_client_wait(&steady, 3);

    key_publish(dir, "new", "2026-12");
    expect_page(service, new_bearer, "the new kid, the first call after its file was added");
    expect_page(service, old_bearer, "the old kid while both files are there");
    expect_unauthenticated(service, no_kid_bearer, "2 keys", "no kid while there are two keys");

    atomic_store(&steady.bearer, new_bearer); /* the signer switches */
    steady_client_wait(&steady, 3);

    cr_assert_eq(unlink(arena_sprintf(mem, "%s/keys/2026-06.pem", dir)), 0);
    int64_t removed = harness_now_ms();
    status st;
    status_code code;
    while ((code = get_own_page(service, mem, old_bearer, &st)) == STATUS_OK &&
           harness_now_ms() - removed < harness_latency_bound_ms(3000))
        harness_sleep_ms(50);
    cr_assert_eq(code, STATUS_UNAUTHENTICATED, "the old kid still works %lld ms after its file went: %s",
                 (long long)(harness_now_ms() - removed), status_code_name(code));
    cr_log_info("the old kid was refused %lld ms after its file was removed",
                (long long)(harness_now_ms() - removed));
    expect_unauthenticated(service, old_bearer, "\"2026-06\"", "the old kid after its file went");
    steady_client_wait(&steady, 3);

    atomic_store(&steady.stop, true);
    pthread_join(steady.thread, NULL);
    cr_assert_eq(atomic_load(&steady.failures), 0, "%d of %d calls of the client failed during the rotation; first: %s",
                 atomic_load(&steady.failures), atomic_load(&steady.calls), steady.first_failure);
    cr_assert_eq(kill(own.pid, 0), 0, "mypage is not running any more: %s", own.log_path);
    rpc_client_destroy(service);
    cr_assert_eq(harness_process_stop(&own, SIGTERM, 15000), 0, "mypage did not exit cleanly: %s", own.log_path);
}

/* Access must be spelled out: RPC_ACCESS_PUBLIC is not the zero value, so an entry that
 * forgets .access is refused when added, naming the method, instead of being served to anyone. */
Test(authz, a_method_without_access_is_refused_when_added) {
    method_table table;
    method_table_load(&table);
    const rpc_method methods[] = {
        RPC_UNARY("Fine", library__catalog__v1__get_book_request, library__catalog__v1__book, NULL,
                  RPC_ACCESS_USER),
        {.name = "Forgotten", .kind = RPC_KIND_UNARY,
         .request_type = &library__catalog__v1__get_book_request__descriptor,
         .response_type = &library__catalog__v1__book__descriptor},
    };
    const rpc_service forgetful = {.name = "test.Forgetful", .methods = methods, .method_count = 2};
    status st;
    status_clear(&st);
    cr_assert_eq(rpc_server_add_service(table.server, &forgetful, &st), STATUS_INVALID_ARGUMENT,
                 "a method without .access was accepted");
    cr_assert_str_eq(st.reason, "ACCESS_UNSET");
    cr_assert_not_null(strstr(st.message, "test.Forgetful/Forgotten"), "%s", st.message);
    rpc_method_entry entries[64];
    cr_assert_eq(rpc_server_methods(table.server, entries, 64), table.count, "a method was added");
    method_table_free(&table);
}
