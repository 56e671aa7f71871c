/* api_descriptor.h - the serialized FileDescriptorSet of the whole API (every library proto
 * with its imports, health and reflection), generated at build time for reflection. */
#ifndef LIBSHARED_API_DESCRIPTOR_H
#define LIBSHARED_API_DESCRIPTOR_H

#include <stddef.h>
#include <stdint.h>

extern const uint8_t library_api_descriptor_set[];
extern const size_t library_api_descriptor_set_size;

#endif
