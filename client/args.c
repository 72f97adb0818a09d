/* Flag parsing and value parsing for the agentz CLI. Kept free of I/O other than help text so
 * the parsers can be unit tested. */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- flag parser ---- */

typedef struct found {
    const az_flag *flag;
    az_flag_value *value;
} found;

static int find_long(const az_flag_set *sets, size_t nsets, const char *name, size_t len,
                     found *out)
{
    for (size_t s = 0; s < nsets; s++)
        for (size_t i = 0; i < sets[s].n; i++) {
            const char *n = sets[s].flags[i].name;
            if (n && strlen(n) == len && memcmp(n, name, len) == 0) {
                *out = (found){&sets[s].flags[i], &sets[s].values[i]};
                return 1;
            }
        }
    return 0;
}

static int find_short(const az_flag_set *sets, size_t nsets, char c, found *out)
{
    for (size_t s = 0; s < nsets; s++)
        for (size_t i = 0; i < sets[s].n; i++)
            if (sets[s].flags[i].short_name && sets[s].flags[i].short_name == c) {
                *out = (found){&sets[s].flags[i], &sets[s].values[i]};
                return 1;
            }
    return 0;
}

static az_err record(found f, const char *shown, const char *v, char *msg)
{
    az_flag_value *fv = f.value;
    if (f.flag->kind == AZ_FLAG_LIST) {
        const char **bigger = realloc(fv->list, (size_t)(fv->count + 1) * sizeof *bigger);
        if (!bigger) return az_fail(msg, AZ_ERR_NOMEM, "%s: out of memory", shown);
        fv->list = bigger;
        fv->list[fv->count] = v;
    }
    fv->count++;
    fv->value = v;
    return AZ_OK;
}

/* Bools take an optional attached value so `update --memory=false` can turn one off. */
static az_err bool_value(const char *shown, const char *v, const char **out, char *msg)
{
    static const struct {
        const char *in, *out;
    } words[] = {{"true", "true"}, {"1", "true"}, {"yes", "true"},
                 {"false", "false"}, {"0", "false"}, {"no", "false"}};
    if (!v) {
        *out = "true";
        return AZ_OK;
    }
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcasecmp(v, words[i].in) == 0) {
            *out = words[i].out;
            return AZ_OK;
        }
    return az_fail(msg, AZ_ERR_INVALID, "%s: expected true or false, got \"%s\"", shown, v);
}

az_err az_args_parse(const az_flag_set *sets, size_t nsets, int argc, char **argv, int *idx,
                     int flags, const char **pos, size_t pos_max, size_t *npos, char *msg)
{
    int only_positional = 0;
    while (*idx < argc) {
        const char *a = argv[*idx];
        int positional = only_positional || a[0] != '-' || a[1] == '\0';
        if (!only_positional && strcmp(a, "--") == 0) {
            only_positional = 1;
            (*idx)++;
            continue;
        }
        if (positional) {
            if (flags & AZ_ARGS_STOP_AT_POSITIONAL) return AZ_OK;
            if (*npos >= pos_max) return az_fail(msg, AZ_ERR_INVALID, "too many arguments");
            pos[(*npos)++] = a;
            (*idx)++;
            continue;
        }
        (*idx)++;
        found f;
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            if (!find_long(sets, nsets, name, len, &f))
                return az_fail(msg, AZ_ERR_INVALID, "unknown flag --%.*s", (int)len, name);
            char shown[128];
            snprintf(shown, sizeof shown, "--%s", f.flag->name);
            const char *v = eq ? eq + 1 : NULL;
            if (f.flag->kind == AZ_FLAG_BOOL) {
                az_err err = bool_value(shown, v, &v, msg);
                if (err) return err;
            } else if (!v) {
                if (*idx >= argc)
                    return az_fail(msg, AZ_ERR_INVALID, "flag %s needs a value", shown);
                v = argv[(*idx)++];
            }
            az_err err = record(f, shown, v, msg);
            if (err) return err;
            continue;
        }
        /* Short flags: bools may be bundled (-hv); a value flag takes the rest or the next. */
        for (const char *c = a + 1; *c; c++) {
            if (!find_short(sets, nsets, *c, &f))
                return az_fail(msg, AZ_ERR_INVALID, "unknown flag -%c", *c);
            char shown[8];
            snprintf(shown, sizeof shown, "-%c", *c);
            const char *v = "true";
            if (f.flag->kind != AZ_FLAG_BOOL) {
                if (c[1]) {
                    v = c + 1;
                } else {
                    if (*idx >= argc)
                        return az_fail(msg, AZ_ERR_INVALID, "flag %s needs a value", shown);
                    v = argv[(*idx)++];
                }
            }
            az_err err = record(f, shown, v, msg);
            if (err) return err;
            if (f.flag->kind != AZ_FLAG_BOOL) break;
        }
    }
    return AZ_OK;
}

