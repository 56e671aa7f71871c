/* status_details.c - google.rpc.Status <-> status. */
#include "status_details.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

uint8_t *status_details_encode(const status *st, const char *domain, size_t *size) {
    Google__Rpc__ErrorInfo info = GOOGLE__RPC__ERROR_INFO__INIT;
    info.reason = (char *)st->reason;
    info.domain = (char *)(domain ? domain : "");

    uint8_t info_bytes[STATUS_REASON_MAX + 256];
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    Google__Protobuf__Any *details[1] = {&any};
    if (google__rpc__error_info__get_packed_size(&info) > sizeof info_bytes)
        info.domain = "";
    any.type_url = ERROR_INFO_TYPE_URL;
    any.value.data = info_bytes;
    any.value.len = google__rpc__error_info__pack(&info, info_bytes);

    Google__Rpc__Status message = GOOGLE__RPC__STATUS__INIT;
    message.code = (int32_t)st->code;
    message.message = (char *)st->message;
    if (st->reason[0] != '\0') {
        message.n_details = 1;
        message.details = details;
    }
    size_t length = google__rpc__status__get_packed_size(&message);
    uint8_t *buffer = malloc(length ? length : 1);
    if (buffer == NULL)
        return NULL;
    *size = google__rpc__status__pack(&message, buffer);
    return buffer;
}

int status_details_decode(const uint8_t *data, size_t size, status *st) {
    Google__Rpc__Status *message = google__rpc__status__unpack(NULL, size, data);
    if (message == NULL)
        return 0;
    st->code = (status_code)message->code;
    snprintf(st->message, sizeof st->message, "%s", message->message ? message->message : "");
    st->reason[0] = '\0';
    for (size_t i = 0; i < message->n_details; i++) {
        const Google__Protobuf__Any *any = message->details[i];
        if (any->type_url == NULL || strcmp(any->type_url, ERROR_INFO_TYPE_URL) != 0)
            continue;
        Google__Rpc__ErrorInfo *info =
            google__rpc__error_info__unpack(NULL, any->value.len, any->value.data);
        if (info != NULL) {
            snprintf(st->reason, sizeof st->reason, "%s", info->reason ? info->reason : "");
            google__rpc__error_info__free_unpacked(info, NULL);
        }
        break;
    }
    google__rpc__status__free_unpacked(message, NULL);
    return 1;
}
