/* The settings engine behind agentzd's and agentz-gateway's configuration: defaults, then the
 * environment, then flags, each value checked by its row of the table. */
#include "opts.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

int az_opts_parse_ms(const char *s, long *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0)) return -1; /* !(v >= 0) also refuses NaN */
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (strcmp(end, units[i].unit) != 0) continue;
        v *= units[i].ms;
        if (v > (double)LONG_MAX) return -1;
        *out = (long)v;
        return 0;
    }
    return -1;
}

/* "512", "64k", "4m", "1g" (powers of 1024). */
static int parse_bytes(const char *s, long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0) return -1;
    long long mult = 1;
    if (*end == 'k' || *end == 'K') mult = 1024, end++;
    else if (*end == 'm' || *end == 'M') mult = 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G') mult = 1024 * 1024 * 1024, end++;
    if (*end == 'i' || *end == 'B' || *end == 'b') end++; /* "KiB", "MB" */
    if (*end == 'B') end++;
    if (*end || v > LONG_MAX / mult) return -1;
    *out = (long)(v * mult);
    return 0;
}

static const char *const KIND_WANT[] = {
    [AZ_OPT_INT] = "an integer",
    [AZ_OPT_MS] = "a duration like 500ms, 10s, 2m or 7d",
    [AZ_OPT_SECONDS] = "a duration like 500ms, 10s, 2m or 7d",
    [AZ_OPT_BYTES] = "a size like 65536, 64k or 4m",
};

static az_err set(void *base, const az_opt *o, const char *value, const char *origin, char *msg)
{
    void *field = (char *)base + o->off;
    if (o->kind == AZ_OPT_STR) {
        char **p = field;
        az_err err;
        if (o->check && (err = o->check(origin, value ? value : "", msg)) != AZ_OK) return err;
        free(*p);
        *p = NULL;
        if (value && *value && !(*p = strdup(value))) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        return AZ_OK;
    }
    if (o->kind == AZ_OPT_FLAG) {
        *(int *)field = 1;
        return AZ_OK;
    }
    long v = LONG_MIN;
    char *end;
    switch (o->kind) {
    case AZ_OPT_INT:
        errno = 0;
        v = strtol(value, &end, 10);
        if (end == value || *end || errno) v = LONG_MIN;
        break;
    case AZ_OPT_MS:
    case AZ_OPT_SECONDS:
        if (az_opts_parse_ms(value, &v) != 0) v = LONG_MIN;
        else if (o->kind == AZ_OPT_SECONDS) v /= 1000;
        break;
    case AZ_OPT_BYTES:
        if (parse_bytes(value, &v) != 0) v = LONG_MIN;
        break;
    default: return AZ_ERR_INTERNAL;
    }
    if (v == LONG_MIN)
        return az_fail(msg, AZ_ERR_INVALID, "%s: \"%s\" is not %s", origin, value, KIND_WANT[o->kind]);
    if (v < o->min || v > o->max)
        return az_fail(msg, AZ_ERR_INVALID, "%s: %s is out of range (%ld..%ld%s)", origin, value,
                       o->min, o->max,
                       o->kind == AZ_OPT_MS ? " ms" : o->kind == AZ_OPT_SECONDS ? " s"
                                                   : o->kind == AZ_OPT_BYTES ? " bytes" : "");
    *(int *)field = (int)v;
    return AZ_OK;
}

static const az_opt *find_flag(const az_opt_table *tables, size_t nt, const char *name, size_t nlen,
                               const az_opt_table **owner)
{
    for (size_t t = 0; t < nt; t++) {
        const char *pre = tables[t].prefix ? tables[t].prefix : "";
        size_t pl = strlen(pre);
        if (nlen < pl || strncmp(name, pre, pl) != 0) continue;
        for (size_t i = 0; i < tables[t].n; i++) {
            const char *f = tables[t].opts[i].flag;
            if (strlen(f) == nlen - pl && strncmp(f, name + pl, nlen - pl) == 0) {
                *owner = &tables[t];
                return &tables[t].opts[i];
            }
        }
    }
    return NULL;
}

az_err az_opts_load(const az_opt_table *tables, size_t nt, int argc, char **argv, char *msg)
{
    az_err err;
    char origin[128];
    /* Every field a table lists starts out zero, so a setting without a default is 0 or NULL
     * rather than what the struct held before. */
    for (size_t t = 0; t < nt; t++) {
        for (size_t i = 0; i < tables[t].n; i++) {
            void *field = (char *)tables[t].base + tables[t].opts[i].off;
            if (tables[t].opts[i].kind == AZ_OPT_STR) *(char **)field = NULL;
            else *(int *)field = 0;
        }
    }
    for (size_t t = 0; t < nt; t++) {
        for (size_t i = 0; i < tables[t].n; i++) {
            const az_opt *o = &tables[t].opts[i];
            if (o->def && (err = set(tables[t].base, o, o->def, "default", msg)) != AZ_OK) return err;
            const char *env = o->env ? getenv(o->env) : NULL;
            if (env && *env) {
                snprintf(origin, sizeof origin, "%s", o->env);
                if ((err = set(tables[t].base, o, env, origin, msg)) != AZ_OK) return err;
            }
        }
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "-h") == 0) arg = "--help";
        if (strncmp(arg, "--", 2) != 0)
            return az_fail(msg, AZ_ERR_INVALID, "unexpected argument \"%s\" (see --help)", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const az_opt_table *owner = NULL;
        const az_opt *o = find_flag(tables, nt, name, nlen, &owner);
        if (!o) return az_fail(msg, AZ_ERR_INVALID, "unknown flag --%.*s (see --help)", (int)nlen, name);
        snprintf(origin, sizeof origin, "--%s%s", owner->prefix ? owner->prefix : "", o->flag);
        const char *value = NULL;
        if (o->kind != AZ_OPT_FLAG) {
            if (eq) value = eq + 1;
            else if (a + 1 < argc) value = argv[++a];
            else return az_fail(msg, AZ_ERR_INVALID, "%s needs a value", origin);
        } else if (eq) {
            return az_fail(msg, AZ_ERR_INVALID, "%s takes no value", origin);
        }
        if ((err = set(owner->base, o, value, origin, msg)) != AZ_OK) return err;
    }
    return AZ_OK;
}

void az_opts_free(const az_opt_table *tables, size_t nt)
{
    for (size_t t = 0; t < nt; t++) {
        for (size_t i = 0; i < tables[t].n; i++) {
            if (tables[t].opts[i].kind != AZ_OPT_STR) continue;
            char **p = (char **)((char *)tables[t].base + tables[t].opts[i].off);
            free(*p);
            *p = NULL;
        }
    }
}

void az_opts_usage(const az_opt_table *tables, size_t nt, FILE *out)
{
    static const char *const ARG[] = {[AZ_OPT_STR] = " VALUE", [AZ_OPT_INT] = " N",
                                      [AZ_OPT_MS] = " DUR", [AZ_OPT_SECONDS] = " DUR",
                                      [AZ_OPT_BYTES] = " SIZE", [AZ_OPT_FLAG] = ""};
    for (size_t t = 0; t < nt; t++) {
        for (size_t i = 0; i < tables[t].n; i++) {
            const az_opt *o = &tables[t].opts[i];
            char left[96];
            snprintf(left, sizeof left, "--%s%s%s", tables[t].prefix ? tables[t].prefix : "", o->flag, ARG[o->kind]);
            fprintf(out, "  %-34s %s\n", left, o->help);
            if (o->env)
                fprintf(out, "  %-34s env %s%s%s\n", "", o->env, o->def ? ", default " : "", o->def ? o->def : "");
        }
    }
}
