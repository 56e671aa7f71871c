/* fuzz.h - what every libFuzzer harness in tests/fuzz shares: the entry point's prototype
 * (the build has -Wmissing-prototypes), an invariant check that aborts (so libFuzzer keeps the
 * input as a crash), and turning the raw input into C strings. */
#ifndef FUZZ_FUZZ_H
#define FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test; a violation is a bug just like a crash. */
#define FUZZ_CHECK(condition)                                                                    \
    do {                                                                                         \
        if (!(condition)) {                                                                      \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #condition);   \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* A NUL-terminated copy of data[0..size) (stops at an embedded NUL, as C strings do). The
 * caller frees it. */
static inline char *fuzz_string(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (text == NULL)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    return text;
}

/* Splits data at the first byte equal to separator: the part before is returned as a string
 * (caller frees), *rest and *rest_size are what follows (empty when there is no separator). */
static inline char *fuzz_split(const uint8_t *data, size_t size, uint8_t separator,
                               const uint8_t **rest, size_t *rest_size) {
    const uint8_t *found = memchr(data, separator, size);
    size_t head = found ? (size_t)(found - data) : size;
    *rest = found ? found + 1 : data + size;
    *rest_size = found ? size - head - 1 : 0;
    return fuzz_string(data, head);
}

#endif
