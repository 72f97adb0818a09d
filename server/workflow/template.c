/* Templates: the three built-in teams (embedded proto3 JSON decoded with az_pbjson_decode, so
 * they read like what a user would send), workspace templates in PostgreSQL (a packed
 * agentz.v1.Template per row), instantiation in one transaction, and saving a workflow as one. */
#include "template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/agent_api.h"
#include "core/pagetoken.h"
#include "core/pbjson.h"
#include "core/pbtime.h"
#include "core/text.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "store/idem.h"
#include "workflow.h"

/* Each a complete agentz.v1.Template; ids are stable API names. See docs/orchestration.md. */
static const char *const builtin_json[] = {
    /* research-write-review */
    "{\"id\":\"research-write-review\",\"name\":\"research-write-review\",\"description\":\"A three-a"
    "gent content team: a researcher gathers facts on a topic, a writer turns them into an article, a"
    "n editor checks it against the research and polishes it.\",\"builtin\":true,\"agents\":[{\"name\""
    ":\"researcher\",\"role\":\"Senior Research Analyst\",\"goal\":\"Uncover accurate, current and we"
    "ll-sourced information about {topic}\",\"backstory\":\"You spent a decade as an analyst at a res"
    "earch firm, where a single wrong number could cost a client millions. You separate established f"
    "acts from claims, note where sources disagree, and always say how confident you are. You prefer "
    "primary sources and recent data, and you never invent a citation.\",\"tools\":[\"http_fetch\",\""
    "current_time\"]},{\"name\":\"writer\",\"role\":\"Content Writer\",\"goal\":\"Turn research about"
    " {topic} into a clear, engaging article for {audience}\",\"backstory\":\"You are a former scienc"
    "e journalist who made complex subjects readable without dumbing them down. You structure every p"
    "iece around one clear idea, use concrete examples, and keep every claim traceable to the researc"
    "h you were given.\"},{\"name\":\"editor\",\"role\":\"Senior Editor\",\"goal\":\"Make sure every "
    "article about {topic} is accurate, well structured and ready to publish\",\"backstory\":\"You ha"
    "ve edited magazines and technical blogs for fifteen years. You check every claim against the res"
    "earch, cut what does not serve the reader, fix structure before style, and return a finished pie"
    "ce rather than a list of suggestions.\"}],\"workflow\":{\"name\":\"research-write-review\",\"des"
    "cription\":\"Research a topic, write an article about it, then edit the article against the rese"
    "arch.\",\"process\":\"PROCESS_SEQUENTIAL\",\"inputs\":[{\"name\":\"topic\",\"description\":\"Wha"
    "t the article is about\",\"required\":true},{\"name\":\"audience\",\"description\":\"Who the art"
    "icle is for\",\"default_value\":\"a general audience\"}],\"steps\":[{\"id\":\"research\",\"agent"
    "_id\":\"researcher\",\"description\":\"Research {topic} for {audience}. Find the key facts, the "
    "most important recent developments, the main open questions and any common misconceptions. Note "
    "a source for every fact.\",\"expected_output\":\"A research brief in Markdown: 5 to 10 key findi"
    "ngs, each with a one-paragraph explanation and its source, followed by a short list of open ques"
    "tions.\"},{\"id\":\"write\",\"agent_id\":\"writer\",\"description\":\"Using the research brief, "
    "write an article about {topic} for {audience}. Open with why the topic matters, explain the key "
    "findings in a logical order, and close with what to watch next. Use only facts from the brief.\""
    ",\"expected_output\":\"A complete article in Markdown of 800 to 1200 words with a title, an intr"
    "oduction, 3 to 5 sections with headings and a conclusion.\"},{\"id\":\"review\",\"agent_id\":\"e"
    "ditor\",\"description\":\"Edit the article about {topic}. Check every claim against the research"
    " brief and correct or remove anything unsupported, tighten the prose, fix structure and headings"
    ", and make the tone right for {audience}.\",\"expected_output\":\"The final, publication-ready a"
    "rticle in Markdown, followed by a short list of the substantive changes made.\",\"context_from\""
    ":[\"research\",\"write\"]}]}}",
    /* code-review */
    "{\"id\":\"code-review\",\"name\":\"code-review\",\"description\":\"A parallel code review: secur"
    "ity, performance and style reviewers examine the code at the same time, then a lead reviewer mer"
    "ges their findings into one prioritized review.\",\"builtin\":true,\"agents\":[{\"name\":\"secur"
    "ity-reviewer\",\"role\":\"Application Security Engineer\",\"goal\":\"Find exploitable vulnerabil"
    "ities in {language} code before it ships\",\"backstory\":\"You have run penetration tests and tr"
    "iaged bug-bounty reports for years. You think like an attacker: untrusted input, injection, auth"
    "entication and authorization gaps, secrets in code, unsafe deserialization, memory safety. You r"
    "eport only issues you can explain with a concrete attack, and you rate each by severity.\"},{\"n"
    "ame\":\"performance-reviewer\",\"role\":\"Performance Engineer\",\"goal\":\"Find the changes tha"
    "t would make {language} code measurably faster or leaner\",\"backstory\":\"You have profiled pro"
    "duction systems under real load and know that most time goes to a few hot paths. You look for al"
    "gorithmic complexity, needless allocation and copying, blocking I/O, N+1 queries and missing cac"
    "hing, and you estimate the impact of each finding instead of micro-optimizing.\"},{\"name\":\"st"
    "yle-reviewer\",\"role\":\"Senior {language} Developer\",\"goal\":\"Make {language} code idiomati"
    "c, readable and maintainable\",\"backstory\":\"You have maintained large {language} codebases an"
    "d reviewed thousands of pull requests. You care about clear names, small functions, error handli"
    "ng, tests and the idioms of the language community, and you explain why each suggestion helps th"
    "e next reader.\"},{\"name\":\"lead-reviewer\",\"role\":\"Lead Reviewer\",\"goal\":\"Give the aut"
    "hor one clear, prioritized review they can act on\",\"backstory\":\"You are the tech lead who ha"
    "s the final word on merges. You merge overlapping findings, drop the noise, order what remains b"
    "y risk and effort, and decide whether the change can ship.\"}],\"workflow\":{\"name\":\"code-rev"
    "iew\",\"description\":\"Security, performance and style reviews in parallel, merged into one pri"
    "oritized review.\",\"process\":\"PROCESS_PARALLEL\",\"inputs\":[{\"name\":\"code\",\"description"
    "\":\"The source code to review\",\"required\":true},{\"name\":\"language\",\"description\":\"The"
    " programming language of the code\",\"required\":true}],\"steps\":[{\"id\":\"security\",\"agent_"
    "id\":\"security-reviewer\",\"description\":\"Review this {language} code for security vulnerabil"
    "ities:\\n\\n{code}\",\"expected_output\":\"A list of vulnerabilities, each with severity (critic"
    "al, high, medium, low), the affected lines, how it can be exploited and a concrete fix; or a sta"
    "tement that none were found.\"},{\"id\":\"performance\",\"agent_id\":\"performance-reviewer\",\""
    "description\":\"Review this {language} code for performance problems:\\n\\n{code}\",\"expected_o"
    "utput\":\"A list of performance issues, each with the affected lines, the estimated impact and a"
    " concrete improvement; or a statement that none were found.\"},{\"id\":\"style\",\"agent_id\":\""
    "style-reviewer\",\"description\":\"Review this {language} code for readability, idiomatic style,"
    " error handling and testability:\\n\\n{code}\",\"expected_output\":\"A list of maintainability i"
    "ssues, each with the affected lines and a suggested rewrite.\"},{\"id\":\"summary\",\"agent_id\""
    ":\"lead-reviewer\",\"description\":\"Merge the security, performance and style reviews of the {l"
    "anguage} code into one review. Remove duplicates, order the findings by priority and decide whet"
    "her the code can be merged.\",\"expected_output\":\"A review in Markdown: a verdict (approve, ap"
    "prove with changes, request changes), then the findings grouped as must fix, should fix and nice"
    " to have.\",\"depends_on\":[\"security\",\"performance\",\"style\"]}]}}",
    /* support-triage */
    "{\"id\":\"support-triage\",\"name\":\"support-triage\",\"description\":\"A hierarchical support "
    "team: a support manager plans the work and delegates classification, knowledge-base research and"
    " the reply to specialists, then checks the result.\",\"builtin\":true,\"agents\":[{\"name\":\"su"
    "pport-manager\",\"role\":\"Customer Support Manager\",\"goal\":\"Resolve every ticket about {pro"
    "duct} quickly, correctly and kindly\",\"backstory\":\"You lead a support team and know each spec"
    "ialist's strengths. You break a ticket into clear assignments, delegate them to the right people"
    ", check their work against the customer's actual question, and only accept a reply you would sen"
    "d yourself.\",\"allow_delegation\":true},{\"name\":\"classifier\",\"role\":\"Support Triage Spec"
    "ialist\",\"goal\":\"Classify tickets about {product} accurately so they reach the right people\""
    ",\"backstory\":\"You have triaged tens of thousands of tickets. You quickly spot the real proble"
    "m behind the customer's words, the product area, the urgency and the customer's mood, and you fl"
    "ag anything that looks like an outage or a security issue.\"},{\"name\":\"kb-researcher\",\"role"
    "\":\"Knowledge Base Researcher\",\"goal\":\"Find the documented answer, workaround or known issu"
    "e for each ticket about {product}\",\"backstory\":\"You know the documentation, release notes an"
    "d known-issues list by heart and know where the gaps are. You quote the relevant passages and sa"
    "y plainly when something is not documented.\",\"tools\":[\"http_fetch\"]},{\"name\":\"responder\""
    ",\"role\":\"Customer Support Writer\",\"goal\":\"Write replies about {product} that solve the cu"
    "stomer's problem in one message\",\"backstory\":\"You write support replies that are warm, preci"
    "se and easy to follow. You acknowledge the problem, give numbered steps, set expectations honest"
    "ly, and never promise what the team cannot deliver.\"}],\"workflow\":{\"name\":\"support-triage\""
    ",\"description\":\"Triage a support ticket, research the answer and draft the reply, under a sup"
    "port manager.\",\"process\":\"PROCESS_HIERARCHICAL\",\"manager_agent_id\":\"support-manager\",\""
    "inputs\":[{\"name\":\"ticket\",\"description\":\"The customer's ticket, as received\",\"required"
    "\":true},{\"name\":\"product\",\"description\":\"The product the ticket is about\",\"default_val"
    "ue\":\"our product\"}],\"steps\":[{\"id\":\"classify\",\"agent_id\":\"classifier\",\"description"
    "\":\"Classify this support ticket about {product}:\\n\\n{ticket}\",\"expected_output\":\"JSON wi"
    "th the fields category (billing, bug, how-to, account, feature-request, outage, security), prior"
    "ity (p1 to p4), sentiment (positive, neutral, negative) and a one-sentence summary of the actual"
    " problem.\"},{\"id\":\"research\",\"agent_id\":\"kb-researcher\",\"description\":\"Find the docu"
    "mented answer, workaround or known issue that resolves the classified ticket about {product}.\","
    "\"expected_output\":\"The relevant documentation passages or known issues with links, and a shor"
    "t statement of the resolution; or a clear statement that the issue is undocumented and needs esc"
    "alation.\"},{\"id\":\"respond\",\"agent_id\":\"responder\",\"description\":\"Write the reply to "
    "the customer who sent this ticket about {product}, using the classification and the research:\\n"
    "\\n{ticket}\",\"expected_output\":\"A ready-to-send reply to the customer, plus an internal note"
    " saying whether the ticket can be closed or must be escalated, and to whom.\"}]}}"
,
};
enum { N_BUILTIN = sizeof builtin_json / sizeof *builtin_json };

