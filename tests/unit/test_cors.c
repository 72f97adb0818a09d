/* CUnit suite for server/gateway/cors: parsing the AGENTZ_CORS_ORIGINS allow-list (comma lists,
 * spaces, "*", empty = none, entries that are not origins refused with their name), matching an
 * Origin header canonically (ASCII case of scheme and host, default ports, IPv6 literals, the
 * length bound), the gateway's own origin (az_cors_same_origin) and preflight header checks
 * (az_cors_headers_allowed). */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cors.h"

/* ---- helpers ---- */

static az_cors *load(const char *list)
{
    char msg[AZ_MSG_MAX] = "";
    az_cors *c = (az_cors *)1;
    az_err err = az_cors_new(list, "AGENTZ_CORS_ORIGINS", &c, msg);
    if (err) fprintf(stderr, "\n  az_cors_new(%s): %s\n", list ? list : "NULL", msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(c);
    return err ? NULL : c;
}

static int allowed(const az_cors *c, const char *origin)
{
    return az_cors_allowed(c, origin, strlen(origin));
}

/* Expects list to be refused, with msg naming origin_name and bad. */
static void check_refused(const char *list, const char *origin_name, const char *bad)
{
    char msg[AZ_MSG_MAX] = "";
    az_cors *c = (az_cors *)1;
    CU_ASSERT_EQUAL(az_cors_new(list, origin_name, &c, msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NULL(c);
    if (!strstr(msg, bad) || !strstr(msg, origin_name))
        fprintf(stderr, "\n  list %s: msg \"%s\" should name %s and \"%s\"\n", list, msg,
                origin_name, bad);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, bad));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, origin_name));
    if (c != (az_cors *)1) az_cors_free(c);
}

static int same(const char *origin, const char *host, int tls)
{
    return az_cors_same_origin(origin, strlen(origin), host, strlen(host), tls);
}

static int hdrs(const char *requested, char *bad, size_t bad_size)
{
    return az_cors_headers_allowed(requested, strlen(requested), bad, bad_size);
}

/* ---- parsing ---- */

