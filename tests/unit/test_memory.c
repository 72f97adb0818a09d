/* CUnit suite for server/agent/memory against a real PostgreSQL (the embedded one in a temp dir)
 * and, for embeddings, a real HTTP server speaking the OpenAI /v1/embeddings format: summaries,
 * the per-agent cap, keyword and similarity recall, listing with a query and pages, clearing,
 * and workspace isolation. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/memory.h"
#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "store/migrate.h"
#include "store/pgpool.h"
#include "tools/netguard.h"

#include "llm_fake.c" /* the scripted HTTP server: not globbed by CMake as a suite */

#define WS_B "0b0b0b0b-0000-4000-8000-00000000000b"

static char dir[64];
static az_embed *embed;
static az_pg *pg;
static az_arena *arena;
static az_netguard *loopback;
static char msg[AZ_MSG_MAX];
static const az_ctx ctx = {.workspace_id = AZ_DEFAULT_WORKSPACE, .principal = "", .request_id = "t",
                           .deadline_ms = -1};
static const az_ctx ctx_b = {.workspace_id = WS_B, .principal = "", .request_id = "t",
                             .deadline_ms = -1};
static const az_memory_config no_embeddings = {0};

/* ---------------------------------------------------------------- helpers */

static char *new_agent(const az_ctx *c, const char *name)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.name = (char *)name;
    a.role = "Researcher";
    a.goal = "Find things";
    a.backstory = "Knows where to look";
    a.memory = 1;
    Agentz__V1__Agent *out = NULL;
    int replayed;
    CU_ASSERT_EQUAL_FATAL(az_agent_create(pg, c, &a, "", "", arena, &out, &replayed, msg), AZ_OK);
    return out->id;
}

static char *new_uuid(void)
{
    char *u = az_arena_alloc(arena, 37);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    CU_ASSERT_EQUAL_FATAL(az_text_uuid4(u), AZ_OK);
    return u;
}

static void add(const char *agent, const char *description, const char *output)
{
    az_err e = az_memory_add(pg, &ctx, &no_embeddings, agent, new_uuid(), NULL, description, output, msg);
    if (e != AZ_OK) fprintf(stderr, "az_memory_add: %s\n", msg);
    CU_ASSERT_EQUAL_FATAL(e, AZ_OK);
}

static Agentz__V1__AgentMemory *list(const az_ctx *c, const char *agent, const char *query,
                                     int page_size, const char *token, az_err want)
{
    Agentz__V1__AgentMemory *m = NULL;
    az_err e = az_memory_list(pg, c, agent, query, page_size, token, arena, &m, msg);
    CU_ASSERT_EQUAL(e, want);
    if (e != want) fprintf(stderr, "az_memory_list: %d %s\n", e, msg);
    return m;
}

/* ---------------------------------------------------------------- tests */