/* How many suffixes InstantiateTemplate tries for a free name ("x", "x-2", … "x-50"). */
#define NAME_ATTEMPTS 50

/* ---------------------------------------------------------------- helpers */

/* A packed message as a bytea literal ("\x…"). */
static char *bytea_param(az_arena *a, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = az_arena_alloc(a, n ? n : 1);
    char *hex = az_arena_alloc(a, 2 * n + 3);
    if (!buf || !hex) return NULL;
    protobuf_c_message_pack(m, buf);
    static const char digits[] = "0123456789abcdef";
    hex[0] = '\\';
    hex[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        hex[2 + 2 * i] = digits[buf[i] >> 4];
        hex[3 + 2 * i] = digits[buf[i] & 15];
    }
    hex[2 + 2 * n] = '\0';
    return hex;
}

static int is_builtin_id(const char *id)
{
    /* Built-in ids are lowercase words, workspace ids uuids: they never collide. */
    return !az_text_is_uuid(id);
}

/* ---------------------------------------------------------------- built-ins */

az_err az_template_builtins(az_arena *a, Agentz__V1__Template ***out, size_t *n, char *msg)
{
    *out = NULL;
    *n = 0;
    Agentz__V1__Template **list = az_arena_alloc(a, N_BUILTIN * sizeof *list);
    if (!list) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < N_BUILTIN; i++) {
        ProtobufCMessage *m;
        char why[AZ_MSG_MAX];
        if (az_pbjson_decode(&agentz__v1__template__descriptor, builtin_json[i],
                             strlen(builtin_json[i]), az_arena_allocator(a), &m, why) != AZ_OK)
            return az_fail(msg, AZ_ERR_INTERNAL, "built-in template %zu does not decode: %s", i, why);
        list[i] = (Agentz__V1__Template *)m;
    }
    *out = list;
    *n = N_BUILTIN;
    return AZ_OK;
}

