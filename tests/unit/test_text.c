/* CUnit suite for server/core/text: az_text_check (required, lengths in code points, control
 * characters, invalid UTF-8), UUID recognition and generation. */
#include <CUnit/Basic.h>
#include <ctype.h>
#include <string.h>

#include "core/text.h"

static char msg[AZ_MSG_MAX];

/* Runs az_text_check and returns its code; msg holds the message. */
static az_err check(const char *field, const char *s, size_t max, int flags)
{
    strcpy(msg, "(untouched)");
    return az_text_check(field, s, max, flags, msg);
}

static void test_required(void)
{
    CU_ASSERT_EQUAL(check("agent.role", "", 10, AZ_TEXT_REQUIRED), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "agent.role is required");
    CU_ASSERT_EQUAL(check("agent.role", NULL, 10, AZ_TEXT_REQUIRED), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "agent.role is required");
    CU_ASSERT_EQUAL(check("agent.name", "", 10, 0), AZ_OK);
    CU_ASSERT_EQUAL(check("agent.name", NULL, 10, 0), AZ_OK);
    CU_ASSERT_EQUAL(check("agent.role", "x", 10, AZ_TEXT_REQUIRED), AZ_OK);
    /* NULL msg is allowed on failure too. */
    CU_ASSERT_EQUAL(az_text_check("f", "", 1, AZ_TEXT_REQUIRED, NULL), AZ_ERR_INVALID);
}

static void test_length_counts_code_points(void)
{
    char s[64] = "";
    for (int i = 0; i < 10; i++) strcat(s, "\xc3\xa9"); /* é, two bytes each */
    CU_ASSERT_EQUAL(strlen(s), 20u);
    CU_ASSERT_EQUAL(check("agent.goal", s, 10, 0), AZ_OK);
    CU_ASSERT_EQUAL(check("agent.goal", s, 9, 0), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "agent.goal: longer than 9 characters");
    /* Three- and four-byte characters count once too. */
    const char *mixed = "a\xe2\x82\xac\xf0\x9f\x98\x80"; /* a € 😀 = 3 code points, 8 bytes */
    CU_ASSERT_EQUAL(check("f", mixed, 3, 0), AZ_OK);
    CU_ASSERT_EQUAL(check("f", mixed, 2, 0), AZ_ERR_INVALID);
    /* ASCII boundary. */
    CU_ASSERT_EQUAL(check("f", "abcd", 4, 0), AZ_OK);
    CU_ASSERT_EQUAL(check("f", "abcde", 4, 0), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "longer than 4"));
}

