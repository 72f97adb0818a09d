/* core/pbtime: Timestamp and Duration from microseconds, including before the epoch. */
#include <CUnit/Basic.h>

#include "core/pbtime.h"

static void test_timestamp(void)
{
    az_arena *a = az_arena_new(0);
    Google__Protobuf__Timestamp *t = az_pbtime_timestamp(a, 1700000000123456LL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->seconds, 1700000000);
    CU_ASSERT_EQUAL(t->nanos, 123456000);
    t = az_pbtime_timestamp(a, -1); /* one microsecond before the epoch */
    CU_ASSERT_EQUAL(t->seconds, -1);
    CU_ASSERT_EQUAL(t->nanos, 999999000);
    t = az_pbtime_timestamp(a, -2000000);
    CU_ASSERT_EQUAL(t->seconds, -2);
    CU_ASSERT_EQUAL(t->nanos, 0);
    az_arena_free(a);
}

static void test_duration(void)
{
    az_arena *a = az_arena_new(0);
    Google__Protobuf__Duration *d = az_pbtime_duration(a, 1500000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_EQUAL(d->seconds, 1);
    CU_ASSERT_EQUAL(d->nanos, 500000000);
    d = az_pbtime_duration(a, -1500000); /* same sign in both fields */
    CU_ASSERT_EQUAL(d->seconds, -1);
    CU_ASSERT_EQUAL(d->nanos, -500000000);
    az_arena_free(a);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("pbtime", NULL, NULL);
    CU_add_test(s, "timestamps, before and after the epoch", test_timestamp);
    CU_add_test(s, "durations keep one sign", test_duration);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