/* ---------------------------------------------------------------- workspace templates */

#define COLS                                                                                     \
    "id::text, name, description, spec, (extract(epoch FROM create_time) * 1000000)::bigint,"   \
    " create_time::text"
enum { C_ID, C_NAME, C_DESCRIPTION, C_SPEC, C_CREATE, C_CREATE_TEXT };

static az_err from_row(const PGresult *r, int row, az_arena *a, Agentz__V1__Template **out, char *msg)
{
    size_t len = 0;
    unsigned char *bytes = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, C_SPEC), &len);
    if (!bytes) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    Agentz__V1__Template *t = (Agentz__V1__Template *)protobuf_c_message_unpack(
        &agentz__v1__template__descriptor, az_arena_allocator(a), len, bytes);
    PQfreemem(bytes);
    if (!t) return az_fail(msg, AZ_ERR_INTERNAL, "stored template does not parse");
    t->id = az_arena_strdup(a, PQgetvalue(r, row, C_ID));
    t->name = az_arena_strdup(a, PQgetvalue(r, row, C_NAME));
    t->description = az_arena_strdup(a, PQgetvalue(r, row, C_DESCRIPTION));
    t->builtin = 0;
    t->create_time = az_pbtime_timestamp(a, atoll(PQgetvalue(r, row, C_CREATE)));
    if (!t->id || !t->name || !t->description || !t->create_time)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *out = t;
    return AZ_OK;
}

