/* lending_service.h - LendingService's method table (names, message types, who may call each), without
 * state: what lending_handlers_init serves, and what the authorization test checks every method
 * against. */
#ifndef LENDING_SERVICE_H
#define LENDING_SERVICE_H

#include "rpc_server.h"

extern const rpc_service lending_rpc_service;

#endif