static void test_control_characters(void)
{
    CU_ASSERT_EQUAL(check("agent.role", "a\nb", 10, 0), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "agent.role: control character 0x0a at byte 1");
    CU_ASSERT_EQUAL(check("agent.role", "tab\there", 20, 0), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(check("agent.role", "cr\r", 20, 0), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(check("agent.role", "del\x7f", 20, 0), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "0x7f"));
    CU_ASSERT_EQUAL(check("agent.role", "\x1b[31m", 20, 0), AZ_ERR_INVALID);
    /* Multiline allows exactly \n \r \t. */
    CU_ASSERT_EQUAL(check("agent.goal", "line1\nline2\r\n\tindented", 100, AZ_TEXT_MULTILINE), AZ_OK);
    CU_ASSERT_EQUAL(check("agent.goal", "a\x01" "b", 100, AZ_TEXT_MULTILINE), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "agent.goal: control character 0x01 at byte 1");
    CU_ASSERT_EQUAL(check("agent.goal", "a\x7f", 100, AZ_TEXT_MULTILINE), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(check("agent.goal", "\x0b", 100, AZ_TEXT_MULTILINE | AZ_TEXT_REQUIRED),
                    AZ_ERR_INVALID);
    /* Printable non-ASCII is not a control character. */
    CU_ASSERT_EQUAL(check("f", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac", 100, 0), AZ_OK);
}

static void expect_bad_utf8(const char *s, const char *what)
{
    az_err e = check("agent.backstory", s, 1000, AZ_TEXT_MULTILINE);
    if (e != AZ_ERR_INVALID) fprintf(stderr, "\n  accepted invalid UTF-8: %s\n", what);
    CU_ASSERT_EQUAL(e, AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "agent.backstory: not valid UTF-8");
    CU_ASSERT_FALSE(az_text_utf8_valid(s, strlen(s)));
}

static void test_invalid_utf8(void)
{
    expect_bad_utf8("\xc0\xaf", "overlong '/' (C0 AF)");
    expect_bad_utf8("\xe0\x80\xaf", "overlong 3-byte");
    expect_bad_utf8("\xf0\x80\x80\xaf", "overlong 4-byte");
    expect_bad_utf8("\xc1\xbf", "overlong C1");
    expect_bad_utf8("\xed\xa0\x80", "surrogate U+D800");
    expect_bad_utf8("\xed\xbf\xbf", "surrogate U+DFFF");
    expect_bad_utf8("\xf4\x90\x80\x80", "U+110000");
    expect_bad_utf8("\xf5\x80\x80\x80", "F5 lead");
    expect_bad_utf8("\xf8\x88\x80\x80\x80", "5-byte form");
    expect_bad_utf8("\xff", "FF");
    expect_bad_utf8("abc\xc3", "truncated 2-byte at end");
    expect_bad_utf8("abc\xe2\x82", "truncated 3-byte at end");
    expect_bad_utf8("abc\xf0\x9f\x98", "truncated 4-byte at end");
    expect_bad_utf8("\xe2\x82x", "3-byte cut by ASCII");
    expect_bad_utf8("\x80", "lone continuation");
    expect_bad_utf8("ab\xbf" "cd", "lone continuation inside");
    expect_bad_utf8("\xc3\xa9\xa9", "extra continuation");
    /* The edges that are valid. */
    const char *ok[] = {"\x7f", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf",
                        "\xee\x80\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        CU_ASSERT_TRUE(az_text_utf8_valid(ok[i], strlen(ok[i])));
        /* U+0080..U+009F are C1 controls but the module only screens ASCII controls. */
    }
    CU_ASSERT_EQUAL(check("f", "\xf4\x8f\xbf\xbf", 1, 0), AZ_OK);
    /* utf8_valid honours len: a NUL-free prefix of a valid string cut mid-sequence is invalid. */
    CU_ASSERT_TRUE(az_text_utf8_valid("\xc3\xa9", 2));
    CU_ASSERT_FALSE(az_text_utf8_valid("\xc3\xa9", 1));
    CU_ASSERT_TRUE(az_text_utf8_valid("", 0));
}

static void test_field_named_exactly(void)
{
    const char *field = "agent.labels[team/x.y]";
    CU_ASSERT_EQUAL(check(field, "", 5, AZ_TEXT_REQUIRED), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(strncmp(msg, field, strlen(field)), 0);
    CU_ASSERT_EQUAL(check(field, "toolong", 5, 0), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(strncmp(msg, field, strlen(field)), 0);
    CU_ASSERT_EQUAL(msg[strlen(field)], ':');
    CU_ASSERT_EQUAL(check(field, "\x80", 5, 0), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(strncmp(msg, field, strlen(field)), 0);
    CU_ASSERT_EQUAL(check(field, "\x02", 5, 0), AZ_ERR_INVALID);
    CU_ASSERT_EQUAL(strncmp(msg, field, strlen(field)), 0);
    /* A % in the field name is printed, not interpreted. */
    CU_ASSERT_EQUAL(check("odd%sfield", "", 5, AZ_TEXT_REQUIRED), AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "odd%sfield is required");
}

static void test_is_uuid(void)
{
    CU_ASSERT_TRUE(az_text_is_uuid("3f0c1a52-8d1e-4c1b-9a0e-1234567890ab"));
    CU_ASSERT_TRUE(az_text_is_uuid("3F0C1A52-8D1E-4C1B-9A0E-1234567890AB"));
    CU_ASSERT_TRUE(az_text_is_uuid("00000000-0000-0000-0000-000000000001"));
    CU_ASSERT_FALSE(az_text_is_uuid(NULL));
    CU_ASSERT_FALSE(az_text_is_uuid(""));
    CU_ASSERT_FALSE(az_text_is_uuid("3f0c1a52-8d1e-4c1b-9a0e-1234567890a"));   /* 35 */
    CU_ASSERT_FALSE(az_text_is_uuid("3f0c1a52-8d1e-4c1b-9a0e-1234567890abc")); /* 37 */
    CU_ASSERT_FALSE(az_text_is_uuid("3f0c1a528d1e4c1b9a0e1234567890ab"));     /* no dashes */
    CU_ASSERT_FALSE(az_text_is_uuid("3f0c1a52-8d1e-4c1b-9a0e_1234567890ab")); /* wrong separator */
    CU_ASSERT_FALSE(az_text_is_uuid("3f0c1a528-d1e-4c1b-9a0e-1234567890ab")); /* dash moved */
    CU_ASSERT_FALSE(az_text_is_uuid("3f0c1a52-8d1e-4c1b-9a0e-1234567890ag")); /* non-hex */
    CU_ASSERT_FALSE(az_text_is_uuid("{f0c1a52-8d1e-4c1b-9a0e-1234567890a}"));
    CU_ASSERT_FALSE(az_text_is_uuid("3f0c1a52-8d1e-4c1b-9a0e-12345678 0ab"));
    CU_ASSERT_FALSE(az_text_is_uuid("------------------------------------"));
}

static int hexval(char c) { return isdigit((unsigned char)c) ? c - '0' : tolower((unsigned char)c) - 'a' + 10; }

static void test_uuid4(void)
{
    enum { N = 200 };
    static char ids[N][37];
    for (int i = 0; i < N; i++) {
        memset(ids[i], 'Z', sizeof ids[i]);
        CU_ASSERT_EQUAL_FATAL(az_text_uuid4(ids[i]), AZ_OK);
        CU_ASSERT_EQUAL(ids[i][36], '\0');
        CU_ASSERT_TRUE(az_text_is_uuid(ids[i]));
        CU_ASSERT_EQUAL(ids[i][14], '4');                 /* version */
        CU_ASSERT_EQUAL(hexval(ids[i][19]) & 0xc, 0x8);   /* variant 10xx */
        for (int k = 0; k < 36; k++) CU_ASSERT_FALSE(isupper((unsigned char)ids[i][k]));
        for (int j = 0; j < i; j++) {
            if (strcmp(ids[i], ids[j]) == 0) CU_FAIL("az_text_uuid4 repeated a value");
        }
    }
    /* Randomness actually reaches the other nibbles (not a constant with the bits set). */
    int varied = 0;
    for (int i = 1; i < N; i++) varied += ids[i][0] != ids[0][0];
    CU_ASSERT(varied > N / 2);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("text_check", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "required", test_required);
    CU_add_test(s, "length counts code points", test_length_counts_code_points);
    CU_add_test(s, "control characters", test_control_characters);
    CU_add_test(s, "invalid utf-8", test_invalid_utf8);
    CU_add_test(s, "field named exactly", test_field_named_exactly);
    CU_pSuite u = CU_add_suite("uuid", NULL, NULL);
    if (!u) return 1;
    CU_add_test(u, "az_text_is_uuid", test_is_uuid);
    CU_add_test(u, "az_text_uuid4", test_uuid4);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
