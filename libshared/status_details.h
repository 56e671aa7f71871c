/* status_details.h - the grpc-status-details-bin trailer: a google.rpc.Status carrying one
 * google.rpc.ErrorInfo{reason, domain}, so clients get a machine-readable reason with
 * every error. Shared by the server (encode) and the client (decode). */
#ifndef LIBSHARED_STATUS_DETAILS_H
#define LIBSHARED_STATUS_DETAILS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define STATUS_DETAILS_METADATA_KEY "grpc-status-details-bin"
#define ERROR_INFO_TYPE_URL "type.googleapis.com/google.rpc.ErrorInfo"

/* Serializes google.rpc.Status{code, message, details: [ErrorInfo{reason, domain}]} into a
 * malloc'ed buffer (caller frees) and sets *size. The ErrorInfo is left out when st has no
 * reason. Returns NULL when out of memory. */
uint8_t *status_details_encode(const status *st, const char *domain, size_t *size);

/* Parses a google.rpc.Status; on success fills st->code, st->message and, from the first
 * ErrorInfo detail, st->reason, and returns 1. Returns 0 for bytes that do not parse. */
int status_details_decode(const uint8_t *data, size_t size, status *st);

#endif
