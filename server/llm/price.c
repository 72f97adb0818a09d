/* The LLM price table. Small (tens of entries) and read-mostly, so a linear array: lookups
 * happen once per model call, next to a network round trip. */
#include "price.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define MODEL_MAX 200

typedef struct price {
    char *model;
    double in_per_m, out_per_m;
} price;

struct az_llm_prices {
    price *v;
    size_t n, cap;
};

/* USD per million tokens, list prices at the time of writing; deployments override them
 * (AGENTZ_LLM_PRICES) rather than waiting for a release. Dated variants match by prefix. */
static const struct {
    const char *model;
    double in, out;
} DEFAULTS[] = {
    {"gpt-4o", 2.50, 10.00},
    {"gpt-4o-mini", 0.15, 0.60},
    {"gpt-4.1", 2.00, 8.00},
    {"gpt-4.1-mini", 0.40, 1.60},
    {"gpt-4.1-nano", 0.10, 0.40},
    {"gpt-4-turbo", 10.00, 30.00},
    {"gpt-3.5-turbo", 0.50, 1.50},
    {"o1", 15.00, 60.00},
    {"o1-mini", 1.10, 4.40},
    {"o3-mini", 1.10, 4.40},
    {"o4-mini", 1.10, 4.40},
    {"claude-3-haiku", 0.25, 1.25},
    {"claude-3-5-haiku", 0.80, 4.00},
    {"claude-3-5-sonnet", 3.00, 15.00},
    {"claude-3-7-sonnet", 3.00, 15.00},
    {"claude-sonnet-4", 3.00, 15.00},
    {"claude-3-opus", 15.00, 75.00},
    {"claude-opus-4", 15.00, 75.00},
};

az_err az_llm_prices_new_empty(az_llm_prices **out, char *msg)
{
    *out = calloc(1, sizeof **out);
    return *out ? AZ_OK : az_fail(msg, AZ_ERR_NOMEM, "cannot allocate price table");
}

az_err az_llm_prices_new(az_llm_prices **out, char *msg)
{
    az_err e = az_llm_prices_new_empty(out, msg);
    for (size_t i = 0; !e && i < sizeof DEFAULTS / sizeof DEFAULTS[0]; i++)
        e = az_llm_prices_set(*out, DEFAULTS[i].model, DEFAULTS[i].in, DEFAULTS[i].out, msg);
    if (e) {
        az_llm_prices_free(*out);
        *out = NULL;
    }
    return e;
}

void az_llm_prices_free(az_llm_prices *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) free(p->v[i].model);
    free(p->v);
    free(p);
}

az_err az_llm_prices_set(az_llm_prices *p, const char *model, double in_per_m, double out_per_m,
                         char *msg)
{
    if (!model || !*model || strlen(model) > MODEL_MAX)
        return az_fail(msg, AZ_ERR_INVALID, "price: model name empty or longer than %d", MODEL_MAX);
    if (!isfinite(in_per_m) || in_per_m < 0 || !isfinite(out_per_m) || out_per_m < 0)
        return az_fail(msg, AZ_ERR_INVALID, "price of %s: prices must be finite and >= 0", model);
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->v[i].model, model) == 0) {
            p->v[i].in_per_m = in_per_m;
            p->v[i].out_per_m = out_per_m;
            return AZ_OK;
        }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        price *v = realloc(p->v, cap * sizeof *v);
        if (!v) return az_fail(msg, AZ_ERR_NOMEM, "cannot grow price table");
        p->v = v;
        p->cap = cap;
    }
    char *m = strdup(model);
    if (!m) return az_fail(msg, AZ_ERR_NOMEM, "cannot grow price table");
    p->v[p->n++] = (price){m, in_per_m, out_per_m};
    return AZ_OK;
}

/* Parses a whole number like "2.5" (no trailing junk). */
static int parse_num(const char *s, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (errno || *end || end == buf) return -1;
    *out = d;
    return 0;
}

static void trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s)) (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

az_err az_llm_prices_parse(az_llm_prices *p, const char *spec, char *msg)
{
    const char *s = spec ? spec : "";
    while (*s) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        const char *item = s;
        size_t in = n;
        trim(&item, &in);
        s += n + (end ? 1 : 0);
        if (in == 0) continue;
        const char *eq = memchr(item, '=', in);
        const char *colon = eq ? memchr(eq, ':', in - (size_t)(eq - item)) : NULL;
        const char *m = item;
        size_t mn = eq ? (size_t)(eq - item) : 0;
        trim(&m, &mn);
        double vin, vout;
        if (!eq || !colon || mn == 0 || mn > MODEL_MAX ||
            parse_num(eq + 1, (size_t)(colon - eq - 1), &vin) ||
            parse_num(colon + 1, in - (size_t)(colon + 1 - item), &vout))
            return az_fail(msg, AZ_ERR_INVALID,
                           "price item \"%.*s\": want model=input_usd_per_mtok:output_usd_per_mtok",
                           (int)(in > 100 ? 100 : in), item);
        char model[MODEL_MAX + 1];
        memcpy(model, m, mn);
        model[mn] = '\0';
        az_err e = az_llm_prices_set(p, model, vin, vout, msg);
        if (e) return e;
    }
    return AZ_OK;
}

