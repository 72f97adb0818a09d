/* Chunked bump allocator: one malloc per 16 KiB (or per oversized object), one free pass. */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 16384
#define ALIGN 16

typedef struct block {
    struct block *next;
    size_t size, used;
    _Alignas(ALIGN) unsigned char data[];
} block;

struct az_arena {
    block *head;
    size_t limit, total;
    ProtobufCAllocator pc;
};

static void *pc_alloc(void *ud, size_t n) { return az_arena_alloc(ud, n ? n : 1); }
static void pc_free(void *ud, void *p) { (void)ud, (void)p; }

az_arena *az_arena_new(size_t limit)
{
    az_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->limit = limit ? limit : (size_t)64 << 20;
    a->pc.alloc = pc_alloc;
    a->pc.free = pc_free;
    a->pc.allocator_data = a;
    return a;
}

void az_arena_free(az_arena *a)
{
    if (!a) return;
    for (block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

void *az_arena_alloc(az_arena *a, size_t n)
{
    if (n > a->limit) return NULL;
    n = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > CHUNK / 4 ? n : CHUNK;
        if (a->total + size > a->limit) return NULL;
        block *nb = malloc(sizeof *nb + size);
        if (!nb) return NULL;
        nb->size = size;
        nb->used = 0;
        a->total += size;
        if (b && size == n) {
            /* An oversized object gets its own block behind the current one, so the
             * current block's free space is not wasted. */
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            a->head = nb;
        }
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *az_arena_strndup(az_arena *a, const char *s, size_t n)
{
    char *p = az_arena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *az_arena_strdup(az_arena *a, const char *s)
{
    if (!s) s = "";
    return az_arena_strndup(a, s, strlen(s));
}

char *az_arena_printf(az_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *p = az_arena_alloc(a, (size_t)n + 1);
    if (!p) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

ProtobufCAllocator *az_arena_allocator(az_arena *a) { return &a->pc; }

size_t az_arena_used(const az_arena *a)
{
    size_t used = 0;
    for (const block *b = a->head; b; b = b->next) used += b->used;
    return used;
}
