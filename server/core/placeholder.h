/* Run-input placeholders in workflow text, CrewAI style: "{topic}" is replaced by the run input
 * named topic; "{{" and "}}" are literal braces; any other brace is kept as written. Shared by
 * workflow validation, StartRun and the execution engine (agents' role, goal and backstory). */
#ifndef AZ_PLACEHOLDER_H
#define AZ_PLACEHOLDER_H

#include <stddef.h>

#include "arena.h"
#include "err.h"

/* Longest placeholder (and input) name: [a-zA-Z_][a-zA-Z0-9_]{0,63}. */
#define AZ_PLACEHOLDER_NAME_MAX 64

/* Called once per placeholder occurrence with its name (not NUL-terminated, len bytes). A
 * non-AZ_OK return stops the scan and is returned by az_placeholder_scan. */
typedef az_err (*az_placeholder_fn)(void *arg, const char *name, size_t len, char *msg);

/* Calls fn for every "{name}" in s (NULL = ""), left to right, skipping "{{" and "}}". */
az_err az_placeholder_scan(const char *s, az_placeholder_fn fn, void *arg, char *msg);

/* Returns the value of input name (len bytes), or NULL when there is none. */
typedef const char *(*az_placeholder_lookup)(void *arg, const char *name, size_t len);

/* Returns s with every placeholder replaced by lookup's value (placeholders without a value are
 * kept as "{name}"), "{{" turned into "{" and "}}" into "}". The result lives in arena; NULL
 * when out of memory. */
char *az_placeholder_fill(const char *s, az_placeholder_lookup lookup, void *arg, az_arena *arena);

/* One named value, e.g. a run input. */
typedef struct az_placeholder_var {
    const char *name;
    const char *value; /* NULL counts as "" */
} az_placeholder_var;

/* az_placeholder_fill with the values of vars[0..n) (the first of a name wins; names without a
 * var are kept as "{name}"). In arena; NULL when out of memory. */
char *az_placeholder_fill_vars(const char *s, const az_placeholder_var *vars, size_t n,
                               az_arena *arena);

/* 1 when name is a valid input name: [a-zA-Z_][a-zA-Z0-9_]{0,63}. */
int az_placeholder_name_ok(const char *name);

#endif
