/* SystemService against the real agentzd with authentication on: WhoAmI, the API key lifecycle
 * (a new key works, is refused after revocation, cannot exceed its creator's role), secrets that
 * are never returned nor found in the log, the database or its files, the audit log of mutating
 * and refused calls, `agentzd admin` (create-key, verify-audit) beside a running server, and
 * StreamMetrics (snapshots every interval with the calls made, health and workers). */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/event.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/system.pb-c.h"
#include "daemon/admin.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "harness.h"
#include "store/pgpool.h"

#define SVC "/agentz.v1.SystemService/"

static az_itest_server srv;
static az_conn *conn; /* the local admin key: ROLE_OWNER of the default workspace */
static az_pg *db;     /* the server's database, through its socket */
static char last_msg[AZ_MSG_MAX];
static const char *uniq;
static char canary[96];      /* a secret value that must never show up anywhere */
static char secret_name[64]; /* its name */
static char revoked_id[40];  /* an editor key revoked by the lifecycle test */
static char admin_key_id[40];

/* ---------------------------------------------------------------- helpers */

static int call_on(az_conn *c, const char *method, const void *req, const ProtobufCMessageDescriptor *d,
                   void **out)
{
    ProtobufCMessage *resp = NULL;
    int status = -1;
    last_msg[0] = '\0';
    az_conn_unary(c, method, req, d, 10000, NULL, &resp, &status, last_msg);
    if (out) *out = resp;
    else if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

static int call(const char *method, const void *req, const ProtobufCMessageDescriptor *d, void **out)
{
    return call_on(conn, method, req, d, out);
}

static void free_msg(void *m)
{
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

/* 1 when the packed message contains needle: what a client could ever read. */
static int packed_contains(const void *m, const char *needle)
{
    if (!m) return 0;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n + 1);
    protobuf_c_message_pack(m, buf);
    int found = memmem(buf, n, needle, strlen(needle)) != NULL;
    free(buf);
    return found;
}

static Agentz__V1__CreateApiKeyResponse *create_key(az_conn *c, const char *name, int role, int *status)
{
    Agentz__V1__CreateApiKeyRequest req = AGENTZ__V1__CREATE_API_KEY_REQUEST__INIT;
    req.name = (char *)name;
    req.role = role;
    void *out = NULL;
    *status = call_on(c, SVC "CreateApiKey", &req, &agentz__v1__create_api_key_response__descriptor, &out);
    return out;
}

static Agentz__V1__WhoAmIResponse *whoami(az_conn *c, int *status)
{
    Agentz__V1__WhoAmIRequest req = AGENTZ__V1__WHO_AM_IREQUEST__INIT;
    void *out = NULL;
    *status = call_on(c, SVC "WhoAmI", &req, &agentz__v1__who_am_iresponse__descriptor, &out);
    return out;
}

static long db_long(const char *sql, const char *p1)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (!db || az_pg_acquire(db, &ctx, &c, m) != AZ_OK) return -1;
    const char *p[1] = {p1};
    PGresult *r = NULL;
    long v = -1;
    if (az_pg_exec(c, &ctx, sql, p1 ? 1 : 0, p, &r, m) == AZ_OK && PQntuples(r) == 1) v = atol(PQgetvalue(r, 0, 0));
    else fprintf(stderr, "\n  %s: %s\n", sql, m);
    PQclear(r);
    az_pg_release(c);
    return v;
}

static int db_run(const char *sql)
{
    az_ctx ctx = {.deadline_ms = -1};
    az_pgconn *c;
    char m[AZ_MSG_MAX];
    if (!db || az_pg_acquire(db, &ctx, &c, m) != AZ_OK) return -1;
    PGresult *r = PQexec(az_pg_raw(c), sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) fprintf(stderr, "\n  %s: %s\n", sql, PQresultErrorMessage(r));
    PQclear(r);
    az_pg_release(c);
    return ok ? 0 : -1;
}

/* Runs `$AGENTZD admin <args> --data-dir <dir>`; stdout into out (cap bytes); returns the exit code. */
static int run_admin(const char *args, char *out, size_t cap)
{
    const char *bin = getenv("AGENTZD");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s admin %s --data-dir '%s' 2>/dev/null", bin ? bin : "build/bin/agentzd", args,
             srv.data_dir);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Entries of ListAuditLog for method (newest first), waiting up to 5 s for want of them: the
 * writer is asynchronous. */
static Agentz__V1__ListAuditLogResponse *audit_entries(const char *method, size_t want)
{
    for (int i = 0; i < 50; i++) {
        Agentz__V1__ListAuditLogRequest req = AGENTZ__V1__LIST_AUDIT_LOG_REQUEST__INIT;
        req.method = (char *)method;
        req.page_size = 1000;
        void *out = NULL;
        int st = call(SVC "ListAuditLog", &req, &agentz__v1__list_audit_log_response__descriptor, &out);
        Agentz__V1__ListAuditLogResponse *r = out;
        if (st == 0 && r->n_entries >= want) return r;
        free_msg(out);
        if (st != 0) return NULL;
        usleep(100000);
    }
    return NULL;
}