static void test_list_parsing(void)
{
    az_cors *c = load("https://app.example.com,http://localhost:5173");
    CU_ASSERT_EQUAL(allowed(c, "https://app.example.com"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://localhost:5173"), 1);
    CU_ASSERT_EQUAL(allowed(c, "https://other.example.com"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://localhost:5174"), 0);
    az_cors_free(c);

    /* spaces and tabs around entries are not part of them */
    c = load("  https://a.example.com ,\thttp://b.example.com:8080\t,   http://c.example.com  ");
    CU_ASSERT_EQUAL(allowed(c, "https://a.example.com"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://b.example.com:8080"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://c.example.com"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://b.example.com"), 0);
    CU_ASSERT_EQUAL(allowed(c, "https://c.example.com"), 0);
    az_cors_free(c);

    /* one entry */
    c = load("http://127.0.0.1:3000");
    CU_ASSERT_EQUAL(allowed(c, "http://127.0.0.1:3000"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://127.0.0.1:3001"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://127.0.0.2:3000"), 0);
    az_cors_free(c);
}

static void test_any_and_none(void)
{
    az_cors *c = load("*");
    CU_ASSERT_EQUAL(allowed(c, "https://anything.example.org"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://localhost:1234"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://[::1]:5173"), 1);
    CU_ASSERT_EQUAL(az_cors_allowed(c, "", 0), 0); /* no Origin at all is not an origin */
    az_cors_free(c);

    c = load(" * ");
    CU_ASSERT_EQUAL(allowed(c, "https://x.example"), 1);
    az_cors_free(c);

    /* "*" next to explicit origins still allows any */
    c = load("https://a.example.com, *");
    CU_ASSERT_EQUAL(allowed(c, "https://a.example.com"), 1);
    CU_ASSERT_EQUAL(allowed(c, "https://zzz.example.com"), 1);
    az_cors_free(c);

    /* NULL and "" allow nothing */
    c = load(NULL);
    CU_ASSERT_EQUAL(allowed(c, "https://app.example.com"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://localhost"), 0);
    az_cors_free(c);
    c = load("");
    CU_ASSERT_EQUAL(allowed(c, "https://app.example.com"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://localhost:5173"), 0);
    az_cors_free(c);
}

static void test_invalid_entries(void)
{
    check_refused("app.example.com", "AGENTZ_CORS_ORIGINS", "app.example.com");
    check_refused("https://a/path", "AGENTZ_CORS_ORIGINS", "https://a/path");
    check_refused("https://user@a", "AGENTZ_CORS_ORIGINS", "https://user@a");
    check_refused("https://a.example.com/", "--cors-origins", "https://a.example.com/");
    check_refused("https://a?x=1", "--cors-origins", "https://a?x=1");
    check_refused("https://a#frag", "--cors-origins", "https://a#frag");
    check_refused("://a.example.com", "--cors-origins", "://a.example.com");
    check_refused("https://", "--cors-origins", "https://");
    /* a good entry before a bad one does not save the list, and the bad one is named */
    check_refused("https://ok.example.com, localhost:5173, http://also.ok", "--cors-origins",
                  "localhost:5173");
    check_refused("https://ok.example.com,https://bad/x", "AGENTZ_CORS_ORIGINS", "https://bad/x");
}

/* ---- matching ---- */

static void test_canonical_matching(void)
{
    az_cors *c = load("https://App.Example.COM, HTTP://LocalHost:5173");
    /* ASCII case of scheme and host does not matter, on either side */
    CU_ASSERT_EQUAL(allowed(c, "https://app.example.com"), 1);
    CU_ASSERT_EQUAL(allowed(c, "HTTPS://APP.EXAMPLE.COM"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://localhost:5173"), 1);
    CU_ASSERT_EQUAL(allowed(c, "Http://LOCALHOST:5173"), 1);
    /* the scheme is significant */
    CU_ASSERT_EQUAL(allowed(c, "http://app.example.com"), 0);
    CU_ASSERT_EQUAL(allowed(c, "https://localhost:5173"), 0);
    /* a path, userinfo or a suffix makes it a different (or no) origin */
    CU_ASSERT_EQUAL(allowed(c, "https://app.example.com/"), 0);
    CU_ASSERT_EQUAL(allowed(c, "https://app.example.com.evil.net"), 0);
    CU_ASSERT_EQUAL(allowed(c, "https://evil.app.example.com"), 0);
    CU_ASSERT_EQUAL(allowed(c, "https://user@app.example.com"), 0);
    CU_ASSERT_EQUAL(allowed(c, "null"), 0);
    CU_ASSERT_EQUAL(allowed(c, "app.example.com"), 0);
    CU_ASSERT_EQUAL(az_cors_allowed(c, "", 0), 0);
    az_cors_free(c);
}

static void test_default_ports(void)
{
    /* default ports are dropped on both sides */
    az_cors *c = load("https://a.example.com:443, http://b.example.com, http://c.example.com:80");
    CU_ASSERT_EQUAL(allowed(c, "https://a.example.com"), 1);
    CU_ASSERT_EQUAL(allowed(c, "https://a.example.com:443"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://b.example.com:80"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://b.example.com"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://c.example.com"), 1);
    CU_ASSERT_EQUAL(allowed(c, "HTTP://C.EXAMPLE.COM:80"), 1);
    /* a port is default only for its own scheme */
    CU_ASSERT_EQUAL(allowed(c, "https://a.example.com:80"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://b.example.com:443"), 0);
    /* other ports are significant */
    CU_ASSERT_EQUAL(allowed(c, "https://a.example.com:8443"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://b.example.com:8080"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://b.example.com:800"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://b.example.com:8"), 0);
    az_cors_free(c);

    /* "https://x:80" is its own origin, distinct from "https://x" */
    c = load("https://x.example.com:80");
    CU_ASSERT_EQUAL(allowed(c, "https://x.example.com:80"), 1);
    CU_ASSERT_EQUAL(allowed(c, "https://x.example.com"), 0);
    az_cors_free(c);
}

static void test_ipv6(void)
{
    az_cors *c = load("http://[::1]:5173, https://[2001:db8::1]");
    CU_ASSERT_EQUAL(allowed(c, "http://[::1]:5173"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://[::1]"), 0);
    CU_ASSERT_EQUAL(allowed(c, "http://[::1]:5174"), 0);
    CU_ASSERT_EQUAL(allowed(c, "https://[::1]:5173"), 0);
    CU_ASSERT_EQUAL(allowed(c, "https://[2001:db8::1]"), 1);
    CU_ASSERT_EQUAL(allowed(c, "https://[2001:db8::1]:443"), 1);
    CU_ASSERT_EQUAL(allowed(c, "https://[2001:DB8::1]"), 1);
    CU_ASSERT_EQUAL(allowed(c, "https://[2001:db8::2]"), 0);
    az_cors_free(c);

    /* the colons inside the brackets are not a port: [::80] keeps its "80" */
    c = load("http://[::80]");
    CU_ASSERT_EQUAL(allowed(c, "http://[::80]"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://[::80]:80"), 1);
    CU_ASSERT_EQUAL(allowed(c, "http://[::]"), 0);
    az_cors_free(c);
}

static void test_length_bound(void)
{
    /* only len bytes of the header count */
    az_cors *c = load("https://a.example.com");
    const char *hdr = "https://a.example.com.evil.net";
    CU_ASSERT_EQUAL(az_cors_allowed(c, hdr, strlen("https://a.example.com")), 1);
    CU_ASSERT_EQUAL(az_cors_allowed(c, hdr, strlen(hdr)), 0);
    CU_ASSERT_EQUAL(az_cors_allowed(c, hdr, 10), 0);
    /* a very long Origin is refused, not overflowed */
    size_t n = 4096;
    char *big = malloc(n + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memcpy(big, "https://", 8);
    memset(big + 8, 'a', n - 8);
    big[n] = '\0';
    CU_ASSERT_EQUAL(az_cors_allowed(c, big, n), 0);
    az_cors_free(c);
    free(big);
}

/* ---- the gateway's own origin ---- */

static void test_same_origin(void)
{
    /* scheme from tls */
    CU_ASSERT_EQUAL(same("http://localhost:8080", "localhost:8080", 0), 1);
    CU_ASSERT_EQUAL(same("https://localhost:8080", "localhost:8080", 0), 0);
    CU_ASSERT_EQUAL(same("https://localhost:8080", "localhost:8080", 1), 1);
    CU_ASSERT_EQUAL(same("http://localhost:8080", "localhost:8080", 1), 0);
    /* Host with and without its default port */
    CU_ASSERT_EQUAL(same("https://gw.example.com", "gw.example.com", 1), 1);
    CU_ASSERT_EQUAL(same("https://gw.example.com", "gw.example.com:443", 1), 1);
    CU_ASSERT_EQUAL(same("https://gw.example.com:443", "gw.example.com", 1), 1);
    CU_ASSERT_EQUAL(same("http://gw.example.com", "gw.example.com:80", 0), 1);
    CU_ASSERT_EQUAL(same("http://gw.example.com:80", "gw.example.com", 0), 1);
    /* a non-default port must agree */
    CU_ASSERT_EQUAL(same("http://gw.example.com", "gw.example.com:8080", 0), 0);
    CU_ASSERT_EQUAL(same("http://gw.example.com:8080", "gw.example.com", 0), 0);
    CU_ASSERT_EQUAL(same("http://gw.example.com:8080", "gw.example.com:8081", 0), 0);
    CU_ASSERT_EQUAL(same("https://gw.example.com", "gw.example.com:80", 1), 0);
    /* case, IPv6 */
    CU_ASSERT_EQUAL(same("HTTP://GW.Example.com:8080", "gw.EXAMPLE.com:8080", 0), 1);
    CU_ASSERT_EQUAL(same("http://[::1]:8080", "[::1]:8080", 0), 1);
    CU_ASSERT_EQUAL(same("http://[::1]:8080", "[::1]:8081", 0), 0);
    /* other hosts, missing values, junk */
    CU_ASSERT_EQUAL(same("http://other.example.com:8080", "gw.example.com:8080", 0), 0);
    CU_ASSERT_EQUAL(same("", "gw.example.com", 0), 0);
    CU_ASSERT_EQUAL(same("http://gw.example.com", "", 0), 0);
    CU_ASSERT_EQUAL(same("null", "gw.example.com", 0), 0);
    CU_ASSERT_EQUAL(same("http://gw.example.com/x", "gw.example.com", 0), 0);
    CU_ASSERT_EQUAL(same("http://gw.example.com", "gw.example.com/x", 0), 0);
    CU_ASSERT_EQUAL(same("http://evil@gw.example.com", "gw.example.com", 0), 0);
    /* lengths bound both values */
    const char *o = "http://gw.example.com:8080junk";
    const char *h = "gw.example.com:8080junk";
    CU_ASSERT_EQUAL(az_cors_same_origin(o, strlen("http://gw.example.com:8080"), h,
                                        strlen("gw.example.com:8080"), 0),
                    1);
    CU_ASSERT_EQUAL(az_cors_same_origin(o, strlen(o), h, strlen("gw.example.com:8080"), 0), 0);
}

/* ---- preflight headers ---- */

static void test_headers_allowed_each(void)
{
    /* every listed name is allowed, in lower and upper case */
    const char *list = AZ_CORS_ALLOW_HEADERS;
    int names = 0;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        char name[64], upper[64], bad[64];
        CU_ASSERT_FATAL(n > 0 && n < sizeof name);
        memcpy(name, p, n);
        name[n] = '\0';
        for (size_t i = 0; i <= n; i++)
            upper[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
        strcpy(bad, "untouched");
        CU_ASSERT_EQUAL(hdrs(name, bad, sizeof bad), 1);
        CU_ASSERT_EQUAL(hdrs(upper, bad, sizeof bad), 1);
        names++;
        p += n;
        while (*p == ',' || *p == ' ') p++;
    }
    CU_ASSERT(names >= 10); /* the loop really walked the list */
    /* the whole list, as a browser would send it */
    char bad[64] = "";
    CU_ASSERT_EQUAL(hdrs(AZ_CORS_ALLOW_HEADERS, bad, sizeof bad), 1);
}

static void test_headers_allowed_lists(void)
{
    char bad[64];
    CU_ASSERT_EQUAL(hdrs("content-type", bad, sizeof bad), 1);
    CU_ASSERT_EQUAL(hdrs("Content-Type,Authorization", bad, sizeof bad), 1);
    CU_ASSERT_EQUAL(hdrs("  x-api-key ,\tX-Request-Id  , last-event-id", bad, sizeof bad), 1);
    CU_ASSERT_EQUAL(hdrs("tracestate,traceparent", bad, sizeof bad), 1);
    CU_ASSERT_EQUAL(hdrs("", bad, sizeof bad), 1);
    CU_ASSERT_EQUAL(hdrs(" , ,", bad, sizeof bad), 1);

    /* the first refused name is reported */
    strcpy(bad, "");
    CU_ASSERT_EQUAL(hdrs("content-type, x-evil, cookie", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "x-evil");
    CU_ASSERT_EQUAL(hdrs("Cookie", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "Cookie");
    CU_ASSERT_EQUAL(hdrs("authorization,  X-Forwarded-For  ", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "X-Forwarded-For");
    /* names match whole: no prefixes, no extensions */
    CU_ASSERT_EQUAL(hdrs("content", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "content");
    CU_ASSERT_EQUAL(hdrs("content-type-x", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "content-type-x");
    CU_ASSERT_EQUAL(hdrs("authorizatio", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "authorizatio");
    CU_ASSERT_EQUAL(hdrs("x-request", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "x-request");
    CU_ASSERT_EQUAL(hdrs("grpc", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "grpc");
    /* a space inside a name is not a separator */
    CU_ASSERT_EQUAL(hdrs("content type", bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "content type");

    /* len bounds the list */
    const char *req = "content-type, cookie";
    CU_ASSERT_EQUAL(az_cors_headers_allowed(req, strlen("content-type"), bad, sizeof bad), 1);
    CU_ASSERT_EQUAL(az_cors_headers_allowed(req, strlen(req), bad, sizeof bad), 0);
    CU_ASSERT_STRING_EQUAL(bad, "cookie");
}

static void test_headers_bad_truncated(void)
{
    char bad[16];
    memset(bad, '#', sizeof bad);
    CU_ASSERT_EQUAL(hdrs("x-a-very-long-header-name-indeed", bad, 8), 0);
    CU_ASSERT_STRING_EQUAL(bad, "x-a-ver");
    CU_ASSERT_EQUAL(bad[8], '#'); /* nothing written past bad_size */
    /* exactly fitting */
    memset(bad, '#', sizeof bad);
    CU_ASSERT_EQUAL(hdrs("x-evil1", bad, 8), 0);
    CU_ASSERT_STRING_EQUAL(bad, "x-evil1");
    CU_ASSERT_EQUAL(bad[8], '#');
    /* one byte: just the NUL */
    memset(bad, '#', sizeof bad);
    CU_ASSERT_EQUAL(hdrs("cookie", bad, 1), 0);
    CU_ASSERT_EQUAL(bad[0], '\0');
    CU_ASSERT_EQUAL(bad[1], '#');
}

static void test_free_null(void)
{
    az_cors_free(NULL);
    /* and an allow-list still works after another was freed */
    az_cors *a = load("https://a.example"), *b = load("https://b.example");
    az_cors_free(a);
    CU_ASSERT_EQUAL(allowed(b, "https://b.example"), 1);
    CU_ASSERT_EQUAL(allowed(b, "https://a.example"), 0);
    az_cors_free(b);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("cors", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "allow-list parsing", test_list_parsing);
    CU_add_test(s, "* and empty", test_any_and_none);
    CU_add_test(s, "invalid entries are named", test_invalid_entries);
    CU_add_test(s, "canonical matching", test_canonical_matching);
    CU_add_test(s, "default ports", test_default_ports);
    CU_add_test(s, "IPv6 literals", test_ipv6);
    CU_add_test(s, "origin length bound", test_length_bound);
    CU_add_test(s, "same origin", test_same_origin);
    CU_add_test(s, "every allowed header", test_headers_allowed_each);
    CU_add_test(s, "header lists", test_headers_allowed_lists);
    CU_add_test(s, "refused name truncated", test_headers_bad_truncated);
    CU_add_test(s, "free NULL", test_free_null);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
