/* CUnit suite for server/core/err: the az_err -> gRPC status table, names, and az_fail formatting. */
#include <CUnit/Basic.h>
#include <string.h>

#include "core/err.h"

/* The documented mapping (err.h comments, docs/api.md); written out independently of err.c. */
static const struct {
    az_err e;
    int grpc;
} expected[] = {
    {AZ_OK, 0},
    {AZ_ERR_INVALID, 3},
    {AZ_ERR_NOT_FOUND, 5},
    {AZ_ERR_EXISTS, 6},
    {AZ_ERR_ABORTED, 10},
    {AZ_ERR_PRECONDITION, 9},
    {AZ_ERR_OUT_OF_RANGE, 11},
    {AZ_ERR_EXHAUSTED, 8},
    {AZ_ERR_UNAUTHENTICATED, 16},
    {AZ_ERR_PERMISSION, 7},
    {AZ_ERR_UNAVAILABLE, 14},
    {AZ_ERR_DEADLINE, 4},
    {AZ_ERR_CANCELLED, 1},
    {AZ_ERR_UNIMPLEMENTED, 12},
    {AZ_ERR_NOMEM, 8},
    {AZ_ERR_IO, 13},
    {AZ_ERR_INTERNAL, 13},
};
#define NEXPECTED (sizeof expected / sizeof *expected)

static void test_every_code_is_listed(void)
{
    /* A new enum value must be added to the table above (and to err.c). */
    CU_ASSERT_EQUAL(NEXPECTED, (size_t)AZ_ERR__COUNT);
    for (size_t i = 0; i < NEXPECTED; i++) CU_ASSERT_EQUAL((int)expected[i].e, (int)i);
}

static void test_grpc_mapping(void)
{
    for (size_t i = 0; i < NEXPECTED; i++) {
        int got = az_err_grpc_status(expected[i].e);
        if (got != expected[i].grpc)
            fprintf(stderr, "\n  %s maps to %d, want %d\n", az_err_name(expected[i].e), got,
                    expected[i].grpc);
        CU_ASSERT_EQUAL(got, expected[i].grpc);
    }
}

static void test_out_of_range(void)
{
    CU_ASSERT_EQUAL(az_err_grpc_status(AZ_ERR__COUNT), 2);
    CU_ASSERT_EQUAL(az_err_grpc_status((az_err)(AZ_ERR__COUNT + 7)), 2);
    CU_ASSERT_EQUAL(az_err_grpc_status((az_err)-1), 2);
    CU_ASSERT_STRING_EQUAL(az_err_name(AZ_ERR__COUNT), "unknown");
    CU_ASSERT_STRING_EQUAL(az_err_name((az_err)-1), "unknown");
    CU_ASSERT_STRING_EQUAL(az_err_name((az_err)1000), "unknown");
}

static void test_names(void)
{
    CU_ASSERT_STRING_EQUAL(az_err_name(AZ_OK), "ok");
    CU_ASSERT_STRING_EQUAL(az_err_name(AZ_ERR_INVALID), "invalid");
    CU_ASSERT_STRING_EQUAL(az_err_name(AZ_ERR_NOT_FOUND), "not_found");
    for (int i = 0; i < AZ_ERR__COUNT; i++) {
        const char *a = az_err_name((az_err)i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        CU_ASSERT(strlen(a) > 0);
        CU_ASSERT(strcmp(a, "unknown") != 0);
        /* Stable identifiers: lowercase letters and underscores only. */
        CU_ASSERT(strspn(a, "abcdefghijklmnopqrstuvwxyz_") == strlen(a));
        for (int j = 0; j < i; j++) {
            if (strcmp(a, az_err_name((az_err)j)) == 0) {
                fprintf(stderr, "\n  codes %d and %d share the name %s\n", j, i, a);
                CU_FAIL("duplicate error name");
            }
        }
    }
}

static void test_fail_formats(void)
{
    char msg[AZ_MSG_MAX];
    memset(msg, 'x', sizeof msg);
    az_err e = az_fail(msg, AZ_ERR_INVALID, "%s is required (%d)", "agent.role", 42);
    CU_ASSERT_EQUAL(e, AZ_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msg, "agent.role is required (42)");
    CU_ASSERT_EQUAL(az_fail(msg, AZ_ERR_NOT_FOUND, "plain"), AZ_ERR_NOT_FOUND);
    CU_ASSERT_STRING_EQUAL(msg, "plain");
    CU_ASSERT_EQUAL(az_fail(msg, AZ_OK, "%s", ""), AZ_OK);
    CU_ASSERT_STRING_EQUAL(msg, "");
}

static void test_fail_truncates(void)
{
    /* A guard region after msg must stay untouched while msg holds a NUL-terminated prefix. */
    struct {
        char msg[AZ_MSG_MAX];
        char guard[64];
    } buf;
    memset(&buf, 'G', sizeof buf);
    char big[AZ_MSG_MAX * 3];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CU_ASSERT_EQUAL(az_fail(buf.msg, AZ_ERR_INTERNAL, "start:%s", big), AZ_ERR_INTERNAL);
    CU_ASSERT_EQUAL(strlen(buf.msg), (size_t)AZ_MSG_MAX - 1);
    CU_ASSERT_EQUAL(strncmp(buf.msg, "start:aaa", 9), 0);
    for (size_t i = 0; i < sizeof buf.guard; i++) CU_ASSERT_EQUAL_FATAL(buf.guard[i], 'G');
}

static void test_fail_null_msg(void)
{
    CU_ASSERT_EQUAL(az_fail(NULL, AZ_ERR_IO, "cannot open %s", "/nowhere"), AZ_ERR_IO);
    CU_ASSERT_EQUAL(az_fail(NULL, AZ_ERR_DEADLINE, "x"), AZ_ERR_DEADLINE);
}

static az_err vwrap(char *msg, az_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    az_err e = az_vfail(msg, code, fmt, ap);
    va_end(ap);
    return e;
}

static void test_vfail(void)
{
    char msg[AZ_MSG_MAX] = "";
    CU_ASSERT_EQUAL(vwrap(msg, AZ_ERR_EXISTS, "%s=%d", "k", 7), AZ_ERR_EXISTS);
    CU_ASSERT_STRING_EQUAL(msg, "k=7");
    CU_ASSERT_EQUAL(vwrap(NULL, AZ_ERR_ABORTED, "%s", "ignored"), AZ_ERR_ABORTED);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("err", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "every code is listed", test_every_code_is_listed);
    CU_add_test(s, "grpc mapping", test_grpc_mapping);
    CU_add_test(s, "out of range", test_out_of_range);
    CU_add_test(s, "names unique", test_names);
    CU_add_test(s, "az_fail formats", test_fail_formats);
    CU_add_test(s, "az_fail truncates", test_fail_truncates);
    CU_add_test(s, "az_fail NULL msg", test_fail_null_msg);
    CU_add_test(s, "az_vfail", test_vfail);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
