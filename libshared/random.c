/* random.c - identifiers and trace ids from the kernel's CSPRNG (glibc arc4random). */
#include <stdint.h>
#include <stdlib.h>

#include "rpc_internal.h"

void random_hex(char *out, size_t bytes) {
    static const char digits[] = "0123456789abcdef";
    uint8_t buffer[64];
    if (bytes > sizeof buffer)
        bytes = sizeof buffer;
    arc4random_buf(buffer, bytes);
    for (size_t i = 0; i < bytes; i++) {
        out[2 * i] = digits[buffer[i] >> 4];
        out[2 * i + 1] = digits[buffer[i] & 15];
    }
    out[2 * bytes] = '\0';
}