void az_args_free_values(az_flag_value *values, size_t n)
{
    if (!values) return;
    for (size_t i = 0; i < n; i++) free(values[i].list);
    memset(values, 0, n * sizeof *values);
}

void az_args_print_flags(FILE *f, const az_flag *flags, size_t n)
{
    enum { HELP_COLUMN = 32 };
    for (size_t i = 0; i < n; i++) {
        const az_flag *fl = &flags[i];
        char left[128];
        int len = snprintf(left, sizeof left, "  %s%c%s--%s%s%s%s", fl->short_name ? "-" : "",
                           fl->short_name ? fl->short_name : ' ', fl->short_name ? ", " : "  ",
                           fl->name, fl->metavar ? " " : "", fl->metavar ? fl->metavar : "",
                           fl->kind == AZ_FLAG_LIST ? "..." : "");
        if (!fl->short_name) /* keep long names aligned whether or not a short name exists */
            len = snprintf(left, sizeof left, "      --%s%s%s%s", fl->name,
                           fl->metavar ? " " : "", fl->metavar ? fl->metavar : "",
                           fl->kind == AZ_FLAG_LIST ? "..." : "");
        if (len < HELP_COLUMN - 1)
            fprintf(f, "%-*s%s\n", HELP_COLUMN, left, fl->help ? fl->help : "");
        else
            fprintf(f, "%s\n%*s%s\n", left, HELP_COLUMN, "", fl->help ? fl->help : "");
    }
}

int az_args_bool(const az_flag_value *v)
{
    return v->count > 0 && v->value && strcmp(v->value, "true") == 0;
}

/* ---- value parsers ---- */

static const struct {
    const char *name;
    int64_t ns;
} units[] = {
    {"ns", 1},
    {"us", 1000},
    {"\xc2\xb5s", 1000}, /* U+00B5 micro sign */
    {"\xce\xbcs", 1000}, /* U+03BC greek mu */
    {"ms", 1000000},
    {"s", 1000000000},
    {"m", INT64_C(60) * 1000000000},
    {"h", INT64_C(3600) * 1000000000},
};

az_err az_args_duration(const char *flag, const char *s, int64_t *seconds, int32_t *nanos,
                        char *msg)
{
    const char *p = s;
    int64_t total = 0;
    if (!*s) return az_fail(msg, AZ_ERR_INVALID, "%s: empty duration", flag);
    if (strcmp(s, "0") == 0) goto ok;
    while (*p) {
        /* [0-9]*(\.[0-9]*)? unit */
        uint64_t whole = 0, frac = 0, scale = 1;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (whole > (UINT64_MAX - 9) / 10) goto overflow;
            whole = whole * 10 + (uint64_t)(*p++ - '0');
            digits++;
        }
        if (*p == '.') {
            p++;
            while (isdigit((unsigned char)*p)) {
                /* Digits beyond nanosecond-of-an-hour precision cannot matter; drop them. */
                if (scale < UINT64_C(1000000000000000000)) {
                    frac = frac * 10 + (uint64_t)(*p - '0');
                    scale *= 10;
                }
                p++;
                digits++;
            }
        }
        if (!digits)
            return az_fail(msg, AZ_ERR_INVALID, "%s: invalid duration \"%s\" (use e.g. 30s, 1h2m, 500ms)",
                           flag, s);
        const char *u = p;
        while (*p && !isdigit((unsigned char)*p) && *p != '.') p++;
        size_t ulen = (size_t)(p - u);
        if (!ulen)
            return az_fail(msg, AZ_ERR_INVALID, "%s: missing unit in duration \"%s\" (ns, us, ms, s, m, h)",
                           flag, s);
        int64_t unit = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strlen(units[i].name) == ulen && memcmp(units[i].name, u, ulen) == 0)
                unit = units[i].ns;
        if (!unit)
            return az_fail(msg, AZ_ERR_INVALID, "%s: unknown unit \"%.*s\" in duration \"%s\" (ns, us, ms, s, m, h)",
                           flag, (int)ulen, u, s);
        if (whole > (uint64_t)INT64_MAX / (uint64_t)unit) goto overflow;
        int64_t v = (int64_t)whole * unit;
        /* frac/scale < 1, so this stays below unit; long double keeps the ns exact enough. */
        v += (int64_t)((long double)frac * (long double)unit / (long double)scale);
        if (v < 0 || total > INT64_MAX - v) goto overflow;
        total += v;
    }
ok:
    *seconds = total / 1000000000;
    *nanos = (int32_t)(total % 1000000000);
    return AZ_OK;
overflow:
    return az_fail(msg, AZ_ERR_INVALID, "%s: duration \"%s\" is too large", flag, s);
}

az_err az_args_int64(const char *flag, const char *s, int64_t min, int64_t max, int64_t *out,
                     char *msg)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno == ERANGE || isspace((unsigned char)*s))
        return az_fail(msg, AZ_ERR_INVALID, "%s: expected an integer, got \"%s\"", flag, s);
    if (v < min || v > max)
        return az_fail(msg, AZ_ERR_INVALID, "%s: %lld is out of range %lld..%lld", flag, v,
                       (long long)min, (long long)max);
    *out = (int64_t)v;
    return AZ_OK;
}

