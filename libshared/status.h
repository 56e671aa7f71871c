/* status.h - the one error type of the project. Every fallible call returns a status_code
 * and, when it is not STATUS_OK, fills a `status` with a reason and a message a person can
 * read. The codes are the canonical gRPC codes, so a handler's error goes onto the wire as
 * it is; domain code uses them without depending on gRPC. */
#ifndef LIBSHARED_STATUS_H
#define LIBSHARED_STATUS_H

#include <stdarg.h>

typedef enum status_code {
    STATUS_OK = 0,
    STATUS_CANCELLED = 1,
    STATUS_UNKNOWN = 2,
    STATUS_INVALID_ARGUMENT = 3,
    STATUS_DEADLINE_EXCEEDED = 4,
    STATUS_NOT_FOUND = 5,
    STATUS_ALREADY_EXISTS = 6,
    STATUS_PERMISSION_DENIED = 7,
    STATUS_RESOURCE_EXHAUSTED = 8,
    STATUS_FAILED_PRECONDITION = 9,
    STATUS_ABORTED = 10,
    STATUS_OUT_OF_RANGE = 11,
    STATUS_UNIMPLEMENTED = 12,
    STATUS_INTERNAL = 13,
    STATUS_UNAVAILABLE = 14,
    STATUS_DATA_LOSS = 15,
    STATUS_UNAUTHENTICATED = 16,
} status_code;

#define STATUS_REASON_MAX 64
#define STATUS_MESSAGE_MAX 512

typedef struct status {
    status_code code;
    /* Machine-readable UPPER_SNAKE reason (google.rpc.ErrorInfo.reason), may be empty. */
    char reason[STATUS_REASON_MAX];
    /* Human-readable explanation. */
    char message[STATUS_MESSAGE_MAX];
} status;

/* Fills *st (when st is not NULL) and returns code, so callers can write
 * `return status_set(st, STATUS_NOT_FOUND, "BOOK_NOT_FOUND", "no book %s", id);`. */
status_code status_set(status *st, status_code code, const char *reason, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
status_code status_setv(status *st, status_code code, const char *reason, const char *format,
                        va_list args) __attribute__((format(printf, 4, 0)));

/* Resets *st to STATUS_OK with empty reason and message. */
void status_clear(status *st);

/* "NOT_FOUND" etc.; "UNKNOWN" for values outside the enum. */
const char *status_code_name(status_code code);

#endif