static const Agentz__V1__AuditEntry *find_entry(const Agentz__V1__ListAuditLogResponse *r, const char *target,
                                                const char *outcome)
{
    for (size_t i = 0; r && i < r->n_entries; i++) {
        if ((!target || strcmp(r->entries[i]->target_id, target) == 0) &&
            strcmp(r->entries[i]->outcome, outcome) == 0)
            return r->entries[i];
    }
    return NULL;
}

/* Searches every regular file under dir for needle; returns the number of files holding it. */
static int grep_tree(const char *dir, const char *needle, char *where, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int hits = 0;
    struct dirent *e;
    char *buf = malloc(1 << 20);
    size_t nl = strlen(needle);
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            hits += grep_tree(path, needle, where, cap);
            continue;
        }
        if (!S_ISREG(st.st_mode)) continue;
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        size_t keep = 0;
        ssize_t n;
        /* Overlapping chunks so a match across a chunk boundary is found too. */
        while ((n = read(fd, buf + keep, (1 << 20) - keep)) > 0) {
            size_t len = keep + (size_t)n;
            if (memmem(buf, len, needle, nl)) {
                hits++;
                snprintf(where, cap, "%s", path);
                break;
            }
            keep = len < nl ? len : nl - 1;
            memmove(buf, buf + len - keep, keep);
        }
        close(fd);
    }
    free(buf);
    closedir(d);
    return hits;
}

/* ---------------------------------------------------------------- whoami */

static void test_whoami(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(az_itest_admin_key(&srv));
    int st;
    Agentz__V1__WhoAmIResponse *w = whoami(conn, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_EQUAL(strncmp(w->principal, "key:", 4), 0);
    snprintf(admin_key_id, sizeof admin_key_id, "%s", w->principal + 4);
    CU_ASSERT_STRING_EQUAL(w->workspace_id, "00000000-0000-0000-0000-000000000001");
    CU_ASSERT_EQUAL(w->role, AGENTZ__V1__ROLE__ROLE_OWNER);
    CU_ASSERT_EQUAL(w->auth_method, AGENTZ__V1__AUTH_METHOD__AUTH_METHOD_API_KEY);
    free_msg(w);
    /* No credentials: refused, and so is a made-up key. */
    az_conn *anon = az_itest_connect_token(&srv, NULL);
    w = whoami(anon, &st);
    CU_ASSERT_EQUAL(st, 16);
    free_msg(w);
    az_conn_free(anon);
    az_conn *fake = az_itest_connect_token(&srv, "agz_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    w = whoami(fake, &st);
    CU_ASSERT_EQUAL(st, 16);
    free_msg(w);
    az_conn_free(fake);
}

/* ---------------------------------------------------------------- api keys */

static void test_api_key_lifecycle(void)
{
    char name[64];
    snprintf(name, sizeof name, "ci-editor-%s", uniq);
    int st;
    Agentz__V1__CreateApiKeyResponse *k = create_key(conn, name, AGENTZ__V1__ROLE__ROLE_EDITOR, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT_EQUAL(strncmp(k->key, "agz_", 4), 0);
    CU_ASSERT_EQUAL(strlen(k->key), 47);
    CU_ASSERT_EQUAL(strncmp(k->api_key->prefix, k->key, strlen(k->api_key->prefix)), 0);
    CU_ASSERT_EQUAL(k->api_key->role, AGENTZ__V1__ROLE__ROLE_EDITOR);
    char key[64], id[40];
    snprintf(key, sizeof key, "%s", k->key);
    snprintf(id, sizeof id, "%s", k->api_key->id);
    free_msg(k);

    /* The new key works on a second connection, as itself. */
    az_conn *c2 = az_itest_connect_token(&srv, key);
    Agentz__V1__WhoAmIResponse *w = whoami(c2, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    char principal[64];
    snprintf(principal, sizeof principal, "key:%s", id);
    CU_ASSERT_STRING_EQUAL(w->principal, principal);
    CU_ASSERT_EQUAL(w->role, AGENTZ__V1__ROLE__ROLE_EDITOR);
    free_msg(w);
    /* An editor may not manage keys. */
    k = create_key(c2, "nope", AGENTZ__V1__ROLE__ROLE_VIEWER, &st);
    CU_ASSERT_EQUAL(st, 7);
    free_msg(k);

    /* Listed, never with the key text. */
    Agentz__V1__ListApiKeysRequest lreq = AGENTZ__V1__LIST_API_KEYS_REQUEST__INIT;
    lreq.page_size = 1000;
    void *out = NULL;
    CU_ASSERT_EQUAL(call(SVC "ListApiKeys", &lreq, &agentz__v1__list_api_keys_response__descriptor, &out), 0);
    Agentz__V1__ListApiKeysResponse *list = out;
    int found = 0;
    for (size_t i = 0; list && i < list->n_api_keys; i++) found += strcmp(list->api_keys[i]->id, id) == 0;
    CU_ASSERT_EQUAL(found, 1);
    CU_ASSERT_FALSE(packed_contains(list, key + 4));
    free_msg(out);

    /* Revoked: refused at once; revoking again succeeds. */
    Agentz__V1__RevokeApiKeyRequest rreq = AGENTZ__V1__REVOKE_API_KEY_REQUEST__INIT;
    rreq.id = id;
    out = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "RevokeApiKey", &rreq, &agentz__v1__api_key__descriptor, &out), 0);
    CU_ASSERT_PTR_NOT_NULL(((Agentz__V1__ApiKey *)out)->revoke_time);
    free_msg(out);
    w = whoami(c2, &st);
    CU_ASSERT_EQUAL(st, 16);
    free_msg(w);
    CU_ASSERT_EQUAL(call(SVC "RevokeApiKey", &rreq, &agentz__v1__api_key__descriptor, NULL), 0);
    rreq.id = "00000000-0000-0000-0000-00000000dead";
    CU_ASSERT_EQUAL(call(SVC "RevokeApiKey", &rreq, &agentz__v1__api_key__descriptor, NULL), 5);
    snprintf(revoked_id, sizeof revoked_id, "%s", id);
    az_conn_free(c2);
}

static void test_api_key_role_ceiling_and_validation(void)
{
    int st;
    Agentz__V1__CreateApiKeyResponse *k = create_key(conn, "ci-admin", AGENTZ__V1__ROLE__ROLE_ADMIN, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    az_conn *adm = az_itest_connect_token(&srv, k->key);
    free_msg(k);
    /* An admin may mint admins, not owners. */
    k = create_key(adm, "ci-owner", AGENTZ__V1__ROLE__ROLE_OWNER, &st);
    CU_ASSERT_EQUAL(st, 7);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "role"));
    free_msg(k);
    k = create_key(adm, "ci-admin-2", AGENTZ__V1__ROLE__ROLE_ADMIN, &st);
    CU_ASSERT_EQUAL(st, 0);
    free_msg(k);
    az_conn_free(adm);

    k = create_key(conn, "", AGENTZ__V1__ROLE__ROLE_VIEWER, &st);
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "name"));
    k = create_key(conn, "x", AGENTZ__V1__ROLE__ROLE_UNSPECIFIED, &st);
    CU_ASSERT_EQUAL(st, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "role"));
    Agentz__V1__CreateApiKeyRequest req = AGENTZ__V1__CREATE_API_KEY_REQUEST__INIT;
    Google__Protobuf__Timestamp past = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    past.seconds = time(NULL) - 60;
    req.name = "expired";
    req.role = AGENTZ__V1__ROLE__ROLE_VIEWER;
    req.expire_time = &past;
    CU_ASSERT_EQUAL(call(SVC "CreateApiKey", &req, &agentz__v1__create_api_key_response__descriptor, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "expire_time"));

    /* Idempotent by request_id: the retry gets the same key's description, not its text. */
    char rid[64];
    snprintf(rid, sizeof rid, "rid-%s", uniq);
    req.expire_time = NULL;
    req.name = "idem";
    req.request_id = rid;
    void *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "CreateApiKey", &req, &agentz__v1__create_api_key_response__descriptor, &a), 0);
    CU_ASSERT_EQUAL_FATAL(call(SVC "CreateApiKey", &req, &agentz__v1__create_api_key_response__descriptor, &b), 0);
    Agentz__V1__CreateApiKeyResponse *ka = a, *kb = b;
    CU_ASSERT_STRING_EQUAL(ka->api_key->id, kb->api_key->id);
    CU_ASSERT_EQUAL(strlen(ka->key), 47);
    CU_ASSERT_STRING_EQUAL(kb->key, "");
    free_msg(a);
    free_msg(b);
}

