/* field.c - the shared field checks. */
#include "field.h"

#include <string.h>

#include "text.h"

status_code field_check_id(const char *id, const char *field, status *st) {
    size_t length = id ? strlen(id) : 0;
    if (length == 0)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_REQUIRED", "%s is required", field);
    if (length > FIELD_ID_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED",
                          "%s is %zu bytes long; no id is longer than %d", field, length,
                          FIELD_ID_MAX);
    for (size_t i = 0; i < length; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED",
                              "%s may contain only a-z, 0-9 and '-'", field);
    }
    return STATUS_OK;
}

status_code field_check_request_id(const char *request_id, status *st) {
    size_t length = request_id ? strlen(request_id) : 0;
    if (length > FIELD_REQUEST_ID_MAX)
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_TOO_LONG",
                          "request_id is %zu bytes long; at most %d are allowed", length,
                          FIELD_REQUEST_ID_MAX);
    if (!text_is_valid_utf8(request_id ? request_id : "", length, false))
        return status_set(st, STATUS_INVALID_ARGUMENT, "FIELD_MALFORMED",
                          "request_id must be text without control characters");
    return STATUS_OK;
}
