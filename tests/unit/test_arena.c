/* CUnit suite for server/core/arena: alignment, zeroing, oversized blocks, the limit, string
 * helpers, and use as a protobuf-c allocator (ASan proves az_arena_free releases everything). */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "core/arena.h"

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) return 0;
    }
    return 1;
}

static void test_alignment(void)
{
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    /* Odd sizes in a row must not push later allocations off the 16-byte grid. */
    static const size_t sizes[] = {1, 3, 7, 15, 16, 17, 31, 33, 100, 4095, 4097, 1, 20000, 5, 0};
    enum { ROUNDS = 20, PER = sizeof sizes / sizeof *sizes };
    unsigned char *ptrs[ROUNDS * PER];
    for (int round = 0; round < ROUNDS; round++) {
        for (size_t i = 0; i < PER; i++) {
            unsigned char *p = az_arena_alloc(a, sizes[i]);
            CU_ASSERT_PTR_NOT_NULL_FATAL(p);
            CU_ASSERT(aligned16(p));
            /* Tag every byte so an overlap between allocations shows up below. */
            memset(p, (int)((round * PER + i) & 0xff), sizes[i]);
            ptrs[round * PER + i] = p;
        }
    }
    for (size_t k = 0; k < ROUNDS * PER; k++) {
        size_t n = sizes[k % PER];
        for (size_t j = 0; j < n; j++) {
            if (ptrs[k][j] != (unsigned char)(k & 0xff)) {
                CU_FAIL("allocations overlap");
                k = ROUNDS * PER;
                break;
            }
        }
    }
    az_arena_free(a);
}

static void test_zeroed(void)
{
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    for (int i = 0; i < 200; i++) {
        size_t n = (size_t)(i * 37 % 1000) + 1;
        unsigned char *p = az_arena_alloc(a, n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT(all_zero(p, n));
        memset(p, 0xFF, n); /* dirty it: the next allocation must still come back zeroed */
    }
    az_arena_free(a);
}

static void test_distinct(void)
{
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    enum { N = 64 };
    unsigned char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = az_arena_alloc(a, 40);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p[i]);
        memset(p[i], i, 40);
    }
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 40; k++) CU_ASSERT_EQUAL_FATAL(p[i][k], (unsigned char)i);
    }
    az_arena_free(a);
}

