/* status.c - filling and naming statuses. */
#include "status.h"

#include <stdio.h>
#include <string.h>

status_code status_setv(status *st, status_code code, const char *reason, const char *format,
                        va_list args) {
    if (st == NULL)
        return code;
    st->code = code;
    snprintf(st->reason, sizeof st->reason, "%s", reason ? reason : "");
    vsnprintf(st->message, sizeof st->message, format, args);
    return code;
}

status_code status_set(status *st, status_code code, const char *reason, const char *format, ...) {
    va_list args;
    va_start(args, format);
    status_setv(st, code, reason, format, args);
    va_end(args);
    return code;
}

void status_clear(status *st) {
    if (st == NULL)
        return;
    st->code = STATUS_OK;
    st->reason[0] = '\0';
    st->message[0] = '\0';
}

const char *status_code_name(status_code code) {
    static const char *const names[] = {
        "OK",        "CANCELLED",          "UNKNOWN",        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS", "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",    "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((unsigned)code >= sizeof names / sizeof names[0])
        return "UNKNOWN";
    return names[code];
}