static void test_add_and_list(void)
{
    char *agent = new_agent(&ctx, "mem-add");
    char *task = new_uuid(), *run = new_uuid();
    CU_ASSERT_EQUAL_FATAL(az_memory_add(pg, &ctx, &no_embeddings, agent, task, run,
                                        "  Summarize the news \n", "Nothing happened.\n", msg),
                          AZ_OK);
    Agentz__V1__AgentMemory *m = list(&ctx, agent, "", 10, "", AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL_FATAL(m->n_entries, 1);
    CU_ASSERT_STRING_EQUAL(m->entries[0]->summary, "Task: Summarize the news\nResult: Nothing happened.");
    CU_ASSERT_STRING_EQUAL(m->entries[0]->task_id, task);
    CU_ASSERT_STRING_EQUAL(m->entries[0]->run_id, run);
    CU_ASSERT(az_text_is_uuid(m->entries[0]->id));
    CU_ASSERT_PTR_NOT_NULL(m->entries[0]->create_time);
    CU_ASSERT(m->entries[0]->create_time && m->entries[0]->create_time->seconds > 1700000000);
    CU_ASSERT_STRING_EQUAL(m->next_page_token, "");

    /* Without a run the entry has run_id "". */
    add(agent, "second", "two");
    m = list(&ctx, agent, "", 10, "", AZ_OK);
    CU_ASSERT_EQUAL_FATAL(m->n_entries, 2);
    CU_ASSERT_STRING_EQUAL(m->entries[0]->summary, "Task: second\nResult: two"); /* newest first */
    CU_ASSERT_STRING_EQUAL(m->entries[0]->run_id, "");

    /* Bad ids are refused before anything is stored. */
    CU_ASSERT_EQUAL(az_memory_add(pg, &ctx, &no_embeddings, "nope", task, NULL, "d", "o", msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "agent_id"));
    CU_ASSERT_EQUAL(az_memory_add(pg, &ctx, &no_embeddings, agent, "x", NULL, "d", "o", msg), AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "task_id"));
    /* An agent that does not exist (deleted while its task ran). */
    CU_ASSERT_EQUAL(az_memory_add(pg, &ctx, &no_embeddings, new_uuid(), task, NULL, "d", "o", msg),
                    AZ_ERR_NOT_FOUND);
}

static void test_summary_cap(void)
{
    char *agent = new_agent(&ctx, "mem-cap");
    /* 1500 two-byte characters: 3000 bytes of description, cut inside the output. */
    char desc[3001];
    for (int i = 0; i < 1500; i++) memcpy(desc + 2 * i, "\xC3\xA9", 2);
    desc[3000] = '\0';
    add(agent, desc, "never seen");
    Agentz__V1__AgentMemory *m = list(&ctx, agent, "", 10, "", AZ_OK);
    CU_ASSERT_EQUAL_FATAL(m->n_entries, 1);
    const char *s = m->entries[0]->summary;
    size_t n = strlen(s);
    CU_ASSERT(n <= AZ_MEMORY_SUMMARY_MAX);
    CU_ASSERT(n >= AZ_MEMORY_SUMMARY_MAX - 4);
    CU_ASSERT(az_text_utf8_valid(s, n));
    CU_ASSERT(n >= 3 && memcmp(s + n - 3, "\xE2\x80\xA6", 3) == 0); /* ends with "…" */
    CU_ASSERT_PTR_NULL(strstr(s, "never seen"));

    /* Bytes that are not UTF-8 become '?' instead of failing the insert. */
    add(agent, "bad bytes", "a\xFF" "b\xC3");
    m = list(&ctx, agent, "", 1, "", AZ_OK);
    CU_ASSERT_EQUAL_FATAL(m->n_entries, 1);
    CU_ASSERT_STRING_EQUAL(m->entries[0]->summary, "Task: bad bytes\nResult: a?b?");
}

static void test_prune_beyond_cap(void)
{
    char *agent = new_agent(&ctx, "mem-prune");
    /* A full memory, written directly (a thousand adds would take a while): entry i is i
     * seconds old. */
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, &ctx, &c, msg), AZ_OK);
    char cap[16];
    snprintf(cap, sizeof cap, "%d", AZ_MEMORY_MAX_PER_AGENT + 2);
    const char *p[3] = {AZ_DEFAULT_WORKSPACE, agent, cap};
    az_err e = az_pg_exec(c, &ctx,
                          "INSERT INTO agent_memory (workspace_id, id, agent_id, task_id, summary, create_time)"
                          " SELECT $1, gen_random_uuid(), $2, gen_random_uuid(), 'old ' || i,"
                          " now() - i * interval '1 second' FROM generate_series(1, $3::integer) i",
                          3, p, NULL, msg);
    az_pg_release(c);
    CU_ASSERT_EQUAL_FATAL(e, AZ_OK);
    add(agent, "newest", "done");
    Agentz__V1__AgentMemory *m = list(&ctx, agent, "", 1000, "", AZ_OK);
    CU_ASSERT_EQUAL_FATAL(m->n_entries, AZ_MEMORY_MAX_PER_AGENT);
    CU_ASSERT_STRING_EQUAL(m->next_page_token, ""); /* nothing older is left */
    CU_ASSERT_STRING_EQUAL(m->entries[0]->summary, "Task: newest\nResult: done");
    char want[32];
    snprintf(want, sizeof want, "old %d", AZ_MEMORY_MAX_PER_AGENT - 1); /* the 3 oldest went */
    CU_ASSERT_STRING_EQUAL(m->entries[AZ_MEMORY_MAX_PER_AGENT - 1]->summary, want);
}