az_err az_template_get(az_pg *pg, const az_ctx *ctx, const char *id, az_arena *a,
                       Agentz__V1__Template **out, char *msg)
{
    *out = NULL;
    if (is_builtin_id(id)) {
        Agentz__V1__Template **list;
        size_t n;
        az_err err = az_template_builtins(a, &list, &n, msg);
        if (err != AZ_OK) return err;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(list[i]->id, id) == 0) {
                *out = list[i];
                return AZ_OK;
            }
        }
        return az_fail(msg, AZ_ERR_NOT_FOUND, "template %s not found", id);
    }
    const char *p[2] = {ctx->workspace_id, id};
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx, "SELECT " COLS " FROM templates WHERE workspace_id = $1 AND id = $2", 2, p,
                     &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    if (PQntuples(r) == 0) err = az_fail(msg, AZ_ERR_NOT_FOUND, "template %s not found", id);
    else err = from_row(r, 0, a, out, msg);
    PQclear(r);
    return err;
}

/* Token text: "t1|b|<index of the next built-in>" while built-ins remain, then
 * "t1|s|<create_time text>|<id>" (or "t1|s|-|-" for the first saved one). */
az_err az_template_list(az_pg *pg, const az_ctx *ctx, int page_size, const char *page_token,
                        az_arena *a, Agentz__V1__ListTemplatesResponse **out, char *msg)
{
    *out = NULL;
    size_t first = 0;
    char ts[64] = "", after[40] = "";
    int saved_phase = 0;
    az_err err;
    if (page_token && *page_token) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        int idx;
        if ((err = az_pagetoken_decode(page_token, raw, msg)) != AZ_OK) return err;
        if (sscanf(raw, "t1|b|%d", &idx) == 1 && idx >= 0 && idx <= N_BUILTIN) {
            first = (size_t)idx;
        } else if (sscanf(raw, "t1|s|%63[^|]|%39s", ts, after) == 2 &&
                   (strcmp(after, "-") == 0 || az_text_is_uuid(after))) {
            saved_phase = 1;
            first = N_BUILTIN;
            if (strcmp(after, "-") == 0) ts[0] = after[0] = '\0';
        } else {
            return az_fail(msg, AZ_ERR_INVALID, "page_token is invalid");
        }
    }
    Agentz__V1__ListTemplatesResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (!resp) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__list_templates_response__init(resp);
    resp->templates = az_arena_alloc(a, (size_t)page_size * sizeof *resp->templates);
    if (!resp->templates) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (!saved_phase) {
        Agentz__V1__Template **list;
        size_t n;
        if ((err = az_template_builtins(a, &list, &n, msg)) != AZ_OK) return err;
        for (size_t i = first; i < n && resp->n_templates < (size_t)page_size; i++) {
            resp->templates[resp->n_templates++] = list[i];
            first = i + 1;
        }
        if (first < n) {
            char raw[32];
            snprintf(raw, sizeof raw, "t1|b|%zu", first);
            if (!(resp->next_page_token = az_pagetoken_encode(a, raw)))
                return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            *out = resp;
            return AZ_OK;
        }
    }
    int room = page_size - (int)resp->n_templates;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", room + 1);
    const char *p[4] = {ctx->workspace_id, ts[0] ? ts : NULL, after[0] ? after : NULL, limit};
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, ctx, &c, msg)) != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "SELECT " COLS " FROM templates WHERE workspace_id = $1"
                     " AND ($2::timestamptz IS NULL OR (create_time, id) < ($2::timestamptz, $3::uuid))"
                     " ORDER BY create_time DESC, id DESC LIMIT $4::integer",
                     4, p, &r, msg);
    az_pg_release(c);
    if (err != AZ_OK) return err;
    int rows = PQntuples(r), n = rows > room ? room : rows;
    for (int i = 0; i < n && err == AZ_OK; i++)
        err = from_row(r, i, a, &resp->templates[resp->n_templates++], msg);
    if (err == AZ_OK && rows > room) {
        char raw[AZ_PAGETOKEN_RAW_MAX + 1];
        if (n == 0) snprintf(raw, sizeof raw, "t1|s|-|-");
        else
            snprintf(raw, sizeof raw, "t1|s|%s|%s", PQgetvalue(r, n - 1, C_CREATE_TEXT),
                     PQgetvalue(r, n - 1, C_ID));
        if (!(resp->next_page_token = az_pagetoken_encode(a, raw)))
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    PQclear(r);
    if (err == AZ_OK) *out = resp;
    return err;
}