static void test_big(void)
{
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    unsigned char *small = az_arena_alloc(a, 100);
    CU_ASSERT_PTR_NOT_NULL_FATAL(small);
    memset(small, 0x11, 100);
    size_t big_n = 200000; /* far more than one 16 KiB chunk */
    unsigned char *big = az_arena_alloc(a, big_n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    CU_ASSERT(aligned16(big));
    CU_ASSERT(all_zero(big, big_n));
    memset(big, 0x22, big_n); /* ASan flags it if the block is smaller than asked */
    /* Allocations after the big one still work and do not overlap it or the small one. */
    unsigned char *after = az_arena_alloc(a, 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(after);
    CU_ASSERT(all_zero(after, 64));
    memset(after, 0x33, 64);
    CU_ASSERT_EQUAL(small[99], 0x11);
    CU_ASSERT_EQUAL(big[0], 0x22);
    CU_ASSERT_EQUAL(big[big_n - 1], 0x22);
    CU_ASSERT(az_arena_used(a) >= 100 + big_n + 64);
    az_arena_free(a);
}

static void test_limit(void)
{
    az_arena *a = az_arena_new(64 * 1024);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NULL(az_arena_alloc(a, 64 * 1024 + 1));
    CU_ASSERT_PTR_NULL(az_arena_alloc(a, SIZE_MAX)); /* no overflow in the rounding */
    CU_ASSERT_PTR_NULL(az_arena_alloc(a, SIZE_MAX - 8));
    /* Fill it until it refuses. */
    size_t got = 0;
    int refused = 0;
    for (int i = 0; i < 1000; i++) {
        void *p = az_arena_alloc(a, 1000);
        if (!p) {
            refused = 1;
            break;
        }
        memset(p, 1, 1000);
        got += 1000;
    }
    CU_ASSERT(refused);
    CU_ASSERT(got <= 64 * 1024);
    CU_ASSERT(got >= 32 * 1024); /* the limit is not wildly conservative either */
    /* Still usable: a small request that fits the current block's remainder succeeds... */
    void *tiny = az_arena_alloc(a, 16);
    CU_ASSERT_PTR_NOT_NULL(tiny);
    /* ...and the string helpers report the limit as NULL, not a crash. */
    char big[40000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CU_ASSERT_PTR_NULL(az_arena_strdup(a, big));
    CU_ASSERT_PTR_NULL(az_arena_printf(a, "%s", big));
    az_arena_free(a);
}

static void test_limit_then_usable(void)
{
    /* A refused oversized request must leave the arena consistent for normal use. */
    az_arena *a = az_arena_new(40000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NULL(az_arena_alloc(a, 50000));
    char *s = az_arena_strdup(a, "still works");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(s, "still works");
    CU_ASSERT(az_arena_used(a) >= 12);
    az_arena_free(a);
}

static void test_strings(void)
{
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const char *src = "hello, arena";
    char *d = az_arena_strdup(a, src);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_STRING_EQUAL(d, src);
    CU_ASSERT(d != src);
    char *e = az_arena_strdup(a, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(e, "");
    char *n = az_arena_strndup(a, src, 5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(n);
    CU_ASSERT_STRING_EQUAL(n, "hello");
    char *z = az_arena_strndup(a, src, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    CU_ASSERT_STRING_EQUAL(z, "");
    /* strndup copies exactly n bytes: embedded NUL included, not read past. */
    char *bin = az_arena_strndup(a, "ab\0cd", 5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
    CU_ASSERT_EQUAL(memcmp(bin, "ab\0cd", 6), 0);
    char *p = az_arena_printf(a, "%s-%d-%05.1f", "x", -12, 3.14159);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(p, "x--12-003.1");
    char *empty = az_arena_printf(a, "%s", "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(empty);
    CU_ASSERT_STRING_EQUAL(empty, "");
    /* A long printf result (several chunks' worth) comes back whole. */
    char *longp = az_arena_printf(a, "%040000d", 7);
    CU_ASSERT_PTR_NOT_NULL_FATAL(longp);
    CU_ASSERT_EQUAL(strlen(longp), 40000u);
    CU_ASSERT_EQUAL(longp[39999], '7');
    /* Earlier strings survive later allocations. */
    CU_ASSERT_STRING_EQUAL(d, src);
    CU_ASSERT_STRING_EQUAL(n, "hello");
    az_arena_free(a);
}

static void test_used_grows(void)
{
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(az_arena_used(a), 0u);
    size_t last = 0;
    for (int i = 1; i <= 100; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(az_arena_alloc(a, (size_t)i * 10));
        size_t u = az_arena_used(a);
        CU_ASSERT(u > last);
        CU_ASSERT(u >= last + (size_t)i * 10);
        last = u;
    }
    az_arena_free(a);
}

static void test_free_null(void)
{
    az_arena_free(NULL);
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    az_arena_free(a); /* empty arena */
    CU_PASS("az_arena_free(NULL) and of an empty arena returned");
}

static void test_protobuf_unpack(void)
{
    /* Build a real Agent with nested messages, repeated fields and a map, pack it with malloc. */
    Agentz__V1__Agent ag = AGENTZ__V1__AGENT__INIT;
    Agentz__V1__LlmConfig llm = AGENTZ__V1__LLM_CONFIG__INIT;
    Google__Protobuf__DoubleValue temp = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
    Agentz__V1__Agent__LabelsEntry l1 = AGENTZ__V1__AGENT__LABELS_ENTRY__INIT;
    Agentz__V1__Agent__LabelsEntry l2 = AGENTZ__V1__AGENT__LABELS_ENTRY__INIT;
    Agentz__V1__Agent__LabelsEntry *labels[] = {&l1, &l2};
    char *tools[] = {"calculator", "http_fetch"};
    char backstory[20000];
    memset(backstory, 'b', sizeof backstory - 1); /* larger than one arena chunk */
    backstory[sizeof backstory - 1] = '\0';
    ag.id = "3f0c1a52-8d1e-4c1b-9a0e-1234567890ab";
    ag.name = "researcher";
    ag.role = "Senior Data Researcher";
    ag.goal = "Find facts\nand report";
    ag.backstory = backstory;
    temp.value = 0.25;
    llm.provider = "openai";
    llm.model = "gpt-4o-mini";
    llm.temperature = &temp;
    llm.max_tokens = 512;
    ag.llm = &llm;
    ag.n_tools = 2;
    ag.tools = tools;
    ag.max_iter = 7;
    ag.memory = 1;
    l1.key = "team";
    l1.value = "research";
    l2.key = "tier";
    l2.value = "gold";
    ag.n_labels = 2;
    ag.labels = labels;
    size_t n = agentz__v1__agent__get_packed_size(&ag);
    CU_ASSERT_FATAL(n > sizeof backstory);
    uint8_t *buf = malloc(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    CU_ASSERT_EQUAL_FATAL(agentz__v1__agent__pack(&ag, buf), n);

    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    size_t before = az_arena_used(a);
    ProtobufCAllocator *pa = az_arena_allocator(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pa);
    Agentz__V1__Agent *out = agentz__v1__agent__unpack(pa, n, buf);
    free(buf); /* the unpacked message must not point into the wire buffer */
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT(az_arena_used(a) > before + sizeof backstory);
    CU_ASSERT_STRING_EQUAL(out->id, ag.id);
    CU_ASSERT_STRING_EQUAL(out->role, "Senior Data Researcher");
    CU_ASSERT_STRING_EQUAL(out->goal, "Find facts\nand report");
    CU_ASSERT_EQUAL(strlen(out->backstory), sizeof backstory - 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out->llm);
    CU_ASSERT_STRING_EQUAL(out->llm->model, "gpt-4o-mini");
    CU_ASSERT_PTR_NOT_NULL_FATAL(out->llm->temperature);
    CU_ASSERT_DOUBLE_EQUAL(out->llm->temperature->value, 0.25, 1e-12);
    CU_ASSERT_EQUAL(out->llm->max_tokens, 512);
    CU_ASSERT_EQUAL_FATAL(out->n_tools, 2u);
    CU_ASSERT_STRING_EQUAL(out->tools[1], "http_fetch");
    CU_ASSERT_EQUAL_FATAL(out->n_labels, 2u);
    CU_ASSERT_STRING_EQUAL(out->labels[0]->key, "team");
    CU_ASSERT_STRING_EQUAL(out->labels[1]->value, "gold");
    CU_ASSERT_EQUAL(out->max_iter, 7);
    CU_ASSERT(out->memory);
    /* Every pointer of the message came from the arena allocator, so repacking works and
     * freeing via the allocator is a harmless no-op; az_arena_free releases it all (ASan
     * reports a leak otherwise). */
    CU_ASSERT_EQUAL(agentz__v1__agent__get_packed_size(out), n);
    agentz__v1__agent__free_unpacked(out, pa);
    az_arena_free(a);
}

static void test_protobuf_unpack_garbage(void)
{
    /* A truncated message fails cleanly; whatever protobuf-c allocated dies with the arena. */
    az_arena *a = az_arena_new(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    static const uint8_t bad[] = {0x12, 0x50, 'a', 'b'}; /* field 2, length 80, only 2 bytes */
    CU_ASSERT_PTR_NULL(agentz__v1__agent__unpack(az_arena_allocator(a), sizeof bad, bad));
    az_arena_free(a);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("arena", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "16-byte alignment", test_alignment);
    CU_add_test(s, "zeroed", test_zeroed);
    CU_add_test(s, "distinct", test_distinct);
    CU_add_test(s, "bigger than a chunk", test_big);
    CU_add_test(s, "limit", test_limit);
    CU_add_test(s, "usable after refusal", test_limit_then_usable);
    CU_add_test(s, "strdup strndup printf", test_strings);
    CU_add_test(s, "used grows", test_used_grows);
    CU_add_test(s, "free NULL", test_free_null);
    CU_add_test(s, "protobuf unpack", test_protobuf_unpack);
    CU_add_test(s, "protobuf unpack garbage", test_protobuf_unpack_garbage);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