static void test_keyword_recall(void)
{
    char *agent = new_agent(&ctx, "mem-keywords");
    char **s;
    size_t n = 99;
    /* Nothing remembered yet. */
    CU_ASSERT_EQUAL(az_memory_recall(pg, &ctx, &no_embeddings, agent, "anything", 5, arena, &s, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);

    add(agent, "Research cats", "Cats sleep a lot.");            /* both words, oldest */
    add(agent, "Bake bread", "Sourdough.");                       /* no match */
    add(agent, "Feed the CATS", "They purred.");                  /* one word */
    add(agent, "Write about dogs", "Dogs bark.");                 /* no match, newest */
    CU_ASSERT_EQUAL_FATAL(az_memory_recall(pg, &ctx, &no_embeddings, agent, "cats, research!", 10, arena,
                                           &s, &n, msg),
                          AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT_STRING_EQUAL(s[0], "Task: Research cats\nResult: Cats sleep a lot.");
    CU_ASSERT_STRING_EQUAL(s[1], "Task: Feed the CATS\nResult: They purred.");
    CU_ASSERT_STRING_EQUAL(s[2], "Task: Write about dogs\nResult: Dogs bark."); /* then recency */
    CU_ASSERT_STRING_EQUAL(s[3], "Task: Bake bread\nResult: Sourdough.");

    /* The limit holds; a query without words is recency alone. */
    CU_ASSERT_EQUAL(az_memory_recall(pg, &ctx, &no_embeddings, agent, "cats", 1, arena, &s, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(s[0], "Cats sleep"));
    CU_ASSERT_EQUAL(az_memory_recall(pg, &ctx, &no_embeddings, agent, " ?! ", 2, arena, &s, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(s[0], "dogs"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s[1], "purred"));
    /* Quotes and tsquery operators in the query are just text. */
    CU_ASSERT_EQUAL(az_memory_recall(pg, &ctx, &no_embeddings, agent, "'bread' & !(x) | <-> \\", 1, arena,
                                     &s, &n, msg),
                    AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(s[0], "bread"));
    CU_ASSERT_EQUAL(az_memory_recall(pg, &ctx, &no_embeddings, agent, "x", 0, arena, &s, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
}

static char *embedding_body(double x, double y, double z)
{
    return az_arena_printf(arena,
                           "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                           "\"embedding\":[%g,%g,%g]}],\"model\":\"m\",\"usage\":{\"prompt_tokens\":3,"
                           "\"total_tokens\":3}}",
                           x, y, z);
}

static void test_embedding_recall(void)
{
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    char url[96];
    snprintf(url, sizeof url, "%s/v1/", f.base_url);
    az_memory_config cfg = {.embeddings_url = url, .embeddings_model = "embed-small",
                            .embeddings_api_key = "sk-test", .guard = loopback};
    fake_script(&f, &(fake_response){.status = 200, .body = embedding_body(1, 0, 0)});
    fake_script(&f, &(fake_response){.status = 200, .body = embedding_body(0, 1, 0)});
    fake_script(&f, &(fake_response){.status = 200, .body = embedding_body(0, 0, 1)});
    fake_script(&f, &(fake_response){.status = 500, .body = "{\"error\":\"down\"}"});
    fake_script(&f, &(fake_response){.status = 200, .body = embedding_body(0.1, 0.9, 0.3)});

    char *agent = new_agent(&ctx, "mem-embed");
    const char *tasks[] = {"alpha cats", "beta dogs", "gamma birds", "delta fish"};
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(az_memory_add(pg, &ctx, &cfg, agent, new_uuid(), NULL, tasks[i], "ok", msg), AZ_OK);
    /* The fourth add got a 500: stored without an embedding, recalled after the similar ones. */
    char **s;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(az_memory_recall(pg, &ctx, &cfg, agent, "which pets bark?", 4, arena, &s, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT_STRING_EQUAL(s[0], "Task: beta dogs\nResult: ok");
    CU_ASSERT_STRING_EQUAL(s[1], "Task: gamma birds\nResult: ok");
    CU_ASSERT_STRING_EQUAL(s[2], "Task: alpha cats\nResult: ok");
    CU_ASSERT_STRING_EQUAL(s[3], "Task: delta fish\nResult: ok");

    /* What went over the wire: the OpenAI request shape, the key as a bearer token. */
    pthread_mutex_lock(&f.mu);
    size_t nreq = f.n_reqs;
    pthread_mutex_unlock(&f.mu);
    CU_ASSERT_EQUAL_FATAL(nreq, 5);
    CU_ASSERT_STRING_EQUAL(f.reqs[0].method, "POST");
    CU_ASSERT_STRING_EQUAL(f.reqs[0].path, "/v1/embeddings");
    char h[128];
    CU_ASSERT_PTR_NOT_NULL(fake_header(&f.reqs[0], "Authorization", h, sizeof h));
    CU_ASSERT_STRING_EQUAL(h, "Bearer sk-test");
    json_error_t jerr;
    json_t *b = json_loads(f.reqs[0].body, 0, &jerr);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "model")), "embed-small");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "input")), "Task: alpha cats\nResult: ok");
    json_decref(b);
    b = json_loads(f.reqs[4].body, 0, &jerr);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "input")), "which pets bark?");
    json_decref(b);
    fake_stop(&f);

    /* The endpoint is down at recall time: keywords and recency take over. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", fake_closed_port());
    CU_ASSERT_EQUAL_FATAL(az_memory_recall(pg, &ctx, &cfg, agent, "fish", 2, arena, &s, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(s[0], "Task: delta fish\nResult: ok");
}

static void test_embedding_guard(void)
{
    /* The default policy refuses loopback: no request leaves, the entry is stored without. */
    llm_fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f), 0);
    fake_script(&f, &(fake_response){.status = 200, .body = embedding_body(1, 0, 0)});
    az_memory_config cfg = {.embeddings_url = f.base_url, .embeddings_model = "m", .guard = NULL};
    char *agent = new_agent(&ctx, "mem-guard");
    CU_ASSERT_EQUAL(az_memory_add(pg, &ctx, &cfg, agent, new_uuid(), NULL, "guarded", "ok", msg), AZ_OK);
    pthread_mutex_lock(&f.mu);
    size_t nreq = f.n_reqs;
    pthread_mutex_unlock(&f.mu);
    CU_ASSERT_EQUAL(nreq, 0);
    fake_stop(&f);
    Agentz__V1__AgentMemory *m = list(&ctx, agent, "", 10, "", AZ_OK);
    CU_ASSERT_EQUAL(m ? m->n_entries : 0, 1);
}

