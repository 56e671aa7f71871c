/* reflection.c - answers reflection requests from an index built once at start:
 * file name -> serialized FileDescriptorProto, and fully qualified symbol -> file. */
#include "reflection.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

typedef struct symbol_entry {
    char *name;
    int file;
} symbol_entry;

typedef struct file_entry {
    const char *name;
    ProtobufCBinaryData bytes;
    int *dependencies;
    size_t dependency_count;
} file_entry;

struct reflection {
    Google__Protobuf__FileDescriptorSet *set;
    file_entry *files;
    size_t file_count;
    symbol_entry *symbols;
    size_t symbol_count, symbol_capacity;
    char **services;
    size_t service_count;
    rpc_method methods[1];
    rpc_service v1, v1alpha;
};

static int add_symbol(reflection *r, const char *scope, const char *name, int file) {
    if (r->symbol_count == r->symbol_capacity) {
        size_t capacity = r->symbol_capacity ? r->symbol_capacity * 2 : 256;
        symbol_entry *grown = realloc(r->symbols, capacity * sizeof *grown);
        if (grown == NULL)
            return 0;
        r->symbols = grown;
        r->symbol_capacity = capacity;
    }
    size_t length = strlen(scope) + strlen(name) + 2;
    char *full = malloc(length);
    if (full == NULL)
        return 0;
    snprintf(full, length, "%s%s%s", scope, scope[0] ? "." : "", name);
    r->symbols[r->symbol_count++] = (symbol_entry){full, file};
    return 1;
}

static int add_message(reflection *r, const char *scope, const Google__Protobuf__DescriptorProto *m,
                       int file) {
    if (!add_symbol(r, scope, m->name, file))
        return 0;
    const char *full = r->symbols[r->symbol_count - 1].name;
    for (size_t i = 0; i < m->n_nested_type; i++)
        if (!add_message(r, full, m->nested_type[i], file))
            return 0;
    for (size_t i = 0; i < m->n_enum_type; i++)
        if (!add_symbol(r, full, m->enum_type[i]->name, file))
            return 0;
    return 1;
}

static int index_file(reflection *r, int index) {
    const Google__Protobuf__FileDescriptorProto *f = r->set->file[index];
    const char *package = f->package ? f->package : "";
    for (size_t i = 0; i < f->n_message_type; i++)
        if (!add_message(r, package, f->message_type[i], index))
            return 0;
    for (size_t i = 0; i < f->n_enum_type; i++)
        if (!add_symbol(r, package, f->enum_type[i]->name, index))
            return 0;
    for (size_t i = 0; i < f->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = f->service[i];
        if (!add_symbol(r, package, s->name, index))
            return 0;
        char *service_name = r->symbols[r->symbol_count - 1].name;
        char **grown = realloc(r->services, (r->service_count + 1) * sizeof *grown);
        if (grown == NULL)
            return 0;
        r->services = grown;
        r->services[r->service_count++] = service_name;
        for (size_t m = 0; m < s->n_method; m++)
            if (!add_symbol(r, service_name, s->method[m]->name, index))
                return 0;
    }
    return 1;
}

static int compare_symbols(const void *a, const void *b) {
    return strcmp(((const symbol_entry *)a)->name, ((const symbol_entry *)b)->name);
}

static int find_file(const reflection *r, const char *name) {
    for (size_t i = 0; i < r->file_count; i++)
        if (strcmp(r->files[i].name, name) == 0)
            return (int)i;
    return -1;
}

int reflection_find_symbol(const reflection *r, const char *symbol) {
    symbol_entry key = {(char *)symbol, 0};
    const symbol_entry *found =
        bsearch(&key, r->symbols, r->symbol_count, sizeof *r->symbols, compare_symbols);
    return found ? found->file : -1;
}

size_t reflection_service_count(const reflection *r) {
    return r->service_count;
}

