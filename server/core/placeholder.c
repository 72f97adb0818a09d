/* The one placeholder grammar, so validation, StartRun and the engine can never disagree about
 * what "{name}" means. */
#include "placeholder.h"

#include <string.h>

static int name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int name_char(char c) { return name_start(c) || (c >= '0' && c <= '9'); }

/* Length of the placeholder name starting after the '{' at s, when "{name}" follows; else 0. */
static size_t placeholder_at(const char *s)
{
    if (!name_start(s[0])) return 0;
    size_t n = 1;
    while (n < AZ_PLACEHOLDER_NAME_MAX && name_char(s[n])) n++;
    return s[n] == '}' ? n : 0;
}

int az_placeholder_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > AZ_PLACEHOLDER_NAME_MAX || !name_start(name[0])) return 0;
    for (size_t i = 1; i < n; i++) {
        if (!name_char(name[i])) return 0;
    }
    return 1;
}

az_err az_placeholder_scan(const char *s, az_placeholder_fn fn, void *arg, char *msg)
{
    if (!s) return AZ_OK;
    for (const char *p = s; *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            p += 2;
            continue;
        }
        size_t n = p[0] == '{' ? placeholder_at(p + 1) : 0;
        if (n) {
            az_err err = fn(arg, p + 1, n, msg);
            if (err != AZ_OK) return err;
            p += n + 2;
            continue;
        }
        p++;
    }
    return AZ_OK;
}

char *az_placeholder_fill(const char *s, az_placeholder_lookup lookup, void *arg, az_arena *arena)
{
    if (!s) s = "";
    /* Two passes: measure, then copy, so the result is one arena block. */
    char *out = NULL;
    for (int pass = 0; pass < 2; pass++) {
        size_t k = 0;
        for (const char *p = s; *p;) {
            if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
                if (out) out[k] = p[0];
                k++;
                p += 2;
                continue;
            }
            size_t n = p[0] == '{' ? placeholder_at(p + 1) : 0;
            const char *v = n ? lookup(arg, p + 1, n) : NULL;
            if (v) {
                size_t vl = strlen(v);
                if (out) memcpy(out + k, v, vl);
                k += vl;
                p += n + 2;
                continue;
            }
            if (n) { /* no value: keep "{name}" verbatim */
                if (out) memcpy(out + k, p, n + 2);
                k += n + 2;
                p += n + 2;
                continue;
            }
            if (out) out[k] = *p;
            k++;
            p++;
        }
        if (out) {
            out[k] = '\0';
            return out;
        }
        out = az_arena_alloc(arena, k + 1);
        if (!out) return NULL;
    }
    return out;
}

typedef struct var_set {
    const az_placeholder_var *v;
    size_t n;
} var_set;

static const char *var_value(void *arg, const char *name, size_t len)
{
    const var_set *set = arg;
    for (size_t i = 0; i < set->n; i++) {
        const char *k = set->v[i].name;
        if (k && strlen(k) == len && memcmp(k, name, len) == 0)
            return set->v[i].value ? set->v[i].value : "";
    }
    return NULL;
}

char *az_placeholder_fill_vars(const char *s, const az_placeholder_var *vars, size_t n,
                               az_arena *arena)
{
    var_set set = {vars, vars ? n : 0};
    return az_placeholder_fill(s, var_value, &set, arena);
}