az_err az_llm_prices_load_file(az_llm_prices *p, const char *path, char *msg)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) return az_fail(msg, AZ_ERR_IO, "cannot load price file %s: %s", path, jerr.text);
    az_err e = AZ_OK;
    if (!json_is_object(root)) {
        e = az_fail(msg, AZ_ERR_INVALID, "price file %s: want an object of model -> prices", path);
        goto out;
    }
    const char *model;
    json_t *v;
    json_object_foreach(root, model, v) {
        json_t *in = json_is_array(v) ? json_array_get(v, 0) : json_object_get(v, "input");
        json_t *o = json_is_array(v) ? json_array_get(v, 1) : json_object_get(v, "output");
        if (!json_is_number(in) || !json_is_number(o)) {
            e = az_fail(msg, AZ_ERR_INVALID,
                        "price file %s: %s: want {\"input\": usd, \"output\": usd}", path, model);
            goto out;
        }
        if ((e = az_llm_prices_set(p, model, json_number_value(in), json_number_value(o), msg)))
            goto out;
    }
out:
    json_decref(root);
    return e;
}

az_err az_llm_prices_from_env(az_llm_prices **out, char *msg)
{
    az_err e = az_llm_prices_new(out, msg);
    if (e) return e;
    const char *file = getenv("AGENTZ_LLM_PRICES_FILE");
    const char *spec = getenv("AGENTZ_LLM_PRICES");
    char m[AZ_MSG_MAX];
    if (file && *file && (e = az_llm_prices_load_file(*out, file, m)))
        az_fail(msg, e, "AGENTZ_LLM_PRICES_FILE: %s", m);
    else if (spec && (e = az_llm_prices_parse(*out, spec, m)))
        az_fail(msg, e, "AGENTZ_LLM_PRICES: %s", m);
    if (e) {
        az_llm_prices_free(*out);
        *out = NULL;
    }
    return e;
}

static az_llm_prices *g_default;
static pthread_once_t g_default_once = PTHREAD_ONCE_INIT;

static void default_init(void)
{
    char msg[AZ_MSG_MAX];
    if (az_llm_prices_from_env(&g_default, msg) == AZ_OK) return;
    az_warn("cannot load llm prices, using built-in defaults: %s", msg);
    if (az_llm_prices_new(&g_default, msg) != AZ_OK) az_error("cannot build llm prices: %s", msg);
}

static const az_llm_prices EMPTY;

const az_llm_prices *az_llm_prices_default(void)
{
    pthread_once(&g_default_once, default_init);
    return g_default ? g_default : &EMPTY;
}

static const price *find(const az_llm_prices *p, const char *model)
{
    const price *best = NULL;
    size_t best_len = 0, n = strlen(model);
    for (size_t i = 0; i < p->n; i++) {
        size_t k = strlen(p->v[i].model);
        if (k == n && memcmp(p->v[i].model, model, n) == 0) return &p->v[i];
        if (k < n && k > best_len && memcmp(p->v[i].model, model, k) == 0 &&
            (model[k] == '-' || model[k] == '.' || model[k] == ':')) {
            best = &p->v[i];
            best_len = k;
        }
    }
    return best;
}

int az_llm_prices_lookup(const az_llm_prices *p, const char *model, double *in_per_m,
                         double *out_per_m)
{
    if (!p || !model || !*model) return 0;
    const price *hit = find(p, model);
    const char *slash = strrchr(model, '/');
    if (!hit && slash && slash[1]) hit = find(p, slash + 1);
    if (!hit) return 0;
    *in_per_m = hit->in_per_m;
    *out_per_m = hit->out_per_m;
    return 1;
}

double az_llm_prices_cost(const az_llm_prices *p, const char *model, int64_t prompt_tokens,
                          int64_t completion_tokens)
{
    double in, out;
    if (!az_llm_prices_lookup(p, model, &in, &out)) return 0;
    return ((double)prompt_tokens * in + (double)completion_tokens * out) / 1e6;
}
