/* CUnit suite for server/store/pgarray: elements quoted and escaped so that any text is one
 * element, NULL as SQL NULL, the empty array, growth past the first buffer, closing the
 * literal in the middle without losing what follows, and label selectors as pairs. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "store/pgarray.h"

static void test_empty(void)
{
    az_pgarray a = {0};
    CU_ASSERT_STRING_EQUAL(az_pgarray_text(&a), "{}");
    az_pgarray_free(&a);
    az_pgarray_free(NULL);
}

static void test_quoting(void)
{
    az_pgarray a = {0};
    az_pgarray_add(&a, "plain");
    az_pgarray_add(&a, NULL);
    az_pgarray_add(&a, "a\"b\\c");
    az_pgarray_add(&a, "{,}");
    az_pgarray_add(&a, "NULL");
    az_pgarray_add(&a, "");
    CU_ASSERT_STRING_EQUAL(az_pgarray_text(&a), "{\"plain\",NULL,\"a\\\"b\\\\c\",\"{,}\",\"NULL\",\"\"}");
    CU_ASSERT_EQUAL(a.count, 6);
    az_pgarray_free(&a);
    CU_ASSERT_PTR_NULL(a.s);
    CU_ASSERT_EQUAL(a.count, 0);
}

static void test_close_then_more(void)
{
    az_pgarray a = {0};
    az_pgarray_add(&a, "1");
    CU_ASSERT_STRING_EQUAL(az_pgarray_text(&a), "{\"1\"}");
    az_pgarray_add(&a, "2");
    CU_ASSERT_STRING_EQUAL(az_pgarray_text(&a), "{\"1\",\"2\"}");
    az_pgarray_free(&a);
}

static void test_growth(void)
{
    enum { N = 5000 };
    az_pgarray a = {0};
    char v[16];
    for (int i = 0; i < N; i++) {
        snprintf(v, sizeof v, "%d", i);
        az_pgarray_add(&a, v);
    }
    const char *t = az_pgarray_text(&a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(strncmp(t, "{\"0\",\"1\",", 9), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(t, ",\"4999\"}"));
    size_t commas = 0;
    for (const char *p = t; *p; p++) commas += *p == ',';
    CU_ASSERT_EQUAL(commas, N - 1);
    az_pgarray_free(&a);
}

/* Selector pairs as the *_labels tables store them, quoted for a text[] literal. */
static void test_selector_pairs(void)
{
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    char *p = az_pgarray_label_pairs(a, "{\"team\":\"ml\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(p, "{\"team=ml\"}");
    p = az_pgarray_label_pairs(a, "{\"a\":\"x=y\",\"b\":\"q\\\"uote\\\\back\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(p, "{\"a=x=y\",\"b=q\\\"uote\\\\back\"}");
    CU_ASSERT_PTR_NULL(az_pgarray_label_pairs(a, "[1]"));
    CU_ASSERT_PTR_NULL(az_pgarray_label_pairs(a, "{\"a\":1}"));
    CU_ASSERT_PTR_NULL(az_pgarray_label_pairs(a, NULL));
    az_arena_free(a);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("pgarray", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "empty", test_empty);
    CU_add_test(s, "quoting and NULL", test_quoting);
    CU_add_test(s, "closed, then more", test_close_then_more);
    CU_add_test(s, "5000 elements", test_growth);
    CU_add_test(s, "label selector pairs", test_selector_pairs);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
