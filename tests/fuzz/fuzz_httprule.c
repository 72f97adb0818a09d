/* Fuzzes the google.api.http template parser and matcher (server/gateway/httprule) and the
 * router over the real route table (server/gateway/routes). Input: a template, a newline, a
 * request path (any bytes: the HTTP layer hands paths over decoded). The template is parsed, the
 * path is parsed as a template too and matched against the first one and against every route.
 * Invariants: a failed parse leaves nothing and says why; bindings lie inside the path and
 * number the template's variables; a template without wildcards matches exactly the path equal
 * to it; the router's answer agrees with matching every route by hand. */
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "descriptor_set.h"
#include "fuzz.h"
#include "gateway/httprule.h"
#include "gateway/routes.h"

static const az_routes *routes(void)
{
    static az_routes *t;
    if (!t) {
        static const ProtobufCServiceDescriptor *const services[] = {
            &agentz__v1__agent_service__descriptor,
            &agentz__v1__task_service__descriptor,
            &agentz__v1__workflow_service__descriptor,
            &agentz__v1__system_service__descriptor,
        };
        char msg[AZ_MSG_MAX];
        az_err err = az_routes_new(az_descriptor_set, az_descriptor_set_len, services,
                                   sizeof services / sizeof services[0], &t, msg);
        AZ_FUZZ_CHECK(err == AZ_OK, "the real route table does not build: %s", msg);
    }
    return t;
}

static void check_bindings(const az_httprule *r, const char *path, size_t len,
                           const az_httprule_binding *b, size_t nb)
{
    AZ_FUZZ_CHECK(nb == az_httprule_nvars(r), "%zu bindings for %zu variables of %s", nb,
                  az_httprule_nvars(r), az_httprule_template(r));
    for (size_t i = 0; i < nb; i++) {
        AZ_FUZZ_CHECK(b[i].value >= path && b[i].len <= len &&
                          b[i].value + b[i].len <= path + len,
                      "binding %zu of %s lies outside the path", i, az_httprule_template(r));
        AZ_FUZZ_CHECK(strcmp(b[i].field, az_httprule_var(r, i)) == 0, "binding %zu is %s, not %s",
                      i, b[i].field, az_httprule_var(r, i));
        /* a variable matches whole segments: never a '/' at either end */
        AZ_FUZZ_CHECK(b[i].len == 0 || (b[i].value[0] != '/' && b[i].value[b[i].len - 1] != '/'),
                      "binding %zu of %s is not whole segments", i, az_httprule_template(r));
    }
}

/* Parses text (n bytes, NUL-free or not) as a template; NULL when it does not parse. */
static az_httprule *parse(const char *text, size_t n)
{
    char *copy = malloc(n + 1);
    if (!copy) return NULL;
    memcpy(copy, text, n);
    copy[n] = '\0';
    char msg[AZ_MSG_MAX] = "";
    az_httprule *r = (az_httprule *)1;
    az_err err = az_httprule_parse(copy, &r, msg);
    if (err) {
        AZ_FUZZ_CHECK(r == NULL, "failed parse left a rule");
        AZ_FUZZ_CHECK(err == AZ_ERR_INVALID || err == AZ_ERR_NOMEM, "parse error %d", err);
        AZ_FUZZ_CHECK(msg[0] != '\0', "failed parse says nothing");
        free(copy);
        return NULL;
    }
    AZ_FUZZ_CHECK(strcmp(az_httprule_template(r), copy) == 0, "template text changed");
    AZ_FUZZ_CHECK(az_httprule_nvars(r) <= AZ_HTTPRULE_MAX_VARS, "too many variables");
    AZ_FUZZ_CHECK(az_httprule_compare(r, r) == 0, "a rule is not equal to itself");
    AZ_FUZZ_CHECK(az_httprule_same_paths(r, r) == 1, "a rule does not match its own paths");
    free(copy);
    return r;
}

static void match_one(const az_httprule *r, const char *path, size_t len)
{
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 0;
    int m = az_httprule_match(r, path, len, b, AZ_HTTPRULE_MAX_VARS, &nb);
    if (m) check_bindings(r, path, len, b, nb);
    const char *t = az_httprule_template(r);
    if (az_httprule_nvars(r) == 0 && !strchr(t, '*')) {
        int equal = strlen(t) == len && memcmp(t, path, len) == 0;
        AZ_FUZZ_CHECK(m == equal, "literal template %s: match %d, string equality %d", t, m, equal);
    }
}

static void route(const char *path, size_t len)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE"};
    const az_routes *t = routes();
    for (size_t k = 0; k < sizeof methods / sizeof methods[0]; k++) {
        const char *want = strcmp(methods[k], "HEAD") == 0 ? "GET" : methods[k];
        const az_route *r = NULL;
        az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
        size_t nb = 0;
        char allow[64];
        az_route_result res = az_routes_match(t, methods[k], path, len, &r, b,
                                              AZ_HTTPRULE_MAX_VARS, &nb, allow, sizeof allow);
        /* the first route of the method whose template matches, else who matches at all */
        const az_route *first = NULL;
        int any = 0;
        for (size_t i = 0; i < az_routes_count(t); i++) {
            const az_route *x = az_routes_at(t, i);
            az_httprule_binding xb[AZ_HTTPRULE_MAX_VARS];
            size_t xn;
            if (!az_httprule_match(x->rule, path, len, xb, AZ_HTTPRULE_MAX_VARS, &xn)) continue;
            any = 1;
            if (!first && strcmp(x->http_method, want) == 0) first = x;
        }
        if (res == AZ_ROUTE_FOUND) {
            AZ_FUZZ_CHECK(r == first, "%s: routed to %s, the first match is %s", methods[k],
                          az_httprule_template(r->rule),
                          first ? az_httprule_template(first->rule) : "none");
            check_bindings(r->rule, path, len, b, nb);
        } else if (res == AZ_ROUTE_BAD_METHOD) {
            AZ_FUZZ_CHECK(!first && any && allow[0], "%s: 405 (Allow \"%s\") but first %p any %d",
                          methods[k], allow, (const void *)first, any);
        } else {
            AZ_FUZZ_CHECK(res == AZ_ROUTE_NO_PATH && !any, "%s: 404 but a template matches",
                          methods[k]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nl = memchr(text, '\n', size);
    size_t tlen = nl ? (size_t)(nl - text) : size;
    const char *path = nl ? nl + 1 : text;
    size_t plen = nl ? size - tlen - 1 : size;

    az_httprule *r = parse(text, tlen), *p = parse(path, plen);
    if (r) match_one(r, path, plen);
    if (p) match_one(p, path, plen); /* a template that is also its own path */
    if (r && p) {
        int c = az_httprule_compare(r, p);
        AZ_FUZZ_CHECK(c == -az_httprule_compare(p, r), "compare is not antisymmetric");
        AZ_FUZZ_CHECK(c != 0 || strcmp(az_httprule_template(r), az_httprule_template(p)) == 0,
                      "compare 0 for different templates");
        AZ_FUZZ_CHECK(az_httprule_same_paths(r, p) == az_httprule_same_paths(p, r),
                      "same_paths is not symmetric");
    }
    az_httprule_free(r);
    az_httprule_free(p);
    route(path, plen);
    return 0;
}