/* ---------------------------------------------------------------- secrets */

static void test_secrets_lifecycle(void)
{
    Agentz__V1__CreateSecretRequest req = AGENTZ__V1__CREATE_SECRET_REQUEST__INIT;
    req.name = secret_name;
    req.value = canary;
    void *out = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "CreateSecret", &req, &agentz__v1__secret__descriptor, &out), 0);
    Agentz__V1__Secret *s = out;
    CU_ASSERT_STRING_EQUAL(s->name, secret_name);
    CU_ASSERT_PTR_NOT_NULL(s->create_time);
    CU_ASSERT_FALSE(packed_contains(s, canary));
    free_msg(out);
    /* Replacing is an upsert. */
    CU_ASSERT_EQUAL(call(SVC "CreateSecret", &req, &agentz__v1__secret__descriptor, NULL), 0);

    Agentz__V1__ListSecretsRequest lreq = AGENTZ__V1__LIST_SECRETS_REQUEST__INIT;
    lreq.page_size = 1000;
    out = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListSecrets", &lreq, &agentz__v1__list_secrets_response__descriptor, &out), 0);
    Agentz__V1__ListSecretsResponse *l = out;
    int found = 0;
    for (size_t i = 0; i < l->n_secrets; i++) found += strcmp(l->secrets[i]->name, secret_name) == 0;
    CU_ASSERT_EQUAL(found, 1);
    CU_ASSERT_FALSE(packed_contains(l, canary));
    free_msg(out);

    req.name = "bad name!";
    CU_ASSERT_EQUAL(call(SVC "CreateSecret", &req, &agentz__v1__secret__descriptor, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "name"));
    CU_ASSERT_PTR_NULL(strstr(last_msg, canary));
    req.name = secret_name;
    req.value = "";
    CU_ASSERT_EQUAL(call(SVC "CreateSecret", &req, &agentz__v1__secret__descriptor, NULL), 3);

    /* A throwaway one to delete. */
    char gone[80];
    snprintf(gone, sizeof gone, "%s.gone", secret_name);
    req.name = gone;
    req.value = "short-lived";
    CU_ASSERT_EQUAL(call(SVC "CreateSecret", &req, &agentz__v1__secret__descriptor, NULL), 0);
    Agentz__V1__DeleteSecretRequest dreq = AGENTZ__V1__DELETE_SECRET_REQUEST__INIT;
    dreq.name = gone;
    CU_ASSERT_EQUAL(call(SVC "DeleteSecret", &dreq, &google__protobuf__empty__descriptor, NULL), 0);
    CU_ASSERT_EQUAL(call(SVC "DeleteSecret", &dreq, &google__protobuf__empty__descriptor, NULL), 5);

    /* A viewer may not even list them. */
    int st;
    Agentz__V1__CreateApiKeyResponse *k = create_key(conn, "ci-viewer", AGENTZ__V1__ROLE__ROLE_VIEWER, &st);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    az_conn *viewer = az_itest_connect_token(&srv, k->key);
    free_msg(k);
    CU_ASSERT_EQUAL(call_on(viewer, SVC "ListSecrets", &lreq, &agentz__v1__list_secrets_response__descriptor, NULL), 7);
    Agentz__V1__ListAuditLogRequest areq = AGENTZ__V1__LIST_AUDIT_LOG_REQUEST__INIT;
    CU_ASSERT_EQUAL(call_on(viewer, SVC "ListAuditLog", &areq, &agentz__v1__list_audit_log_response__descriptor, NULL), 7);
    az_conn_free(viewer);
}

