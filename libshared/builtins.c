/* builtins.c - health and reflection added to a server, and their part in its lifetime. */
#include "builtins.h"

status_code rpc_builtins_add(rpc_server *server, const uint8_t *descriptor_set, size_t descriptor_set_size,
                             rpc_builtins *out, status *st) {
    *out = (rpc_builtins){0};
    status_code code = health_create(&out->health, st);
    if (code == STATUS_OK)
        code = rpc_server_add_service(server, health_service(out->health), st);
    if (code == STATUS_OK && descriptor_set != NULL) {
        code = reflection_create(descriptor_set, descriptor_set_size, &out->reflection, st);
        if (code == STATUS_OK)
            code = rpc_server_add_service(server, reflection_service_v1(out->reflection), st);
        if (code == STATUS_OK)
            code = rpc_server_add_service(server, reflection_service_v1alpha(out->reflection), st);
    }
    if (code != STATUS_OK)
        rpc_builtins_destroy(out);
    return code;
}

void rpc_builtins_serving(rpc_builtins *builtins, rpc_server *server) {
    health_set(builtins->health, "", true);
    const rpc_service *services[64];
    size_t count = rpc_server_services(server, services, sizeof services / sizeof *services);
    for (size_t i = 0; i < count && i < sizeof services / sizeof *services; i++)
        health_set(builtins->health, services[i]->name, true);
}

void rpc_builtins_draining(rpc_builtins *builtins) {
    health_shutdown(builtins->health);
}

void rpc_builtins_destroy(rpc_builtins *builtins) {
    health_destroy(builtins->health);
    reflection_destroy(builtins->reflection);
    *builtins = (rpc_builtins){0};
}