az_err az_template_insert(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Template *t,
                          az_arena *a, Agentz__V1__Template **out, char *msg)
{
    *out = NULL;
    char id[37];
    if (az_text_uuid4(id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    Agentz__V1__Template copy = *t;
    copy.id = "";
    copy.builtin = 0;
    copy.create_time = NULL;
    const char *p[5] = {ctx->workspace_id, id, t->name, t->description, bytea_param(a, &copy.base)};
    if (!p[4]) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    PGresult *r;
    err = az_pg_exec(c, ctx,
                     "INSERT INTO templates (workspace_id, id, name, description, spec)"
                     " VALUES ($1, $2, $3, $4, $5::bytea) RETURNING " COLS,
                     5, p, &r, msg);
    az_pg_release(c);
    if (err == AZ_ERR_EXISTS)
        return az_fail(msg, AZ_ERR_EXISTS, "name: a template named \"%s\" already exists", t->name);
    if (err != AZ_OK) return err;
    err = from_row(r, 0, a, out, msg);
    PQclear(r);
    return err;
}

/* ---------------------------------------------------------------- save a workflow */

/* Agent ids a workflow references: the manager first, then in step order, each once. */
static const char **referenced_agents(az_arena *a, const Agentz__V1__Workflow *w, size_t *n)
{
    *n = 0;
    const char **ids = az_arena_alloc(a, (w->n_steps + 1) * sizeof *ids);
    if (!ids) return NULL;
    for (size_t i = 0; i <= w->n_steps; i++) {
        const char *id = i == 0 ? w->manager_agent_id : w->steps[i - 1]->agent_id;
        if (i == 0 && w->process != AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL) continue;
        if (!id || !*id) continue;
        int seen = 0;
        for (size_t j = 0; j < *n && !seen; j++) seen = strcmp(ids[j], id) == 0;
        if (!seen) ids[(*n)++] = id;
    }
    return ids;
}

az_err az_template_from_workflow(az_pg *pg, const az_ctx *ctx, const char *workflow_id,
                                 const char *name, const char *description, az_arena *a,
                                 Agentz__V1__Template **out, char *msg)
{
    *out = NULL;
    Agentz__V1__Workflow *w;
    az_err err = az_workflow_get(pg, ctx, workflow_id, 0, a, &w, msg);
    if (err != AZ_OK) return err;
    size_t n;
    const char **ids = referenced_agents(a, w, &n);
    Agentz__V1__Template *t = az_arena_alloc(a, sizeof *t);
    const char **names = az_arena_alloc(a, (n ? n : 1) * sizeof *names);
    if (!ids || !t || !names) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__template__init(t);
    t->name = (char *)name;
    t->description = (char *)description;
    t->agents = az_arena_alloc(a, (n ? n : 1) * sizeof *t->agents);
    if (!t->agents) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        Agentz__V1__Agent *g;
        if ((err = az_agent_get(pg, ctx, ids[i], a, &g, msg)) != AZ_OK)
            return err == AZ_ERR_NOT_FOUND
                       ? az_fail(msg, AZ_ERR_PRECONDITION,
                                 "workflow %s refers to agent %s, which no longer exists", workflow_id,
                                 ids[i])
                       : err;
        /* Keep what defines the agent; drop identity and state. */
        g->id = g->etag = g->workspace_id = "";
        g->status = 0;
        g->disabled = 0; /* a template describes the team; instances start enabled */
        g->create_time = g->update_time = NULL;
        int unique = *g->name != '\0';
        for (size_t j = 0; j < i && unique; j++) unique = strcmp(names[j], g->name) != 0;
        if (!unique) g->name = az_arena_printf(a, "agent-%zu", i + 1);
        if (!g->name) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        names[i] = g->name;
        t->agents[t->n_agents++] = g;
    }
    /* The workflow with agent ids replaced by the template's agent names. */
    Agentz__V1__Workflow *tw = az_arena_alloc(a, sizeof *tw);
    Agentz__V1__Step **steps = az_arena_alloc(a, (w->n_steps ? w->n_steps : 1) * sizeof *steps);
    if (!tw || !steps) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    *tw = *w;
    tw->id = tw->etag = tw->workspace_id = "";
    tw->version = 0;
    tw->create_time = tw->update_time = NULL;
    for (size_t i = 0; i < w->n_steps; i++) {
        Agentz__V1__Step *s = az_arena_alloc(a, sizeof *s);
        if (!s) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        *s = *w->steps[i];
        for (size_t k = 0; k < n; k++) {
            if (*s->agent_id && strcmp(s->agent_id, ids[k]) == 0) s->agent_id = (char *)names[k];
        }
        steps[i] = s;
    }
    tw->steps = steps;
    for (size_t k = 0; k < n; k++) {
        if (*tw->manager_agent_id && strcmp(tw->manager_agent_id, ids[k]) == 0)
            tw->manager_agent_id = (char *)names[k];
    }
    if (tw->process != AGENTZ__V1__PROCESS__PROCESS_HIERARCHICAL) tw->manager_agent_id = "";
    t->workflow = tw;
    *out = t;
    return AZ_OK;
}

/* ---------------------------------------------------------------- instantiate */

/* Inserts t's agents and workflow under base name `name`, inside c. */
static az_err instantiate_as(az_pgconn *c, const az_ctx *ctx, const Agentz__V1__Template *t,
                             const char *name, const char *wf_id, az_arena *a,
                             Agentz__V1__InstantiateTemplateResponse *resp, char *msg)
{
    const char **ids = az_arena_alloc(a, (t->n_agents ? t->n_agents : 1) * sizeof *ids);
    resp->agents = az_arena_alloc(a, (t->n_agents ? t->n_agents : 1) * sizeof *resp->agents);
    if (!ids || !resp->agents) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    resp->n_agents = 0;
    az_err err;
    for (size_t i = 0; i < t->n_agents; i++) {
        Agentz__V1__Agent g = *t->agents[i];
        g.name = az_arena_printf(a, "%s-%s", name, t->agents[i]->name);
        if (!g.name) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        if (strlen(g.name) > AZ_AGENT_NAME_MAX)
            return az_fail(msg, AZ_ERR_INVALID,
                           "name: too long: agent name \"%.40s…\" would exceed %d characters", g.name,
                           AZ_AGENT_NAME_MAX);
        Agentz__V1__Agent *created;
        if ((err = az_agent_insert(c, ctx, &g, a, &created, msg)) != AZ_OK) return err;
        ids[i] = created->id;
        resp->agents[resp->n_agents++] = created;
    }
    const Agentz__V1__Workflow *tw = t->workflow;
    Agentz__V1__Workflow w = *tw;
    w.name = (char *)name;
    w.steps = az_arena_alloc(a, (tw->n_steps ? tw->n_steps : 1) * sizeof *w.steps);
    if (!w.steps) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < tw->n_steps; i++) {
        Agentz__V1__Step *s = az_arena_alloc(a, sizeof *s);
        if (!s) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        *s = *tw->steps[i];
        for (size_t k = 0; k < t->n_agents; k++) {
            if (*s->agent_id && strcmp(s->agent_id, t->agents[k]->name) == 0) s->agent_id = (char *)ids[k];
        }
        w.steps[i] = s;
    }
    for (size_t k = 0; k < t->n_agents; k++) {
        if (*tw->manager_agent_id && strcmp(tw->manager_agent_id, t->agents[k]->name) == 0)
            w.manager_agent_id = (char *)ids[k];
    }
    return az_workflow_insert(c, ctx, wf_id, &w, a, &resp->workflow, msg);
}