static void test_secret_value_nowhere(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    /* Not in any row of the tables that saw the request. */
    CU_ASSERT_EQUAL(db_long("SELECT count(*) FROM secrets t WHERE position($1 in t::text) > 0", canary), 0);
    CU_ASSERT_EQUAL(db_long("SELECT count(*) FROM secrets WHERE position(convert_to($1, 'UTF8') in ciphertext) > 0",
                            canary), 0);
    CU_ASSERT_EQUAL(db_long("SELECT count(*) FROM idempotency_keys t WHERE position($1 in t::text) > 0", canary), 0);
    CU_ASSERT_EQUAL(db_long("SELECT count(*) FROM audit_log t WHERE position($1 in t::text) > 0", canary), 0);
    CU_ASSERT_EQUAL(db_long("SELECT count(*) FROM secrets WHERE name = $1", secret_name), 1);
    /* Not in the server's log, nor in any file under the data dir (tables, WAL, logs). */
    char where[1024] = "";
    CU_ASSERT_EQUAL(db_run("CHECKPOINT"), 0);
    int in_log = grep_tree(srv.data_dir, canary, where, sizeof where);
    if (in_log) fprintf(stderr, "\n  the secret value is in %s\n", where);
    CU_ASSERT_EQUAL(in_log, 0);
    FILE *f = fopen(srv.log_path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char line[4096];
    int hits = 0;
    while (fgets(line, sizeof line, f)) hits += strstr(line, canary) != NULL;
    fclose(f);
    CU_ASSERT_EQUAL(hits, 0);
}

/* ---------------------------------------------------------------- audit log */

static void test_audit_entries(void)
{
    /* Mutating calls, with their targets. */
    Agentz__V1__ListAuditLogResponse *r = audit_entries(SVC "CreateSecret", 1);
    const Agentz__V1__AuditEntry *e = find_entry(r, secret_name, "OK");
    CU_ASSERT_PTR_NOT_NULL(e);
    if (e) {
        CU_ASSERT_STRING_EQUAL(e->workspace_id, "00000000-0000-0000-0000-000000000001");
        CU_ASSERT_EQUAL(strncmp(e->principal, "key:", 4), 0);
        CU_ASSERT_EQUAL(strncmp(e->peer, "ipv", 3), 0);
        CU_ASSERT_EQUAL(strlen(e->hash), 64);
        CU_ASSERT_NOT_EQUAL(e->request_id[0], '\0');
    }
    CU_ASSERT_PTR_NOT_NULL(find_entry(r, NULL, "INVALID_ARGUMENT")); /* failures of mutating calls too */
    free_msg(r);
    r = audit_entries(SVC "RevokeApiKey", 1);
    CU_ASSERT_PTR_NOT_NULL(find_entry(r, revoked_id, "OK"));
    CU_ASSERT_PTR_NOT_NULL(find_entry(r, NULL, "NOT_FOUND"));
    free_msg(r);
    r = audit_entries(SVC "DeleteSecret", 2);
    CU_ASSERT_PTR_NOT_NULL(find_entry(r, NULL, "OK"));
    free_msg(r);
    /* Refusals: the admin key's PERMISSION_DENIED names who was denied. */
    r = audit_entries(SVC "CreateApiKey", 1);
    const Agentz__V1__AuditEntry *denied = find_entry(r, NULL, "PERMISSION_DENIED");
    CU_ASSERT_PTR_NOT_NULL(denied);
    if (denied) CU_ASSERT_EQUAL(strncmp(denied->principal, "key:", 4), 0);
    free_msg(r);
    /* Read-only calls that succeed are not recorded... */
    r = audit_entries(SVC "WhoAmI", 0);
    CU_ASSERT_PTR_NULL(find_entry(r, NULL, "OK"));
    free_msg(r);
    /* ...refused ones are, even without a workspace (visible to operators, not to tenants). */
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    long unauth = 0;
    for (int i = 0; i < 50 && unauth < 1; i++, usleep(100000))
        unauth = db_long("SELECT count(*) FROM audit_log WHERE outcome = 'UNAUTHENTICATED' AND method = $1", SVC "WhoAmI");
    CU_ASSERT(unauth >= 1);
    /* Filters and pagination over the API. */
    Agentz__V1__ListAuditLogRequest req = AGENTZ__V1__LIST_AUDIT_LOG_REQUEST__INIT;
    req.page_size = 2;
    void *out = NULL;
    CU_ASSERT_EQUAL_FATAL(call(SVC "ListAuditLog", &req, &agentz__v1__list_audit_log_response__descriptor, &out), 0);
    Agentz__V1__ListAuditLogResponse *p1 = out;
    CU_ASSERT_EQUAL(p1->n_entries, 2);
    CU_ASSERT(atol(p1->entries[0]->id) > atol(p1->entries[1]->id)); /* newest first */
    CU_ASSERT_NOT_EQUAL(p1->next_page_token[0], '\0');
    req.page_token = p1->next_page_token;
    void *out2 = NULL;
    CU_ASSERT_EQUAL(call(SVC "ListAuditLog", &req, &agentz__v1__list_audit_log_response__descriptor, &out2), 0);
    if (out2) CU_ASSERT(atol(((Agentz__V1__ListAuditLogResponse *)out2)->entries[0]->id) < atol(p1->entries[1]->id));
    req.method = SVC "CreateSecret"; /* the token belongs to other filters */
    CU_ASSERT_EQUAL(call(SVC "ListAuditLog", &req, &agentz__v1__list_audit_log_response__descriptor, NULL), 3);
    free_msg(out);
    free_msg(out2);
    Google__Protobuf__Timestamp t1 = GOOGLE__PROTOBUF__TIMESTAMP__INIT, t0 = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    t1.seconds = 100;
    t0.seconds = 50;
    Agentz__V1__ListAuditLogRequest bad = AGENTZ__V1__LIST_AUDIT_LOG_REQUEST__INIT;
    bad.start_time = &t1;
    bad.end_time = &t0;
    CU_ASSERT_EQUAL(call(SVC "ListAuditLog", &bad, &agentz__v1__list_audit_log_response__descriptor, NULL), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "end_time"));
}