static void test_list_query_and_pages(void)
{
    char *agent = new_agent(&ctx, "mem-pages");
    for (int i = 0; i < 7; i++) {
        char d[32];
        snprintf(d, sizeof d, i % 2 ? "beta %d" : "Alpha %d", i); /* 0 2 4 6 are alpha */
        add(agent, d, "r");
    }
    Agentz__V1__AgentMemory *m = list(&ctx, agent, "ALPHA", 3, "", AZ_OK);
    CU_ASSERT_EQUAL_FATAL(m->n_entries, 3);
    CU_ASSERT_STRING_EQUAL(m->entries[0]->summary, "Task: Alpha 6\nResult: r");
    CU_ASSERT_STRING_EQUAL(m->entries[2]->summary, "Task: Alpha 2\nResult: r");
    CU_ASSERT_NOT_EQUAL_FATAL(m->next_page_token[0], '\0');
    char *token = m->next_page_token;
    m = list(&ctx, agent, "ALPHA", 3, token, AZ_OK);
    CU_ASSERT_EQUAL_FATAL(m->n_entries, 1);
    CU_ASSERT_STRING_EQUAL(m->entries[0]->summary, "Task: Alpha 0\nResult: r");
    CU_ASSERT_STRING_EQUAL(m->next_page_token, "");

    /* Every entry, two at a time, newest first, each once. */
    int seen = 0;
    const char *tok = "";
    do {
        m = list(&ctx, agent, "", 2, tok, AZ_OK);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        for (size_t i = 0; i < m->n_entries; i++) {
            char want[32];
            snprintf(want, sizeof want, "%d", 6 - seen);
            CU_ASSERT_PTR_NOT_NULL(strstr(m->entries[i]->summary, want));
            seen++;
        }
        tok = m->next_page_token;
    } while (*tok && seen < 20);
    CU_ASSERT_EQUAL(seen, 7);

    /* A token belongs to its query and agent. */
    list(&ctx, agent, "beta", 3, token, AZ_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "page_token"));
    list(&ctx, new_agent(&ctx, "mem-pages-2"), "ALPHA", 3, token, AZ_ERR_INVALID);
    list(&ctx, agent, "", 3, "!!not-a-token!!", AZ_ERR_INVALID);
    list(&ctx, agent, "", 3, "bTF8eHh4", AZ_ERR_INVALID); /* base64 of "m1|xxx" */
    /* Unknown agents. */
    list(&ctx, new_uuid(), "", 3, "", AZ_ERR_NOT_FOUND);
    list(&ctx, "not-a-uuid", "", 3, "", AZ_ERR_NOT_FOUND);
}

