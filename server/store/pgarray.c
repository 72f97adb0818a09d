/* Array literals for set-based statements: one growing buffer, quoting every element. */
#include "pgarray.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Room for len more bytes plus the closing "}" and NUL. */
static int grow(az_pgarray *a, size_t len)
{
    if (a->oom) return 0;
    if (a->len + len + 3 <= a->cap) return 1;
    size_t cap = a->cap ? a->cap : 256;
    while (a->len + len + 3 > cap) cap *= 2;
    char *s = realloc(a->s, cap);
    if (!s) {
        a->oom = 1;
        return 0;
    }
    a->s = s;
    a->cap = cap;
    return 1;
}

static void put(az_pgarray *a, const char *v, size_t len)
{
    if (!grow(a, len)) return;
    memcpy(a->s + a->len, v, len);
    a->len += len;
}

void az_pgarray_add(az_pgarray *a, const char *v)
{
    put(a, a->count ? "," : "{", 1);
    a->count++;
    if (!v) {
        put(a, "NULL", 4);
        return;
    }
    /* Worst case every byte escaped: reserve once, then copy. */
    size_t n = strlen(v);
    if (!grow(a, 2 * n + 2)) return;
    char *p = a->s + a->len;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '"' || v[i] == '\\') *p++ = '\\';
        *p++ = v[i];
    }
    *p++ = '"';
    a->len = (size_t)(p - a->s);
}

const char *az_pgarray_text(az_pgarray *a)
{
    if (!a->count) {
        if (!grow(a, 2)) return NULL;
        memcpy(a->s, "{}", 3);
        return a->s;
    }
    if (!grow(a, 0)) return NULL;
    /* Close without consuming: more elements may follow, and the next call closes again. */
    a->s[a->len] = '}';
    a->s[a->len + 1] = '\0';
    return a->s;
}

void az_pgarray_free(az_pgarray *a)
{
    if (!a) return;
    free(a->s);
    memset(a, 0, sizeof *a);
}

char *az_pgarray_label_pairs(az_arena *arena, const char *labels_json)
{
    json_error_t jerr;
    json_t *o = labels_json ? json_loads(labels_json, 0, &jerr) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    az_pgarray a = {0};
    char *out = NULL;
    const char *k;
    json_t *v;
    int ok = 1;
    json_object_foreach(o, k, v) {
        char *pair = json_is_string(v) ? az_arena_printf(arena, "%s=%s", k, json_string_value(v)) : NULL;
        if (!pair) {
            ok = 0;
            break;
        }
        az_pgarray_add(&a, pair);
    }
    const char *t = ok ? az_pgarray_text(&a) : NULL;
    if (t) out = az_arena_strdup(arena, t);
    az_pgarray_free(&a);
    json_decref(o);
    return out;
}