/* ---------------------------------------------------------------- agentzd admin */

static void test_admin_commands(void)
{
    char out[4096];
    /* create-key beside the running server, through its socket. */
    int rc = run_admin("create-key --role viewer --name ci-cli", out, sizeof out);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    out[strcspn(out, "\n")] = '\0';
    CU_ASSERT_EQUAL(strlen(out), 47);
    az_conn *c = az_itest_connect_token(&srv, out);
    int st;
    Agentz__V1__WhoAmIResponse *w = whoami(c, &st);
    CU_ASSERT_EQUAL(st, 0);
    if (w) CU_ASSERT_EQUAL(w->role, AGENTZ__V1__ROLE__ROLE_VIEWER);
    free_msg(w);
    az_conn_free(c);
    CU_ASSERT_EQUAL(run_admin("create-key --role emperor", out, sizeof out), 2);
    CU_ASSERT_EQUAL(run_admin("frobnicate", out, sizeof out), 2);

    rc = run_admin("verify-audit", out, sizeof out);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(strncmp(out, "audit log intact: ", 18), 0);
    CU_ASSERT(atol(out + 18) > 0);

    /* Tamper with one row behind the trigger's back, see it reported, then put it back. */
    long id = db_long("SELECT max(id) - 1 FROM audit_log", NULL);
    CU_ASSERT_FATAL(id > 0);
    char sql[400], want[64];
    snprintf(sql, sizeof sql,
             "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;"
             " UPDATE audit_log SET outcome = outcome || '!' WHERE id = %ld;"
             " ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change", id);
    CU_ASSERT_EQUAL_FATAL(db_run(sql), 0);
    rc = run_admin("verify-audit", out, sizeof out);
    CU_ASSERT_EQUAL(rc, 1);
    snprintf(want, sizeof want, "audit log tampered at row %ld\n", id);
    CU_ASSERT_STRING_EQUAL(out, want);
    snprintf(sql, sizeof sql,
             "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;"
             " UPDATE audit_log SET outcome = rtrim(outcome, '!') WHERE id = %ld;"
             " ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change", id);
    CU_ASSERT_EQUAL(db_run(sql), 0);
    CU_ASSERT_EQUAL(run_admin("verify-audit", out, sizeof out), 0);
    /* The server cannot change it either. */
    CU_ASSERT_NOT_EQUAL(db_run("DELETE FROM audit_log WHERE id = 1"), 0);
}

