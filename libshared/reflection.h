/* reflection.h - grpc.reflection.v1 and v1alpha ServerReflection from an embedded
 * FileDescriptorSet, so grpcurl and `buf curl` work without .proto files. The two versions
 * have the same messages on the wire, so both are served by one implementation. */
#ifndef LIBSHARED_REFLECTION_H
#define LIBSHARED_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "rpc_server.h"
#include "status.h"

typedef struct reflection reflection;

/* Indexes a serialized google.protobuf.FileDescriptorSet (built with --include_imports).
 * The bytes are copied. */
status_code reflection_create(const uint8_t *descriptor_set, size_t size, reflection **out,
                              status *st);
void reflection_destroy(reflection *r); /* NULL is a no-op */
const rpc_service *reflection_service_v1(reflection *r);
const rpc_service *reflection_service_v1alpha(reflection *r);

/* Index of the file that defines a fully qualified symbol, or -1 (for tests). */
int reflection_find_symbol(const reflection *r, const char *symbol);
/* Number of services the descriptor set defines (what list_services returns). */
size_t reflection_service_count(const reflection *r);

#endif
