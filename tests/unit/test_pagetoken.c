/* CUnit suite for server/core/pagetoken: base64url round trips, the length limits, what decode
 * refuses, and the filter hash every List method binds its tokens with. */
#include <CUnit/Basic.h>
#include <string.h>

#include "core/pagetoken.h"

static char msg[AZ_MSG_MAX];

static void test_round_trip(void)
{
    az_arena *a = az_arena_new(0);
    char raw[AZ_PAGETOKEN_RAW_MAX + 1];
    const char *texts[] = {"w1|abc|2026-01-01 00:00:00.123456+00|x", "a", "ab", "abc", "t1|b|2",
                           "\xff\xfe?>"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        char *tok = az_pagetoken_encode(a, texts[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
        /* URL-safe: no '+', '/' or padding, so the REST mapping needs no escaping. */
        CU_ASSERT_PTR_NULL(strpbrk(tok, "+/="));
        CU_ASSERT_EQUAL(strlen(tok), (4 * strlen(texts[i]) + 2) / 3);
        CU_ASSERT_EQUAL(az_pagetoken_decode(tok, raw, msg), AZ_OK);
        CU_ASSERT_STRING_EQUAL(raw, texts[i]);
    }
    /* The wire form is plain base64url: "abc" -> "YWJj", "ab" -> "YWI". */
    CU_ASSERT_STRING_EQUAL(az_pagetoken_encode(a, "abc"), "YWJj");
    CU_ASSERT_STRING_EQUAL(az_pagetoken_encode(a, "ab"), "YWI");
    az_arena_free(a);
}

static void test_limits(void)
{
    az_arena *a = az_arena_new(0);
    char text[AZ_PAGETOKEN_RAW_MAX + 2], raw[AZ_PAGETOKEN_RAW_MAX + 1];
    memset(text, 'x', AZ_PAGETOKEN_RAW_MAX);
    text[AZ_PAGETOKEN_RAW_MAX] = '\0';
    char *tok = az_pagetoken_encode(a, text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
    CU_ASSERT_EQUAL(az_pagetoken_decode(tok, raw, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(raw, text);
    /* One byte more is refused on both sides. */
    text[AZ_PAGETOKEN_RAW_MAX] = 'x';
    text[AZ_PAGETOKEN_RAW_MAX + 1] = '\0';
    CU_ASSERT_PTR_NULL(az_pagetoken_encode(a, text));
    char longtok[4 * AZ_PAGETOKEN_RAW_MAX];
    memset(longtok, 'A', sizeof longtok - 1);
    longtok[sizeof longtok - 1] = '\0';
    strcpy(msg, "(untouched)");
    CU_ASSERT_EQUAL(az_pagetoken_decode(longtok, raw, msg), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "page_token is invalid");
    az_arena_free(a);
}

static void test_refused(void)
{
    char raw[AZ_PAGETOKEN_RAW_MAX + 1];
    const char *bad[] = {"", "!!garbage!!", "YWJj=", "YW+j", "YW/j", "YW J", "A"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        strcpy(msg, "(untouched)");
        CU_ASSERT_EQUAL(az_pagetoken_decode(bad[i], raw, msg), AZ_ERR_INVALID);
        CU_ASSERT_STRING_EQUAL(msg, "page_token is invalid");
    }
    /* "AAAA" is three zero bytes and "YQBi" is "a\0b": a NUL would cut the text short. */
    CU_ASSERT_EQUAL(az_pagetoken_decode("AAAA", raw, msg), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(az_pagetoken_decode("YQBi", raw, msg), AZ_ERR_INVALID);
}

static void test_hash(void)
{
    unsigned long init = AZ_PAGETOKEN_HASH_INIT;
    CU_ASSERT_NOT_EQUAL(az_pagetoken_hash(init, "a"), az_pagetoken_hash(init, "b"));
    CU_ASSERT_EQUAL(az_pagetoken_hash(init, "a"), az_pagetoken_hash(init, "a"));
    CU_ASSERT_EQUAL(az_pagetoken_hash(init, NULL), az_pagetoken_hash(init, ""));
    /* Each field ends with a separator, so moving text between fields changes the hash. */
    CU_ASSERT_NOT_EQUAL(az_pagetoken_hash(az_pagetoken_hash(init, "ab"), "c"),
                        az_pagetoken_hash(az_pagetoken_hash(init, "a"), "bc"));
    CU_ASSERT_NOT_EQUAL(az_pagetoken_hash(az_pagetoken_hash(init, "x"), NULL),
                        az_pagetoken_hash(az_pagetoken_hash(init, NULL), "x"));
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("pagetoken", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "round trip", test_round_trip);
    CU_add_test(s, "length limits", test_limits);
    CU_add_test(s, "refused tokens", test_refused);
    CU_add_test(s, "filter hash", test_hash);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