/* ---------------------------------------------------------------- metrics */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static az_conn_stream *open_metrics(int64_t seconds, int32_t nanos, int timeout_ms, int *status)
{
    Agentz__V1__StreamMetricsRequest req = AGENTZ__V1__STREAM_METRICS_REQUEST__INIT;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = seconds;
    d.nanos = nanos;
    req.interval = &d;
    az_conn_stream *st = NULL;
    last_msg[0] = '\0';
    *status = -1;
    az_conn_stream_open(conn, SVC "StreamMetrics", &req.base, &agentz__v1__event__descriptor, timeout_ms,
                        NULL, &st, status, last_msg);
    return st;
}

static const Agentz__V1__MethodStats *method_stats(const Agentz__V1__MetricsSnapshot *m, const char *method)
{
    for (size_t i = 0; i < m->n_methods; i++)
        if (strcmp(m->methods[i]->method, method) == 0) return m->methods[i];
    return NULL;
}

/* A task that ends at once (created, then cancelled): counted by tasks_per_minute. */
static void finish_one_task(void)
{
    Agentz__V1__Agent a = AGENTZ__V1__AGENT__INIT;
    a.role = "Metrics probe";
    a.goal = "Be counted";
    a.backstory = "Exists for one test.";
    Agentz__V1__CreateAgentRequest ar = AGENTZ__V1__CREATE_AGENT_REQUEST__INIT;
    ar.agent = &a;
    Agentz__V1__Agent *agent = NULL;
    CU_ASSERT_EQUAL_FATAL(call("/agentz.v1.AgentService/CreateAgent", &ar, &agentz__v1__agent__descriptor,
                               (void **)&agent), 0);
    Agentz__V1__Task t = AGENTZ__V1__TASK__INIT;
    t.description = "Wait to be cancelled.";
    t.expected_output = "Nothing";
    t.agent_id = agent->id;
    Agentz__V1__CreateTaskRequest tr = AGENTZ__V1__CREATE_TASK_REQUEST__INIT;
    tr.task = &t;
    Agentz__V1__Task *task = NULL;
    CU_ASSERT_EQUAL_FATAL(call("/agentz.v1.TaskService/CreateTask", &tr, &agentz__v1__task__descriptor,
                               (void **)&task), 0);
    Agentz__V1__CancelTaskRequest cr = AGENTZ__V1__CANCEL_TASK_REQUEST__INIT;
    cr.id = task->id;
    cr.reason = "metrics test";
    int st = call("/agentz.v1.TaskService/CancelTask", &cr, &agentz__v1__task__descriptor, NULL);
    if (st != 0) {
        /* This agentzd is a worker too, with no model configured: it may have claimed the task
         * and failed it (llm_not_configured) first, which ends it just as well. */
        CU_ASSERT_EQUAL(st, 9); /* FAILED_PRECONDITION: already finished */
        Agentz__V1__GetTaskRequest gr = AGENTZ__V1__GET_TASK_REQUEST__INIT;
        gr.id = task->id;
        Agentz__V1__Task *now = NULL;
        CU_ASSERT_EQUAL_FATAL(call("/agentz.v1.TaskService/GetTask", &gr, &agentz__v1__task__descriptor,
                                   (void **)&now), 0);
        CU_ASSERT(now->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_FAILED ||
                  now->status == AGENTZ__V1__TASK_STATUS__TASK_STATUS_CANCELLED);
        free_msg(now);
    }
    free_msg(task);
    free_msg(agent);
}

