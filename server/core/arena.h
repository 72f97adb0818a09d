/* A bump allocator for everything one RPC allocates: request, response, strings. Freed at once. */
#ifndef AZ_ARENA_H
#define AZ_ARENA_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

typedef struct az_arena az_arena;

/* Creates an empty arena whose total size may not exceed limit bytes (0 = 64 MiB).
 * Returns NULL when out of memory. Free with az_arena_free. */
az_arena *az_arena_new(size_t limit);

/* Frees every block; accepts NULL. */
void az_arena_free(az_arena *a);

/* Returns n zeroed bytes aligned for any type, or NULL when out of memory or past the limit.
 * The memory lives until az_arena_free. */
void *az_arena_alloc(az_arena *a, size_t n);

/* Copies s (NULL gives "") into the arena; NULL when out of memory. */
char *az_arena_strdup(az_arena *a, const char *s);
char *az_arena_strndup(az_arena *a, const char *s, size_t n);
char *az_arena_printf(az_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A ProtobufCAllocator that allocates from a (free is a no-op): unpack requests with it and
 * the message dies with the arena. The returned struct is owned by the arena. */
ProtobufCAllocator *az_arena_allocator(az_arena *a);

/* Bytes handed out so far. */
size_t az_arena_used(const az_arena *a);

#endif
