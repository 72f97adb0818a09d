/* PostgreSQL array literals ("{...}") built element by element, for set-based statements that
 * pass a batch as parallel array parameters (unnest($1::uuid[], $2::text[], ...)). */
#ifndef AZ_PGARRAY_H
#define AZ_PGARRAY_H

#include <stddef.h>

#include "core/arena.h"

/* Zero-initialise ({0}); free with az_pgarray_free. Out of memory sticks: every later call does
 * nothing and az_pgarray_text returns NULL. */
typedef struct az_pgarray {
    char *s;
    size_t len, cap, count;
    int oom;
} az_pgarray;

/* Appends an element: v double-quoted with '"' and '\' escaped, so any text is one element
 * (a uuid, "t", a bytea's "\x..." hex, free text); NULL appends SQL NULL. */
void az_pgarray_add(az_pgarray *a, const char *v);

/* The literal so far, closed ("{}" when empty); owned by a, valid until the next call on it.
 * NULL when out of memory. */
const char *az_pgarray_text(az_pgarray *a);

/* Frees the buffer and resets a to empty; accepts NULL. */
void az_pgarray_free(az_pgarray *a);

/* A label selector as the services parse it (a JSON object of string values, keys checked by
 * az_text_label_key_ok) as a text[] literal of "key=value" pairs, in arena: the form the
 * agent_labels and workflow_labels tables store (keys cannot hold '=', so a pair reads one
 * way). NULL when out of memory or when labels_json is not such an object. */
char *az_pgarray_label_pairs(az_arena *arena, const char *labels_json);

#endif
