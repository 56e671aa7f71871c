/* catalog_service.h - CatalogService's method table (names, message types, who may call each), without
 * state: what catalog_handlers_init serves, and what the authorization test checks every method
 * against. */
#ifndef CATALOG_SERVICE_H
#define CATALOG_SERVICE_H

#include "rpc_server.h"

extern const rpc_service catalog_rpc_service;

#endif