static void test_stream_metrics(void)
{
    int status;
    az_conn_stream *st = open_metrics(1, 0, 20000, &status);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    /* The first snapshot proves the stream is registered (opening returns once the request is
     * sent); calls made after it show up in the next ones. */
    ProtobufCMessage *first = NULL;
    CU_ASSERT_EQUAL_FATAL(az_conn_stream_next(st, &first, &status, last_msg), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(first);
    protobuf_c_message_free_unpacked(first, NULL);
    double prev_at = mono_s(), gap_min = 1e9, gap_max = 0;
    Agentz__V1__WhoAmIRequest who = AGENTZ__V1__WHO_AM_IREQUEST__INIT;
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(call(SVC "WhoAmI", &who, &agentz__v1__who_am_iresponse__descriptor, NULL), 0);
    Agentz__V1__ListSecretsRequest ls = AGENTZ__V1__LIST_SECRETS_REQUEST__INIT;
    ls.page_size = -1; /* INVALID_ARGUMENT: counted as an error */
    CU_ASSERT_EQUAL(call(SVC "ListSecrets", &ls, &agentz__v1__list_secrets_response__descriptor, NULL), 3);
    finish_one_task();
    int64_t max_per_minute = 0;

    int seen_who = 0, seen_err = 0, snapshots = 0;
    for (int i = 0; i < 6; i++) {
        ProtobufCMessage *m = NULL;
        az_err err = az_conn_stream_next(st, &m, &status, last_msg);
        CU_ASSERT_EQUAL_FATAL(err, AZ_OK);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        double at = mono_s();
        if (at - prev_at < gap_min) gap_min = at - prev_at;
        if (at - prev_at > gap_max) gap_max = at - prev_at;
        prev_at = at;
        const Agentz__V1__Event *ev = (const void *)m;
        CU_ASSERT_EQUAL(ev->payload_case, AGENTZ__V1__EVENT__PAYLOAD_METRICS);
        CU_ASSERT_EQUAL(ev->sequence, 0);
        CU_ASSERT_PTR_NOT_NULL(ev->time);
        const Agentz__V1__MetricsSnapshot *ms = ev->metrics;
        CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
        snapshots++;
        CU_ASSERT(ms->postgres_ok);
        CU_ASSERT(ms->redis_ok);
        CU_ASSERT(ms->workers >= 1); /* this agentzd plays the worker role too */
        CU_ASSERT(ms->queue_depth >= 0 && ms->tasks_running >= 0 && ms->tasks_per_minute >= 0);
        if (ms->tasks_per_minute > max_per_minute) max_per_minute = (int64_t)ms->tasks_per_minute;
        for (size_t k = 1; k < ms->n_methods; k++)
            CU_ASSERT(strcmp(ms->methods[k - 1]->method, ms->methods[k]->method) < 0);
        const Agentz__V1__MethodStats *w = method_stats(ms, SVC "WhoAmI");
        if (w) {
            seen_who += (int)w->count;
            CU_ASSERT(ms->requests_per_second > 0);
            CU_ASSERT_EQUAL(w->errors, 0);
            CU_ASSERT(w->p50_ms > 0 && w->p99_ms >= w->p50_ms);
        }
        const Agentz__V1__MethodStats *e = method_stats(ms, SVC "ListSecrets");
        if (e) {
            seen_err += (int)e->errors;
            CU_ASSERT_EQUAL(e->errors, e->count);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (seen_who >= 20 && seen_err >= 1 && snapshots >= 3 && max_per_minute >= 1) break;
    }
    /* Every call counted once, across however many snapshots they fell into. */
    if (seen_who != 20) fprintf(stderr, "\n  WhoAmI calls seen in snapshots: %d\n", seen_who);
    CU_ASSERT_EQUAL(seen_who, 20);
    CU_ASSERT_EQUAL(seen_err, 1);
    CU_ASSERT(max_per_minute >= 1); /* the cancelled task, within the last minute */
    /* One snapshot a second. */
    CU_ASSERT(snapshots >= 3);
    CU_ASSERT(gap_min > 0.6);
    CU_ASSERT(gap_max < 1.8);
    az_conn_stream_close(st);
}

static void test_stream_metrics_interval(void)
{
    static const struct {
        int64_t s;
        int32_t ns;
    } bad[] = {{0, 500000000}, {61, 0}, {-1, 0}, {0, -5}, {100000000000LL, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int status;
        az_conn_stream *st = open_metrics(bad[i].s, bad[i].ns, 10000, &status);
        if (st) {
            ProtobufCMessage *m = NULL;
            az_conn_stream_next(st, &m, &status, last_msg);
            CU_ASSERT_PTR_NULL(m);
            if (m) protobuf_c_message_free_unpacked(m, NULL);
            az_conn_stream_close(st);
        }
        CU_ASSERT_EQUAL(status, 3); /* INVALID_ARGUMENT */
        CU_ASSERT_PTR_NOT_NULL(strstr(last_msg, "interval"));
    }
    /* The bounds themselves are fine: 60s sends nothing yet, so the deadline ends the call. */
    int status;
    az_conn_stream *st = open_metrics(60, 0, 1500, &status);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    ProtobufCMessage *m = NULL;
    az_conn_stream_next(st, &m, &status, last_msg);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(status, 4); /* DEADLINE_EXCEEDED */
    az_conn_stream_close(st);
}

static void test_stream_metrics_many(void)
{
    /* 100 streams of one workspace share one task-load query a second: PostgreSQL sees about
     * as many transactions as with one stream, not 100 times as many. */
    enum { N = 100, SECONDS = 5 };
    static az_conn_stream *st[N];
    const char *xacts = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()";
    int status;
    for (int i = 0; i < N; i++) {
        st[i] = open_metrics(1, 0, 30000, &status);
        CU_ASSERT_PTR_NOT_NULL_FATAL(st[i]);
    }
    /* Everyone's first snapshot: all registered. */
    for (int i = 0; i < N; i++) {
        ProtobufCMessage *m = NULL;
        CU_ASSERT_EQUAL_FATAL(az_conn_stream_next(st[i], &m, &status, last_msg), AZ_OK);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    long before = db_long(xacts, NULL);
    double t0 = mono_s();
    int got = 0;
    for (int round = 0; round < SECONDS; round++) {
        for (int i = 0; i < N; i++) {
            ProtobufCMessage *m = NULL;
            if (az_conn_stream_next(st[i], &m, &status, last_msg) == AZ_OK && m) {
                const Agentz__V1__Event *ev = (const void *)m;
                if (ev->metrics && ev->metrics->postgres_ok) got++;
                protobuf_c_message_free_unpacked(m, NULL);
            }
        }
    }
    double took = mono_s() - t0;
    long after = db_long(xacts, NULL);
    for (int i = 0; i < N; i++) az_conn_stream_close(st[i]);
    CU_ASSERT_EQUAL(got, N * SECONDS);
    CU_ASSERT(took < SECONDS + 2.0); /* every stream on time, none waiting on another */
    /* Uncached, the streams alone would be N * SECONDS = 500 statements. */
    fprintf(stderr, "\n  %d streams, %d s: %ld transactions in the database\n", N, SECONDS, after - before);
    CU_ASSERT(before >= 0 && after - before < N * SECONDS / 2);
}

/* Runs `agentz --server S top ARGS` with stdout in a file; after sigint_after_s (> 0) sends it
 * SIGINT. Returns the exit code (-1 when it had to be killed) and the output in out. */
static int run_top(const char *const *args, double sigint_after_s, char *out, size_t cap)
{
    const char *cli = getenv("AGENTZ_CLI");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cli);
    char path[700];
    const char *dir = getenv("AGENTZ_TEST_DIR");
    snprintf(path, sizeof path, "%s/top-%s.out", dir ? dir : "/tmp", uniq);
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)cli;
    argv[n++] = "--server";
    argv[n++] = srv.target;
    argv[n++] = "top";
    for (; *args && n < 15; args++) argv[n++] = (char *)*args;
    argv[n] = NULL;
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        char err_path[710];
        snprintf(err_path, sizeof err_path, "%s.err", path);
        int o = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0) _exit(126);
        dup2(o, 1);
        dup2(e, 2);
        if (srv.admin_key[0]) setenv("AGENTZ_TOKEN", srv.admin_key, 1);
        execv(cli, argv);
        _exit(127);
    }
    double start = mono_s();
    int status = 0, sent = 0, code = -1;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        double t = mono_s() - start;
        if (sigint_after_s > 0 && !sent && t >= sigint_after_s) {
            kill(pid, SIGINT);
            sent = 1;
        }
        if (t > 30) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        size_t got = fread(out, 1, cap - 1, f);
        out[got] = '\0';
        fclose(f);
    }
    return code;
}

