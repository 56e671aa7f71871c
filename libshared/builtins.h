/* builtins.h - the services every server of ours carries besides its own: grpc.health.v1
 * (the server's readiness, each service's, and the liveness name) and, given the API's
 * descriptor set, grpc.reflection v1 and v1alpha. They sit on top of rpc_server like any
 * service; the server knows nothing of them. */
#ifndef LIBSHARED_BUILTINS_H
#define LIBSHARED_BUILTINS_H

#include <stddef.h>
#include <stdint.h>

#include "health.h"
#include "reflection.h"
#include "rpc_server.h"
#include "status.h"

typedef struct rpc_builtins {
    health *health;
    reflection *reflection; /* NULL without a descriptor set */
} rpc_builtins;

/* Creates health (and reflection when descriptor_set is not NULL) and adds them to server;
 * before rpc_server_start. On failure nothing is left to destroy, and the server, which
 * may hold some of them, must be destroyed unstarted. */
status_code rpc_builtins_add(rpc_server *server, const uint8_t *descriptor_set, size_t descriptor_set_size,
                             rpc_builtins *out, status *st);
/* After rpc_server_start: the server ("") and every service it serves are SERVING. */
void rpc_builtins_serving(rpc_builtins *builtins, rpc_server *server);
/* Before rpc_server_shutdown: NOT_SERVING for good, so probes take the pod out of rotation
 * while its calls drain. */
void rpc_builtins_draining(rpc_builtins *builtins);
/* After rpc_server_destroy. */
void rpc_builtins_destroy(rpc_builtins *builtins);

#endif
