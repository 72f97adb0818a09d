/* CUnit suite for server/gateway/httprule: the google.api.http template grammar (what parses,
 * what fails and where), matching (segments, verbs, wildcards, bindings) and specificity order. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/httprule.h"

/* ---- helpers ---- */

static az_httprule *parse(const char *tmpl)
{
    char msg[AZ_MSG_MAX] = "";
    az_httprule *r = NULL;
    az_err err = az_httprule_parse(tmpl, &r, msg);
    if (err) fprintf(stderr, "\nparse %s failed: %s\n", tmpl, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(r);
    return r;
}

static void check_parse_err(const char *tmpl, const char *want)
{
    char msg[AZ_MSG_MAX] = "";
    az_httprule *r = (az_httprule *)1;
    CU_ASSERT_EQUAL(az_httprule_parse(tmpl, &r, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(r);
    if (strcmp(msg, want) != 0) fprintf(stderr, "\ntemplate %s\n  got: %s\n want: %s\n", tmpl, msg, want);
    CU_ASSERT_STRING_EQUAL(msg, want);
}

/* The rule of the last match(): binding field names point into it, so it lives until the next
 * call (or the suite's end). */
static az_httprule *last;

static int drop_last(void)
{
    az_httprule_free(last);
    last = NULL;
    return 0;
}

/* Matches path against tmpl; returns 1/0 and fills b, *nb. */
static int match(const char *tmpl, const char *path, az_httprule_binding *b, size_t *nb)
{
    drop_last();
    last = parse(tmpl);
    az_httprule_binding local[AZ_HTTPRULE_MAX_VARS];
    size_t n = 99;
    int ok = last ? az_httprule_match(last, path, strlen(path), b ? b : local,
                                      AZ_HTTPRULE_MAX_VARS, &n)
                  : 0;
    if (nb) *nb = n;
    return ok;
}

static void check_binding(const az_httprule_binding *b, const char *field, const char *value)
{
    CU_ASSERT_STRING_EQUAL(b->field, field);
    CU_ASSERT_EQUAL(b->len, strlen(value));
    CU_ASSERT_EQUAL(strncmp(b->value, value, b->len), 0);
}

static int cmp(const char *a, const char *b)
{
    az_httprule *x = parse(a), *y = parse(b);
    int c = x && y ? az_httprule_compare(x, y) : 0;
    if (x && y) CU_ASSERT_EQUAL(az_httprule_compare(y, x), -c); /* antisymmetric */
    az_httprule_free(x);
    az_httprule_free(y);
    return c;
}

/* ---- tests ---- */

static void test_parse(void)
{
    az_httprule *r = parse("/v1/agents/{agent.id}");
    if (r) {
        CU_ASSERT_STRING_EQUAL(az_httprule_template(r), "/v1/agents/{agent.id}");
        CU_ASSERT_STRING_EQUAL(az_httprule_verb(r), "");
        CU_ASSERT_EQUAL(az_httprule_nvars(r), 1);
        CU_ASSERT_STRING_EQUAL(az_httprule_var(r, 0), "agent.id");
        CU_ASSERT_PTR_NULL(az_httprule_var(r, 1));
    }
    az_httprule_free(r);

    r = parse("/v1/{parent=shelves/*}/books/{book_id}:publish");
    if (r) {
        CU_ASSERT_STRING_EQUAL(az_httprule_verb(r), "publish");
        CU_ASSERT_EQUAL(az_httprule_nvars(r), 2);
        CU_ASSERT_STRING_EQUAL(az_httprule_var(r, 0), "parent");
        CU_ASSERT_STRING_EQUAL(az_httprule_var(r, 1), "book_id");
    }
    az_httprule_free(r);

    static const char *const ok[] = {
        "/v1", "/v1/*", "/v1/**", "/v1/{name=**}", "/v1/{name=**}:undelete", "/v1/*/x:do",
        "/v1/agents:watch", "/a-b/c.d/e_f/g~h/!$&'()+,;=@", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}",
        "/v1/{x=a/b/*}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        r = parse(ok[i]);
        if (r) CU_ASSERT_STRING_EQUAL(az_httprule_template(r), ok[i]);
        az_httprule_free(r);
    }
    az_httprule_free(NULL);
}

static void test_parse_errors(void)
{
    check_parse_err("/v1/{id", "template /v1/{id: '}' expected at 7");
    check_parse_err("", "template : '/' expected at 0");
    check_parse_err("v1/agents", "template v1/agents: '/' expected at 0");
    check_parse_err("/", "template /: segment expected at 1");
    check_parse_err("/v1//x", "template /v1//x: segment expected at 4");
    check_parse_err("/v1/", "template /v1/: segment expected at 4");
    check_parse_err("/v1/**/x", "template /v1/**/x: '**' must be the last segment at 4");
    check_parse_err("/v1/{a=**}/x", "template /v1/{a=**}/x: '**' must be the last segment at 4");
    check_parse_err("/v1/***", "template /v1/***: '*' or '**' expected at 6");
    check_parse_err("/v1/{a={b}}", "template /v1/{a={b}}: variables cannot nest at 7");
    check_parse_err("/v1/{a}/{a}", "template /v1/{a}/{a}: field bound by two variables at 10");
    check_parse_err("/v1/{1d}", "template /v1/{1d}: field name expected at 5");
    check_parse_err("/v1/{a.}", "template /v1/{a.}: field name expected at 7");
    check_parse_err("/v1/{a=}", "template /v1/{a=}: segment expected at 7");
    check_parse_err("/v1/{}", "template /v1/{}: field name expected at 5");
    check_parse_err("/v1/a:b:c", "template /v1/a:b:c: only one verb allowed at 7");
    check_parse_err("/v1/a:", "template /v1/a:: verb expected at 6");
    check_parse_err("/v1/a:b/c", "template /v1/a:b/c: unexpected character at 7");
    check_parse_err("/v1/%20", "template /v1/%20: segment expected at 4");
    check_parse_err("/v1/a b", "template /v1/a b: unexpected character at 5");
    check_parse_err("/v1/a?x", "template /v1/a?x: unexpected character at 5");
    check_parse_err("/v1/a}", "template /v1/a}: unexpected character at 5");
    check_parse_err("/v1/a*", "template /v1/a*: unexpected character at 5");
    check_parse_err("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}",
                    "template /{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}: too many variables at 33");

    char msg[AZ_MSG_MAX] = "";
    az_httprule *r = (az_httprule *)1;
    CU_ASSERT_EQUAL(az_httprule_parse(NULL, &r, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_STRING_EQUAL(msg, "template missing");
    CU_ASSERT_EQUAL(az_httprule_parse("/v1", NULL, msg), AZ_ERR_INTERNAL);
}

static void test_match_literals_and_vars(void)
{
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 0;
    CU_ASSERT_TRUE(match("/v1/agents", "/v1/agents", b, &nb));
    CU_ASSERT_EQUAL(nb, 0);
    CU_ASSERT_FALSE(match("/v1/agents", "/v1/agent", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/agents", "/v1/agentsx", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/agents", "/v1/agents/", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/agents", "/v1//agents", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/agents", "v1/agents", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/agents", "/V1/agents", NULL, NULL)); /* case matters */

    CU_ASSERT_TRUE(match("/v1/agents/{id}", "/v1/agents/a1", b, &nb));
    CU_ASSERT_EQUAL(nb, 1);
    check_binding(&b[0], "id", "a1");
    CU_ASSERT_FALSE(match("/v1/agents/{id}", "/v1/agents/", NULL, NULL)); /* empty segment */
    CU_ASSERT_FALSE(match("/v1/agents/{id}", "/v1/agents", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/agents/{id}", "/v1/agents/a/b", NULL, NULL));

    CU_ASSERT_TRUE(match("/v1/agents/{agent_id}/memory", "/v1/agents/x y/memory", b, &nb));
    check_binding(&b[0], "agent_id", "x y"); /* decoded bytes are matched as they are */

    CU_ASSERT_TRUE(match("/v1/{a}/x/{b}", "/v1/one/x/two", b, &nb));
    CU_ASSERT_EQUAL(nb, 2);
    check_binding(&b[0], "a", "one");
    check_binding(&b[1], "b", "two");

    CU_ASSERT_TRUE(match("/v1/*/x", "/v1/anything/x", b, &nb));
    CU_ASSERT_EQUAL(nb, 0);
    CU_ASSERT_FALSE(match("/v1/*/x", "/v1//x", NULL, NULL));
}

static void test_match_multi_segment(void)
{
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 0;
    CU_ASSERT_TRUE(match("/v1/{name=shelves/*}/books", "/v1/shelves/s1/books", b, &nb));
    CU_ASSERT_EQUAL(nb, 1);
    check_binding(&b[0], "name", "shelves/s1");
    CU_ASSERT_FALSE(match("/v1/{name=shelves/*}/books", "/v1/racks/s1/books", NULL, NULL));

    CU_ASSERT_TRUE(match("/v1/files/{path=**}", "/v1/files/a/b/c.txt", b, &nb));
    check_binding(&b[0], "path", "a/b/c.txt");
    CU_ASSERT_TRUE(match("/v1/files/{path=**}", "/v1/files/a", b, &nb));
    check_binding(&b[0], "path", "a");
    CU_ASSERT_TRUE(match("/v1/files/{path=**}", "/v1/files", b, &nb)); /* ** may match nothing */
    check_binding(&b[0], "path", "");
    CU_ASSERT_FALSE(match("/v1/files/{path=**}", "/v1/files/", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/files/{path=**}", "/v1/files/a//b", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/files/{path=**}", "/v1/files/a/", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/files/**", "/v1/filesx", NULL, NULL));

    CU_ASSERT_TRUE(match("/v1/{name=**}:undelete", "/v1/a/b:undelete", b, &nb));
    check_binding(&b[0], "name", "a/b");

    /* every binding lies inside the path */
    const char *path = "/v1/x/shelves/s/books/b:go";
    az_httprule *r = parse("/v1/{a}/{b=shelves/*/books/*}:go");
    if (r) {
        CU_ASSERT_TRUE(az_httprule_match(r, path, strlen(path), b, AZ_HTTPRULE_MAX_VARS, &nb));
        CU_ASSERT_EQUAL(nb, 2);
        CU_ASSERT_TRUE(b[0].value == path + 4 && b[0].len == 1);
        CU_ASSERT_TRUE(b[1].value == path + 6 && b[1].len == strlen("shelves/s/books/b"));
        /* too few binding slots: no match rather than a partial one */
        CU_ASSERT_FALSE(az_httprule_match(r, path, strlen(path), b, 1, &nb));
        /* a length shorter than the string: only those bytes count */
        CU_ASSERT_FALSE(az_httprule_match(r, path, strlen(path) - 1, b, AZ_HTTPRULE_MAX_VARS, &nb));
        CU_ASSERT_FALSE(az_httprule_match(r, path, 0, b, AZ_HTTPRULE_MAX_VARS, &nb));
    }
    az_httprule_free(r);
}

static void test_match_verbs(void)
{
    az_httprule_binding b[AZ_HTTPRULE_MAX_VARS];
    size_t nb = 0;
    CU_ASSERT_TRUE(match("/v1/tasks/{id}:cancel", "/v1/tasks/t1:cancel", b, &nb));
    check_binding(&b[0], "id", "t1");
    CU_ASSERT_FALSE(match("/v1/tasks/{id}:cancel", "/v1/tasks/t1", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/tasks/{id}:cancel", "/v1/tasks/t1:retry", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/tasks/{id}:cancel", "/v1/tasks/:cancel", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/tasks/{id}:cancel", "/v1/tasks/t1/:cancel", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/tasks/{id}:cancel", "/v1/tasks/t1:cancelx", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/tasks/{id}:cancel", ":cancel", NULL, NULL));
    /* the verb comes off the last segment only; a colon elsewhere is part of a segment */
    CU_ASSERT_TRUE(match("/v1/tasks/{id}:cancel", "/v1/tasks/a:b:cancel", b, &nb));
    check_binding(&b[0], "id", "a:b");
    CU_ASSERT_FALSE(match("/v1/tasks/{id}/x:cancel", "/v1/tasks/a:cancel/x", NULL, NULL));

    /* a template without a verb never takes one off the path */
    CU_ASSERT_TRUE(match("/v1/tasks/{id}", "/v1/tasks/t1:cancel", b, &nb));
    check_binding(&b[0], "id", "t1:cancel");
    CU_ASSERT_FALSE(match("/v1/agents", "/v1/agents:watch", NULL, NULL));

    CU_ASSERT_TRUE(match("/v1/agents:watch", "/v1/agents:watch", b, &nb));
    CU_ASSERT_EQUAL(nb, 0);
    CU_ASSERT_FALSE(match("/v1/agents:watch", "/v1/agents", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/agents:watch", "/v1/agents/x:watch", NULL, NULL));
    CU_ASSERT_FALSE(match("/v1/agents/{id}", "/v1/agents:watch", NULL, NULL));
}

static void test_compare(void)
{
    /* more literal segments first */
    CU_ASSERT_TRUE(cmp("/v1/agents/{id}/memory", "/v1/agents/{id}") < 0);
    CU_ASSERT_TRUE(cmp("/v1/workflows/{workflow_id}/runs", "/v1/runs") < 0);
    /* then fewer wildcards */
    CU_ASSERT_TRUE(cmp("/v1/agents/{id}", "/v1/agents/{id}/{x}") < 0);
    /* then a verb before none */
    CU_ASSERT_TRUE(cmp("/v1/tasks/{id}:cancel", "/v1/tasks/{id}") < 0);
    /* then a literal before "*" before "**" where they first differ */
    CU_ASSERT_TRUE(cmp("/a/b/{y}", "/a/{x}/c") < 0);
    CU_ASSERT_TRUE(cmp("/a/{x}", "/a/{x=**}") < 0);
    /* then the text; 0 only for the same template */
    CU_ASSERT_TRUE(cmp("/v1/{a}", "/v1/{b}") < 0);
    CU_ASSERT_EQUAL(cmp("/v1/{a}", "/v1/{a}"), 0);
    CU_ASSERT_TRUE(cmp("/v1/{a}:x", "/v1/{a}:y") < 0);
}

static void test_same_paths(void)
{
    static const struct {
        const char *a, *b;
        int same;
    } cases[] = {
        {"/v1/{id}", "/v1/{name}", 1},
        {"/v1/{id}", "/v1/*", 1},
        {"/v1/{id=**}", "/v1/**", 1},
        {"/v1/{id}", "/v1/{id=**}", 0},
        {"/v1/{id}:a", "/v1/{id}:b", 0},
        {"/v1/{id}:a", "/v1/{id}", 0},
        {"/v1/x", "/v1/y", 0},
        {"/v1/x", "/v1/x/y", 0},
        {"/v1/{p=a/*}", "/v1/a/{q}", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        az_httprule *a = parse(cases[i].a), *b = parse(cases[i].b);
        if (a && b) {
            CU_ASSERT_EQUAL(az_httprule_same_paths(a, b), cases[i].same);
            CU_ASSERT_EQUAL(az_httprule_same_paths(b, a), cases[i].same);
        }
        az_httprule_free(a);
        az_httprule_free(b);
    }
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("httprule", NULL, drop_last);
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"parse", test_parse},
        {"parse errors", test_parse_errors},
        {"match literals and variables", test_match_literals_and_vars},
        {"match multi-segment variables", test_match_multi_segment},
        {"match verbs", test_match_verbs},
        {"compare", test_compare},
        {"same paths", test_same_paths},
    };
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        if (!CU_add_test(s, tests[i].name, tests[i].fn)) s = NULL;
    if (!s) {
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