static status_code build_files(reflection *r, status *st) {
    r->file_count = r->set->n_file;
    r->files = calloc(r->file_count ? r->file_count : 1, sizeof *r->files);
    if (r->files == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    for (size_t i = 0; i < r->file_count; i++) {
        const Google__Protobuf__FileDescriptorProto *f = r->set->file[i];
        file_entry *entry = &r->files[i];
        entry->name = f->name;
        entry->bytes.len = protobuf_c_message_get_packed_size(&f->base);
        entry->bytes.data = malloc(entry->bytes.len ? entry->bytes.len : 1);
        if (entry->bytes.data == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        protobuf_c_message_pack(&f->base, entry->bytes.data);
    }
    for (size_t i = 0; i < r->file_count; i++) {
        const Google__Protobuf__FileDescriptorProto *f = r->set->file[i];
        file_entry *entry = &r->files[i];
        entry->dependencies = calloc(f->n_dependency ? f->n_dependency : 1, sizeof(int));
        if (entry->dependencies == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        for (size_t d = 0; d < f->n_dependency; d++) {
            int dependency = find_file(r, f->dependency[d]);
            if (dependency >= 0)
                entry->dependencies[entry->dependency_count++] = dependency;
        }
        if (!index_file(r, (int)i))
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    }
    qsort(r->symbols, r->symbol_count, sizeof *r->symbols, compare_symbols);
    return STATUS_OK;
}

/* --- answering ------------------------------------------------------------------------ */

typedef Grpc__Reflection__V1__ServerReflectionRequest reflection_request;
typedef Grpc__Reflection__V1__ServerReflectionResponse reflection_response;

/* Adds a file and, depth first, every file it imports, each once. */
static void collect_file(const reflection *r, int index, bool *seen, ProtobufCBinaryData *out,
                         size_t *count) {
    if (seen[index])
        return;
    seen[index] = true;
    out[(*count)++] = r->files[index].bytes;
    for (size_t d = 0; d < r->files[index].dependency_count; d++)
        collect_file(r, r->files[index].dependencies[d], seen, out, count);
}

static status_code answer_file(const reflection *r, arena *a, int index, reflection_response *response,
                               status *st) {
    bool *seen = arena_alloc(a, r->file_count * sizeof *seen);
    ProtobufCBinaryData *files = arena_alloc(a, r->file_count * sizeof *files);
    Grpc__Reflection__V1__FileDescriptorResponse *body =
        (void *)arena_new_message(a, &grpc__reflection__v1__file_descriptor_response__descriptor);
    if (seen == NULL || files == NULL || body == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    collect_file(r, index, seen, files, &body->n_file_descriptor_proto);
    body->file_descriptor_proto = files;
    response->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    response->file_descriptor_response = body;
    return STATUS_OK;
}

static status_code answer_error(arena *a, reflection_response *response, status_code code,
                                const char *message, status *st) {
    Grpc__Reflection__V1__ErrorResponse *body =
        (void *)arena_new_message(a, &grpc__reflection__v1__error_response__descriptor);
    if (body == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    body->error_code = (int32_t)code;
    body->error_message = arena_strdup(a, message);
    response->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    response->error_response = body;
    return STATUS_OK;
}

static status_code answer_services(const reflection *r, arena *a, reflection_response *response,
                                   status *st) {
    Grpc__Reflection__V1__ListServiceResponse *body =
        (void *)arena_new_message(a, &grpc__reflection__v1__list_service_response__descriptor);
    Grpc__Reflection__V1__ServiceResponse **services =
        arena_alloc(a, (r->service_count + 1) * sizeof *services);
    if (body == NULL || services == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    for (size_t i = 0; i < r->service_count; i++) {
        services[i] = (void *)arena_new_message(a, &grpc__reflection__v1__service_response__descriptor);
        if (services[i] == NULL)
            return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
        services[i]->name = r->services[i];
    }
    body->service = services;
    body->n_service = r->service_count;
    response->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    response->list_services_response = body;
    return STATUS_OK;
}

static status_code reflect(void *state, rpc_context *ctx, const ProtobufCMessage *request,
                           rpc_stream *stream, status *st) {
    const reflection *r = state;
    const reflection_request *req = (const void *)request;
    arena *a = rpc_context_arena(ctx);
    reflection_response response = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    response.valid_host = req->host;
    response.original_request = (reflection_request *)req;
    status_code code = STATUS_OK;
    int file = -1;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        code = answer_services(r, a, &response, st);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        file = find_file(r, req->file_by_filename);
        code = file >= 0 ? answer_file(r, a, file, &response, st)
                         : answer_error(a, &response, STATUS_NOT_FOUND, "file not found", st);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        file = reflection_find_symbol(r, req->file_containing_symbol);
        code = file >= 0 ? answer_file(r, a, file, &response, st)
                         : answer_error(a, &response, STATUS_NOT_FOUND, "symbol not found", st);
        break;
    default: /* extensions: proto3 APIs define none */
        code = answer_error(a, &response, STATUS_NOT_FOUND, "extensions are not supported", st);
        break;
    }
    if (code != STATUS_OK)
        return code;
    return rpc_stream_send(stream, &response.base, st);
}

status_code reflection_create(const uint8_t *descriptor_set, size_t size, reflection **out,
                              status *st) {
    reflection *r = calloc(1, sizeof *r);
    if (r == NULL)
        return status_set(st, STATUS_RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "out of memory");
    r->set = google__protobuf__file_descriptor_set__unpack(NULL, size, descriptor_set);
    if (r->set == NULL) {
        free(r);
        return status_set(st, STATUS_INVALID_ARGUMENT, "BAD_DESCRIPTOR_SET",
                          "the embedded descriptor set does not parse");
    }
    status_code code = build_files(r, st);
    if (code != STATUS_OK) {
        reflection_destroy(r);
        return code;
    }
    r->methods[0] = (rpc_method){
        .name = "ServerReflectionInfo",
        .kind = RPC_KIND_BIDI_STREAMING,
        .request_type = &grpc__reflection__v1__server_reflection_request__descriptor,
        .response_type = &grpc__reflection__v1__server_reflection_response__descriptor,
        .stream = reflect,
        .access = RPC_ACCESS_PUBLIC,
        /* A request names one file or symbol (the longest of ours is under 200 bytes); the
         * stream's arena keeps the largest message seen, so 256 open streams hold < 8 MiB. */
        .max_request_bytes = 16384,
    };
    r->v1 = (rpc_service){.name = "grpc.reflection.v1.ServerReflection", .methods = r->methods,
                          .method_count = 1, .state = r};
    r->v1alpha = r->v1;
    r->v1alpha.name = "grpc.reflection.v1alpha.ServerReflection";
    *out = r;
    return STATUS_OK;
}

const rpc_service *reflection_service_v1(reflection *r) {
    return &r->v1;
}

const rpc_service *reflection_service_v1alpha(reflection *r) {
    return &r->v1alpha;
}

void reflection_destroy(reflection *r) {
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->file_count && r->files; i++) {
        free(r->files[i].bytes.data);
        free(r->files[i].dependencies);
    }
    for (size_t i = 0; i < r->symbol_count; i++)
        free(r->symbols[i].name);
    free(r->symbols);
    free(r->services);
    free(r->files);
    google__protobuf__file_descriptor_set__free_unpacked(r->set, NULL);
    free(r);
}
