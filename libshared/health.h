/* health.h - grpc.health.v1.Health (Check and Watch) for the rpc server.
 *
 * A service is SERVING when the server runs, is not draining, and no dependency it declared
 * is down. Services report dependencies (NATS, Redis, another service) with
 * health_set_dependency; Kubernetes readiness probes then take a pod out of rotation while
 * it cannot do its job. */
#ifndef LIBSHARED_HEALTH_H
#define LIBSHARED_HEALTH_H

#include <stdbool.h>

#include "rpc_server.h"

/* The health name a liveness probe asks: SERVING while the process answers at all, whatever
 * its dependencies and even while it drains (restarting a pod because NATS is down, or
 * because it is finishing its calls, would only make things worse). */
#define HEALTH_LIVENESS "liveness"
#include "status.h"

typedef struct health health;

status_code health_create(health **out, status *st);
void health_destroy(health *h); /* NULL is a no-op */
const rpc_service *health_service(health *h);

/* Registers (or changes) a service name's own status; "" is the whole server. */
void health_set(health *h, const char *service, bool serving);
/* Marks a named dependency up or down; any dependency down makes every service NOT_SERVING. */
void health_set_dependency(health *h, const char *dependency, bool up);
/* Effective status of a service name: 1 serving, 0 not serving, -1 unknown name. */
int health_check(health *h, const char *service);
/* NOT_SERVING from now on, for good; watchers get the change and their streams end. */
void health_shutdown(health *h);

#endif
