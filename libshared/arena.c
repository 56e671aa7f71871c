/* arena.c - chained blocks; allocations never move, the arena frees them all together. */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ARENA_ALIGN = 16, ARENA_DEFAULT_BLOCK = 4096 };

typedef struct arena_block {
    struct arena_block *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
} arena_block;

struct arena {
    arena_block *head; /* the block allocations come from; the first block is last */
    size_t first_block_size;
    size_t total_used;
};

static arena_block *block_create(size_t size) {
    arena_block *block = malloc(sizeof *block + size);
    if (block == NULL)
        return NULL;
    block->next = NULL;
    block->size = size;
    block->used = 0;
    return block;
}

arena *arena_create(size_t first_block) {
    arena *a = malloc(sizeof *a);
    if (a == NULL)
        return NULL;
    a->first_block_size = first_block ? first_block : ARENA_DEFAULT_BLOCK;
    a->total_used = 0;
    a->head = block_create(a->first_block_size);
    if (a->head == NULL) {
        free(a);
        return NULL;
    }
    return a;
}

void arena_destroy(arena *a) {
    if (a == NULL)
        return;
    arena_block *block = a->head;
    while (block != NULL) {
        arena_block *next = block->next;
        free(block);
        block = next;
    }
    free(a);
}

void arena_reset(arena *a) {
    while (a->head->next != NULL) {
        arena_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
    a->head->used = 0;
    a->total_used = 0;
}

void *arena_alloc(arena *a, size_t size) {
    size_t rounded = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (rounded < size)
        return NULL;
    arena_block *block = a->head;
    if (block->size - block->used < rounded) {
        size_t next_size = block->size * 2;
        if (next_size < rounded)
            next_size = rounded;
        arena_block *fresh = block_create(next_size);
        if (fresh == NULL)
            return NULL;
        fresh->next = block;
        a->head = fresh;
        block = fresh;
    }
    void *memory = block->data + block->used;
    block->used += rounded;
    a->total_used += rounded;
    memset(memory, 0, size);
    return memory;
}

char *arena_strndup(arena *a, const char *text, size_t length) {
    char *copy = arena_alloc(a, length + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, text, length);
    copy[length] = '\0';
    return copy;
}

char *arena_strdup(arena *a, const char *text) {
    return arena_strndup(a, text, strlen(text));
}

char *arena_sprintf(arena *a, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int length = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (length < 0)
        return NULL;
    char *text = arena_alloc(a, (size_t)length + 1);
    if (text == NULL)
        return NULL;
    va_start(args, format);
    vsnprintf(text, (size_t)length + 1, format, args);
    va_end(args);
    return text;
}

static void *protobuf_arena_alloc(void *data, size_t size) {
    return arena_alloc(data, size);
}

static void protobuf_arena_free(void *data, void *pointer) {
    (void)data;
    (void)pointer; /* released with the arena */
}

ProtobufCAllocator arena_protobuf_allocator(arena *a) {
    return (ProtobufCAllocator){.alloc = protobuf_arena_alloc, .free = protobuf_arena_free,
                                .allocator_data = a};
}

bool arena_append_kept(arena *a, void *field, size_t *count, void *item, size_t kept) {
    /* The array is copied as bytes: every object pointer has the same size and representation
     * on the platforms this builds for, and memcpy keeps the compiler's aliasing rules. */
    char *old;
    memcpy(&old, field, sizeof old);
    size_t start = *count >= kept ? *count - kept + 1 : 0;
    size_t length = *count - start + 1;
    char *grown = arena_alloc(a, length * sizeof item);
    if (grown == NULL)
        return false;
    if (length > 1)
        memcpy(grown, old + start * sizeof item, (length - 1) * sizeof item);
    memcpy(grown + (length - 1) * sizeof item, &item, sizeof item);
    memcpy(field, &grown, sizeof grown);
    *count = length;
    return true;
}

ProtobufCMessage *arena_new_message(arena *a, const ProtobufCMessageDescriptor *descriptor) {
    ProtobufCMessage *message = arena_alloc(a, descriptor->sizeof_message);
    if (message != NULL)
        descriptor->message_init(message);
    return message;
}

uint8_t *arena_pack(arena *a, const ProtobufCMessage *message, size_t *size) {
    *size = protobuf_c_message_get_packed_size(message);
    uint8_t *bytes = arena_alloc(a, *size ? *size : 1);
    if (bytes != NULL)
        protobuf_c_message_pack(message, bytes);
    return bytes;
}

ProtobufCMessage *arena_unpack(arena *a, const ProtobufCMessageDescriptor *type, const uint8_t *data,
                               size_t size) {
    ProtobufCAllocator allocator = arena_protobuf_allocator(a);
    return protobuf_c_message_unpack(type, &allocator, size, data);
}

size_t arena_used(const arena *a) {
    return a->total_used;
}