/* The first result of an earlier request: the workflow at version 1 and its agents. */
static az_err replay(az_pg *pg, const az_ctx *ctx, const char *wf_id, az_arena *a,
                     Agentz__V1__InstantiateTemplateResponse *resp, char *msg)
{
    az_err err = az_workflow_get(pg, ctx, wf_id, 1, a, &resp->workflow, msg);
    if (err != AZ_OK) return err;
    size_t n;
    const char **ids = referenced_agents(a, resp->workflow, &n);
    resp->agents = az_arena_alloc(a, (n ? n : 1) * sizeof *resp->agents);
    if (!ids || !resp->agents) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        Agentz__V1__Agent *g;
        err = az_agent_get(pg, ctx, ids[i], a, &g, msg);
        if (err == AZ_ERR_NOT_FOUND) continue; /* deleted since: report the rest */
        if (err != AZ_OK) return err;
        resp->agents[resp->n_agents++] = g;
    }
    return AZ_OK;
}

az_err az_template_instantiate(az_pg *pg, const az_ctx *ctx, const Agentz__V1__Template *t,
                               const char *name, const char *request_id, const char *request_hash,
                               az_arena *a, Agentz__V1__InstantiateTemplateResponse **out,
                               int *replayed, char *msg)
{
    *out = NULL;
    *replayed = 0;
    char wf_id[37], existing[37] = "";
    if (az_text_uuid4(wf_id) != AZ_OK) return az_fail(msg, AZ_ERR_IO, "cannot generate an id");
    Agentz__V1__InstantiateTemplateResponse *resp = az_arena_alloc(a, sizeof *resp);
    if (!resp) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    agentz__v1__instantiate_template_response__init(resp);
    int chosen = name && *name;
    const char *base = chosen ? name : t->workflow->name;
    az_pgconn *c;
    az_err err = az_pg_acquire(pg, ctx, &c, msg);
    if (err != AZ_OK) return err;
    if ((err = az_pg_begin(c, ctx, msg)) != AZ_OK) goto out;
    if (request_id && *request_id) {
        err = az_idem_claim(c, ctx, "InstantiateTemplate", request_id, request_hash, wf_id, existing,
                            msg);
        if (err != AZ_OK || existing[0]) {
            if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
            goto out;
        }
    }
    /* Each candidate name runs under a savepoint, so a taken name (a unique violation that
     * aborts the statement) only rolls back that attempt. */
    for (int k = 1; k <= (chosen ? 1 : NAME_ATTEMPTS); k++) {
        const char *candidate = k == 1 ? base : az_arena_printf(a, "%s-%d", base, k);
        if (!candidate) {
            err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
            break;
        }
        if ((err = az_pg_exec(c, ctx, "SAVEPOINT instantiate", 0, NULL, NULL, msg)) != AZ_OK) break;
        err = instantiate_as(c, ctx, t, candidate, wf_id, a, resp, msg);
        if (err != AZ_ERR_EXISTS) break;
        az_err rb = az_pg_exec(c, ctx, "ROLLBACK TO SAVEPOINT instantiate", 0, NULL, NULL, msg);
        if (rb != AZ_OK) {
            err = rb;
            break;
        }
        if (chosen) {
            err = az_fail(msg, AZ_ERR_EXISTS,
                          "name: \"%s\" is taken (a workflow of that name, or an agent named "
                          "\"%s-…\", exists)",
                          candidate, candidate);
            break;
        }
        err = az_fail(msg, AZ_ERR_EXISTS, "name: no free name from \"%s\" to \"%s-%d\"; give one",
                      base, base, NAME_ATTEMPTS);
    }
    if (err == AZ_OK) err = az_pg_commit(c, ctx, msg);
out:
    az_pg_release(c);
    if (err == AZ_OK && existing[0]) {
        err = replay(pg, ctx, existing, a, resp, msg);
        *replayed = err == AZ_OK;
    }
    if (err == AZ_OK) *out = resp;
    return err;
}