static void test_clear(void)
{
    char *agent = new_agent(&ctx, "mem-clear"), *other = new_agent(&ctx, "mem-clear-other");
    add(agent, "one", "1");
    add(agent, "two", "2");
    add(other, "kept", "3");
    int64_t removed = -1;
    CU_ASSERT_EQUAL(az_memory_clear(pg, &ctx, agent, &removed, msg), AZ_OK);
    CU_ASSERT_EQUAL(removed, 2);
    Agentz__V1__AgentMemory *m = list(&ctx, agent, "", 10, "", AZ_OK);
    CU_ASSERT_EQUAL(m ? m->n_entries : 99, 0);
    char **s;
    size_t n;
    CU_ASSERT_EQUAL(az_memory_recall(pg, &ctx, &no_embeddings, agent, "one", 5, arena, &s, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    m = list(&ctx, other, "", 10, "", AZ_OK);
    CU_ASSERT_EQUAL(m ? m->n_entries : 0, 1);
    /* Clearing an empty memory is fine; an unknown agent is not. */
    CU_ASSERT_EQUAL(az_memory_clear(pg, &ctx, agent, NULL, msg), AZ_OK);
    CU_ASSERT_EQUAL(az_memory_clear(pg, &ctx, new_uuid(), &removed, msg), AZ_ERR_NOT_FOUND);
    /* Deleting the agent takes its memory along. */
    CU_ASSERT_EQUAL(az_agent_delete(pg, &ctx, other, 0, msg), AZ_OK);
    az_pgconn *c;
    CU_ASSERT_EQUAL_FATAL(az_pg_acquire(pg, NULL, &c, msg), AZ_OK);
    PGresult *r;
    const char *p[1] = {other};
    CU_ASSERT_EQUAL(az_pg_exec(c, NULL, "SELECT count(*) FROM agent_memory WHERE agent_id = $1", 1, p, &r, msg), AZ_OK);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    az_pg_release(c);
}

static void test_workspace_isolation(void)
{
    char *mine = new_agent(&ctx, "mem-iso"), *theirs = new_agent(&ctx_b, "mem-iso");
    add(mine, "mine", "a");
    CU_ASSERT_EQUAL_FATAL(az_memory_add(pg, &ctx_b, &no_embeddings, theirs, new_uuid(), NULL, "theirs",
                                        "b", msg),
                          AZ_OK);
    /* Workspace A cannot see, recall, clear or write B's agent's memory. */
    list(&ctx, theirs, "", 10, "", AZ_ERR_NOT_FOUND);
    char **s;
    size_t n;
    CU_ASSERT_EQUAL(az_memory_recall(pg, &ctx, &no_embeddings, theirs, "theirs", 5, arena, &s, &n, msg), AZ_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(az_memory_clear(pg, &ctx, theirs, NULL, msg), AZ_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(az_memory_add(pg, &ctx, &no_embeddings, theirs, new_uuid(), NULL, "x", "y", msg),
                    AZ_ERR_NOT_FOUND);
    Agentz__V1__AgentMemory *m = list(&ctx_b, theirs, "", 10, "", AZ_OK);
    CU_ASSERT_EQUAL_FATAL(m ? m->n_entries : 0, 1);
    CU_ASSERT_STRING_EQUAL(m->entries[0]->summary, "Task: theirs\nResult: b");
    m = list(&ctx, mine, "", 10, "", AZ_OK);
    CU_ASSERT_EQUAL_FATAL(m ? m->n_entries : 0, 1);
    CU_ASSERT_STRING_EQUAL(m->entries[0]->summary, "Task: mine\nResult: a");
}

/* ---------------------------------------------------------------- suite */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int suite_init(void)
{
    az_log_set_level(AZ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/aztest-memory-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) return -1;
    if (az_embed_start(dir, &embed, msg) != AZ_OK) {
        fprintf(stderr, "cannot start embedded postgresql: %s\n", msg);
        return -1;
    }
    if (az_pg_new(az_embed_database_url(embed), 4, 30000, &pg, msg) != AZ_OK ||
        az_migrate(pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK) {
        fprintf(stderr, "cannot prepare the database: %s\n", msg);
        return -1;
    }
    az_pgconn *c;
    if (az_pg_acquire(pg, NULL, &c, msg) != AZ_OK ||
        az_pg_exec(c, NULL, "INSERT INTO workspaces (id, name) VALUES ('" WS_B "', 'b')", 0, NULL, NULL,
                   msg) != AZ_OK) {
        fprintf(stderr, "cannot create workspace b: %s\n", msg);
        return -1;
    }
    az_pg_release(c);
    /* Like the daemon: the tenant role, so row-level security applies too. */
    if (az_pg_set_role(pg, "agentz_app", msg) != AZ_OK) {
        fprintf(stderr, "cannot set role: %s\n", msg);
        return -1;
    }
    if (az_netguard_new("127.0.0.0/8", &loopback, msg) != AZ_OK) return -1;
    arena = az_arena_new(0);
    return arena ? 0 : -1;
}

static int suite_clean(void)
{
    az_arena_free(arena);
    az_netguard_free(loopback);
    az_pg_free(pg);
    az_embed_stop(embed);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("memory", suite_init, suite_clean);
    CU_add_test(s, "add and list", test_add_and_list);
    CU_add_test(s, "summary cap at a UTF-8 boundary", test_summary_cap);
    CU_add_test(s, "prune beyond the per-agent cap", test_prune_beyond_cap);
    CU_add_test(s, "keyword recall: rank, then recency", test_keyword_recall);
    CU_add_test(s, "embedding recall over HTTP", test_embedding_recall);
    CU_add_test(s, "embeddings respect the network policy", test_embedding_guard);
    CU_add_test(s, "list with a query, pages, tokens", test_list_query_and_pages);
    CU_add_test(s, "clear", test_clear);
    CU_add_test(s, "workspace isolation", test_workspace_isolation);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_suites_failed()) failed++;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