az_err az_args_int32(const char *flag, const char *s, int32_t min, int32_t max, int32_t *out,
                     char *msg)
{
    int64_t v;
    az_err err = az_args_int64(flag, s, min, max, &v, msg);
    if (!err) *out = (int32_t)v;
    return err;
}

az_err az_args_double(const char *flag, const char *s, double *out, char *msg)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || !isfinite(v) || isspace((unsigned char)*s))
        return az_fail(msg, AZ_ERR_INVALID, "%s: expected a number, got \"%s\"", flag, s);
    *out = v;
    return AZ_OK;
}

az_err az_args_kv(const char *flag, const char *s, size_t *key_len, const char **value,
                  char *msg)
{
    const char *eq = strchr(s, '=');
    if (!eq) return az_fail(msg, AZ_ERR_INVALID, "%s: expected key=value, got \"%s\"", flag, s);
    if (eq == s) return az_fail(msg, AZ_ERR_INVALID, "%s: empty key in \"%s\"", flag, s);
    if (memchr(s, ',', (size_t)(eq - s)))
        return az_fail(msg, AZ_ERR_INVALID, "%s: key may not contain ',' in \"%s\"", flag, s);
    *key_len = (size_t)(eq - s);
    *value = eq + 1;
    return AZ_OK;
}

az_err az_args_selector(const char *flag, const char *s, char *msg)
{
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char term[512];
        if (!len) return az_fail(msg, AZ_ERR_INVALID, "%s: empty term in selector \"%s\"", flag, s);
        if (len >= sizeof term)
            return az_fail(msg, AZ_ERR_INVALID, "%s: selector term too long", flag);
        memcpy(term, p, len);
        term[len] = '\0';
        size_t klen;
        const char *v;
        az_err err = az_args_kv(flag, term, &klen, &v, msg);
        if (err) return err;
        if (!end) return AZ_OK;
        p = end + 1;
    }
}

az_err az_args_enum(const char *flag, const ProtobufCEnumDescriptor *desc, const char *prefix,
                    const char *s, int *out, char *msg)
{
    size_t plen = strlen(prefix);
    for (unsigned i = 0; i < desc->n_values; i++) {
        const char *name = desc->values[i].name;
        int full = strcasecmp(s, name) == 0;
        int short_ = strncmp(name, prefix, plen) == 0 && strcasecmp(s, name + plen) == 0;
        if (full || short_) {
            *out = desc->values[i].value;
            return AZ_OK;
        }
    }
    char list[256] = "";
    size_t used = 0;
    for (unsigned i = 0; i < desc->n_values; i++) {
        const char *name = desc->values[i].name;
        if (strncmp(name, prefix, plen) == 0) name += plen;
        if (strcmp(name, "UNSPECIFIED") == 0) continue;
        for (const char *c = used ? ", " : ""; *c && used + 1 < sizeof list; c++) list[used++] = *c;
        for (const char *c = name; *c && used + 1 < sizeof list; c++)
            list[used++] = (char)tolower((unsigned char)*c);
        list[used] = '\0';
    }
    return az_fail(msg, AZ_ERR_INVALID, "%s: unknown value \"%s\" (one of: %s)", flag, s, list);
}

az_err az_args_mask_paths(const az_flag_set *set, const char ***paths, size_t *npaths,
                          char *msg)
{
    *paths = NULL;
    *npaths = 0;
    const char **out = NULL;
    size_t n = 0;
    for (size_t i = 0; i < set->n; i++) {
        const char *field = set->flags[i].field;
        if (!field || !set->values[i].count) continue;
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++) dup = strcmp(out[j], field) == 0;
        if (dup) continue;
        const char **bigger = realloc(out, (n + 1) * sizeof *bigger);
        if (!bigger) {
            free(out);
            return az_fail(msg, AZ_ERR_NOMEM, "update mask: out of memory");
        }
        out = bigger;
        out[n++] = field;
    }
    *paths = out;
    *npaths = n;
    return AZ_OK;
}

az_err az_args_days_duration(const char *flag, const char *s, int64_t *out, char *msg)
{
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == 'd' && strspn(s, "0123456789") == n - 1) {
        int64_t days;
        char num[24];
        if (n - 1 >= sizeof num) return az_fail(msg, AZ_ERR_INVALID, "%s: \"%s\" is too large", flag, s);
        snprintf(num, sizeof num, "%.*s", (int)(n - 1), s);
        az_err err = az_args_int64(flag, num, 0, 365000, &days, msg);
        if (err) return err;
        *out = days * 86400;
        return AZ_OK;
    }
    int32_t ns;
    return az_args_duration(flag, s, out, &ns, msg);
}
