/* arena.h - a bump allocator for everything one call needs: the decoded request, the
 * response a handler builds, strings. The whole arena is freed (or reset) at once when the
 * call ends, so handlers never free anything and never leak. */
#ifndef LIBSHARED_ARENA_H
#define LIBSHARED_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct arena arena;

/* Returns NULL when out of memory. first_block is the size of the first block (0: 4 KiB). */
arena *arena_create(size_t first_block);
void arena_destroy(arena *a); /* NULL is a no-op */
/* Frees every block but the first, so a reused arena does not grow without bound. */
void arena_reset(arena *a);

/* 16-byte aligned, zeroed memory; NULL when out of memory. */
void *arena_alloc(arena *a, size_t size);
char *arena_strdup(arena *a, const char *text);
char *arena_strndup(arena *a, const char *text, size_t length);
char *arena_sprintf(arena *a, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* A protobuf-c allocator backed by the arena (free is a no-op), for unpacking messages
 * whose lifetime is the arena's. */
ProtobufCAllocator arena_protobuf_allocator(arena *a);

/* Appends item to a protobuf-c repeated field of pointers (a history, recent requests), keeping
 * the newest `kept`: older ones fall off the front. field is the address of the field's array
 * (a T ***, passed as void * so that one function serves every element type) and count its
 * n_ member. The new array comes from a; on false (out of memory) nothing changed. */
bool arena_append_kept(arena *a, void *field, size_t *count, void *item, size_t kept);

/* Allocates and initializes an empty message of the given type. */
ProtobufCMessage *arena_new_message(arena *a, const ProtobufCMessageDescriptor *descriptor);

/* Serializes a message into the arena (NULL when out of memory). */
uint8_t *arena_pack(arena *a, const ProtobufCMessage *message, size_t *size);
/* Parses bytes into a message whose memory is the arena's; NULL when they do not parse. */
ProtobufCMessage *arena_unpack(arena *a, const ProtobufCMessageDescriptor *type, const uint8_t *data,
                               size_t size);

/* Bytes handed out since creation or the last reset (for tests and metrics). */
size_t arena_used(const arena *a);

#endif
