/* field.h - the request fields every service checks the same way (DESIGN.md section 3):
 * the ids the services make (book ids, loan ids) and the clients' request ids. Each check
 * returns STATUS_OK or INVALID_ARGUMENT with a reason (FIELD_REQUIRED, FIELD_TOO_LONG,
 * FIELD_MALFORMED) and a message that names the field. No I/O, so handlers, event consumers
 * and fuzz harnesses share them. */
#ifndef LIBSHARED_FIELD_H
#define LIBSHARED_FIELD_H

#include "status.h"

enum {
    FIELD_ID_MAX = 64,          /* bytes of a server-made id */
    FIELD_REQUEST_ID_MAX = 128, /* bytes of a client's request id */
};

/* A server-made id: 1..FIELD_ID_MAX bytes of a-z, 0-9 and '-'. Anything else (NATS subject
 * wildcards and separators included) is refused before it reaches a key or a subject. */
status_code field_check_id(const char *id, const char *field, status *st);

/* A client's request id: optional (NULL or empty is fine), at most FIELD_REQUEST_ID_MAX
 * bytes of UTF-8 text without control characters. */
status_code field_check_request_id(const char *request_id, status *st);

#endif