static void test_top(void)
{
    char out[16384];
    /* Piped: one line per snapshot; --count ends it. */
    static const char *const counted[] = {"--interval", "1s", "--count", "2", NULL};
    CU_ASSERT_EQUAL(run_top(counted, 0, out, sizeof out), 0);
    int lines = 0;
    for (const char *p = out; (p = strstr(p, " req/s=")); p++) lines++;
    CU_ASSERT_EQUAL(lines, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "postgres=ok redis=ok"));
    CU_ASSERT_PTR_NULL(strstr(out, "workers=0 "));
    /* -o json: one event per line. */
    static const char *const json[] = {"--interval", "1s", "--count", "1", "-o", "json", NULL};
    CU_ASSERT_EQUAL(run_top(json, 0, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"metrics\":{"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"postgresOk\":true"));
    /* Ctrl-C ends it cleanly, after what it had shown. */
    static const char *const forever[] = {"--interval", "1s", NULL};
    CU_ASSERT_EQUAL(run_top(forever, 2.6, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, " req/s="));
    /* The interval is checked before anything is sent. */
    static const char *const bad[] = {"--interval", "90s", NULL};
    CU_ASSERT_EQUAL(run_top(bad, 0, out, sizeof out), 2);
}

/* ---------------------------------------------------------------- suite */

static int suite_init(void)
{
    uniq = az_itest_unique();
    snprintf(secret_name, sizeof secret_name, "openai_%s", uniq);
    snprintf(canary, sizeof canary, "sk-CANARY-%s-never-shown", uniq);
    if (az_itest_start(&srv, "system", NULL) != 0) return -1;
    conn = az_itest_connect(&srv);
    char url[8192], m[AZ_MSG_MAX];
    if (az_admin_running_url(srv.data_dir, url, sizeof url, m) != AZ_OK || az_pg_new(url, 2, 10000, &db, m) != AZ_OK)
        fprintf(stderr, "cannot reach the server's database: %s\n", m);
    return 0;
}

static int suite_clean(void)
{
    az_pg_free(db);
    az_conn_free(conn);
    int rc = az_itest_stop(&srv, SIGTERM, 30);
    if (rc != 0) {
        fprintf(stderr, "agentzd exited with %d\n", rc);
        az_itest_dump_log(&srv, 30);
    }
    return rc == 0 ? 0 : -1;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("system", suite_init, suite_clean);
    CU_add_test(s, "whoami", test_whoami);
    CU_add_test(s, "api key lifecycle", test_api_key_lifecycle);
    CU_add_test(s, "api key role ceiling, validation, idempotency", test_api_key_role_ceiling_and_validation);
    CU_add_test(s, "secrets lifecycle", test_secrets_lifecycle);
    CU_add_test(s, "secret value is nowhere", test_secret_value_nowhere);
    CU_add_test(s, "audit entries", test_audit_entries);
    CU_add_test(s, "agentzd admin", test_admin_commands);
    CU_add_test(s, "stream metrics", test_stream_metrics);
    CU_add_test(s, "stream metrics interval", test_stream_metrics_interval);
    CU_add_test(s, "stream metrics: 100 streams, one query", test_stream_metrics_many);
    CU_add_test(s, "agentz top", test_top);
    return az_itest_run_cunit();
}
