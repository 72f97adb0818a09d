/* agentzd admin: a table of subcommands sharing one way to reach the database (a URL, the socket
 * of the embedded cluster a running agentzd serves, or an embedded cluster started for the
 * command), and the local admin key file written at the embedded default's first start. */
#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "auth/apikey.h"
#include "auth/workspace.h"
#include "core/ctx.h"
#include "core/log.h"
#include "core/text.h"
#include "embed/embedded.h"
#include "secret/secret.h"
#include "store/migrate.h"

#define DEFAULT_DATA_DIR "./.agentz" /* as server/daemon/config.c */
#define PG_SOCK_NAME ".s.PGSQL.5432"
#define KEY_FILE "admin.key"
#define LOCAL_KEY_NAME "local admin"
#define EXIT_OK 0
#define EXIT_NO 1
#define EXIT_ERR 2

/* ---------------------------------------------------------------- options */

typedef struct admin_opts {
    const char *data_dir, *database_url;
    const char *workspace, *role, *name, *expires;
} admin_opts;

static const struct flag {
    const char *name;
    size_t off;
} flags[] = {
    {"data-dir", offsetof(admin_opts, data_dir)},   {"database-url", offsetof(admin_opts, database_url)},
    {"workspace", offsetof(admin_opts, workspace)}, {"role", offsetof(admin_opts, role)},
    {"name", offsetof(admin_opts, name)},           {"expires", offsetof(admin_opts, expires)},
};

/* --flag value or --flag=value; returns 0 or -1 after printing why. */
static int parse_flags(int argc, char **argv, admin_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "agentzd admin: unexpected argument \"%s\"\n", arg);
            return -1;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        const struct flag *f = NULL;
        for (size_t k = 0; k < sizeof flags / sizeof *flags; k++) {
            if (strlen(flags[k].name) == len && strncmp(flags[k].name, arg + 2, len) == 0) f = &flags[k];
        }
        if (!f) {
            fprintf(stderr, "agentzd admin: unknown flag %.*s\n", (int)len + 2, arg);
            return -1;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            fprintf(stderr, "agentzd admin: --%s needs a value\n", f->name);
            return -1;
        }
        *(const char **)((char *)o + f->off) = val;
    }
    return 0;
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

/* ---------------------------------------------------------------- the database */

az_err az_admin_running_url(const char *data_dir, char *url, size_t cap, char *msg)
{
    char dir[PATH_MAX], sock[PATH_MAX], path[PATH_MAX + 32];
    if (!data_dir || !realpath(data_dir, dir))
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "no data dir %s", data_dir ? data_dir : "");
    /* embedded.c records a socket dir outside the data dir (long paths) in run/socket_dir. */
    if (snprintf(sock, sizeof sock, "%s/run", dir) >= (int)sizeof sock ||
        snprintf(path, sizeof path, "%s/run/socket_dir", dir) >= (int)sizeof path)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long: %s", dir);
    FILE *f = fopen(path, "re");
    if (f) {
        if (fgets(sock, sizeof sock, f)) sock[strcspn(sock, "\n")] = '\0';
        fclose(f);
    }
    struct stat st;
    if (snprintf(path, sizeof path, "%s/" PG_SOCK_NAME, sock) >= (int)sizeof path || stat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "no postgresql socket in %s", sock);
    static const char hex[] = "0123456789ABCDEF";
    char host[PATH_MAX * 3];
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)sock; *c && n + 4 < sizeof host; c++) {
        if (isalnum(*c) || strchr("-._~/", *c)) {
            host[n++] = (char)*c;
        } else {
            host[n++] = '%';
            host[n++] = hex[*c >> 4];
            host[n++] = hex[*c & 15];
        }
    }
    host[n] = '\0';
    char ping[sizeof host + 96];
    snprintf(ping, sizeof ping, "postgresql:///agentz?host=%s&port=5432&user=agentz&connect_timeout=3", host);
    if (PQping(ping) != PQPING_OK)
        return az_fail(msg, AZ_ERR_UNAVAILABLE, "the postgresql socket in %s does not answer", sock);
    if ((size_t)snprintf(url, cap, "postgresql:///agentz?host=%s&port=5432&user=agentz", host) >= cap)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long: %s", dir);
    return AZ_OK;
}

typedef struct db {
    az_embed *embed;
    az_pg *pg;
    int external;
} db;

/* A URL wins; else the cluster of an agentzd running in the data dir; else one started now (which
 * takes the data dir's lock, so it fails clearly when another agentzd holds it). Migrates. */
static int db_open(const admin_opts *o, db *d)
{
    char msg[AZ_MSG_MAX], url[PATH_MAX * 3 + 96];
    const char *conninfo = o->database_url ? o->database_url : getenv("AGENTZ_DATABASE_URL");
    d->external = conninfo && *conninfo;
    if (!d->external) {
        if (az_admin_running_url(o->data_dir, url, sizeof url, msg) == AZ_OK) {
            conninfo = url;
        } else if (az_embed_start(o->data_dir, &d->embed, msg) != AZ_OK) {
            fprintf(stderr, "agentzd admin: cannot reach the embedded postgresql of %s: %s\n", o->data_dir, msg);
            return -1;
        } else {
            conninfo = az_embed_database_url(d->embed);
        }
    }
    if (az_pg_new(conninfo, 2, 30000, &d->pg, msg) != AZ_OK ||
        az_migrate(d->pg, az_migrations, az_migrations_count, NULL, msg) != AZ_OK) {
        fprintf(stderr, "agentzd admin: %s\n", msg);
        return -1;
    }
    return 0;
}

static void db_close(db *d)
{
    az_pg_free(d->pg);
    az_embed_stop(d->embed);
}

/* Operator actions are audited like API calls, as the local administrator. */
static void audit(az_pg *pg, const char *what, const char *workspace, const char *target)
{
    char msg[AZ_MSG_MAX];
    az_audit_entry e = {.principal = "local-admin", .workspace_id = workspace, .method = what,
                        .target_id = target, .outcome = "OK", .peer = "local"};
    if (az_audit_append(pg, &e, NULL, msg) != AZ_OK)
        fprintf(stderr, "agentzd admin: warning: cannot write the audit log: %s\n", msg);
}

/* ---------------------------------------------------------------- create-key */

static const struct {
    const char *name;
    int role;
} roles[] = {{"viewer", 1}, {"editor", 2}, {"admin", 3}, {"owner", 4}};

static int parse_role(const char *s)
{
    if (!s) return 0;
    if (strncasecmp(s, "ROLE_", 5) == 0) s += 5;
    for (size_t i = 0; i < sizeof roles / sizeof *roles; i++) {
        if (strcasecmp(s, roles[i].name) == 0) return roles[i].role;
    }
    return 0;
}

static const struct {
    char unit;
    int64_t us;
} units[] = {{'s', 1000000LL}, {'m', 60000000LL}, {'h', 3600000000LL}, {'d', 86400000000LL}, {'w', 604800000000LL}};

/* "30d", "12h", "90m", "3600s", "2w" or "never" into microseconds from now (0 = never). */
static int parse_expires(const char *s, int64_t *us)
{
    *us = 0;
    if (!s || strcmp(s, "never") == 0) return 0;
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || n <= 0 || n > 100000 || strlen(end) != 1) return -1;
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (*end == units[i].unit) {
            *us = n * units[i].us;
            return 0;
        }
    }
    return -1;
}

static int64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static int cmd_create_key(const admin_opts *o)
{
    int role = parse_role(o->role);
    if (!role) {
        fprintf(stderr, "agentzd admin create-key: --role must be viewer, editor, admin or owner\n");
        return EXIT_ERR;
    }
    int64_t ttl;
    if (parse_expires(o->expires, &ttl) != 0) {
        fprintf(stderr, "agentzd admin create-key: --expires: use a count and a unit (30d, 12h, 90m, 3600s, 2w) or never\n");
        return EXIT_ERR;
    }
    db d = {0};
    if (db_open(o, &d) != 0) {
        db_close(&d);
        return EXIT_ERR;
    }
    char msg[AZ_MSG_MAX], ws[37];
    az_err err = AZ_OK;
    const char *w = o->workspace ? o->workspace : AZ_DEFAULT_WORKSPACE;
    /* A uuid names the workspace itself; anything else is an external id (a Clerk org_id). */
    if (az_text_is_uuid(w)) snprintf(ws, sizeof ws, "%s", w);
    else err = az_workspace_resolve(d.pg, w, w, ws, msg);
    az_arena *a = az_arena_new(0);
    Agentz__V1__ApiKey *key = NULL;
    char *secret = NULL;
    if (err == AZ_OK && !a) err = az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (err == AZ_OK)
        err = az_apikey_create_in(d.pg, ws, o->name ? o->name : "agentzd admin", role, ttl ? now_us() + ttl : 0, a,
                                  &key, &secret, msg);
    int rc = EXIT_OK;
    if (err != AZ_OK) {
        fprintf(stderr, "agentzd admin create-key: %s\n", msg);
        rc = EXIT_ERR;
    } else {
        audit(d.pg, "agentzd admin create-key", ws, key->id);
        printf("%s\n", secret);
        fflush(stdout);
        fprintf(stderr, "created api key %s (%s, %s) in workspace %s%s; it is shown only this once\n", key->id,
                key->prefix, roles[role - 1].name, ws, ttl ? "" : ", never expires");
        OPENSSL_cleanse(secret, strlen(secret));
    }
    az_arena_free(a);
    db_close(&d);
    return rc;
}

/* ---------------------------------------------------------------- verify-audit */

static int cmd_verify_audit(const admin_opts *o)
{
    db d = {0};
    if (db_open(o, &d) != 0) {
        db_close(&d);
        return EXIT_ERR;
    }
    char msg[AZ_MSG_MAX] = "";
    int64_t rows = 0, bad = 0;
    int rc;
    if (az_audit_verify(d.pg, &rows, &bad, msg) != AZ_OK) {
        fprintf(stderr, "agentzd admin verify-audit: %s\n", msg);
        rc = EXIT_ERR;
    } else if (bad) {
        printf("audit log tampered at row %lld\n", (long long)bad);
        fprintf(stderr, "%s\n", msg);
        rc = EXIT_NO;
    } else {
        printf("audit log intact: %lld rows\n", (long long)rows);
        rc = EXIT_OK;
    }
    db_close(&d);
    return rc;
}

/* ---------------------------------------------------------------- rotate-secrets */

static int cmd_rotate_secrets(const admin_opts *o)
{
    db d = {0};
    if (db_open(o, &d) != 0) {
        db_close(&d);
        return EXIT_ERR;
    }
    char msg[AZ_MSG_MAX];
    az_secret_keyring *k = NULL;
    /* The same sources as agentzd; the data dir's master.key only for the embedded default. */
    char dir[PATH_MAX];
    const char *key_dir = !d.external && realpath(o->data_dir, dir) ? dir : NULL;
    int rc = EXIT_ERR;
    int64_t n = 0;
    if (az_secret_keyring_load(getenv("AGENTZ_MASTER_KEY"), getenv("AGENTZ_MASTER_KEY_FILE"),
                               getenv("AGENTZ_MASTER_KEY_PREVIOUS"), key_dir, &k, msg) != AZ_OK) {
        fprintf(stderr, "agentzd admin rotate-secrets: %s\n", msg);
    } else if (!k) {
        fprintf(stderr, "agentzd admin rotate-secrets: no master key: set AGENTZ_MASTER_KEY or AGENTZ_MASTER_KEY_FILE\n");
    } else if (az_secret_rotate(d.pg, k, &n, msg) != AZ_OK) {
        fprintf(stderr, "agentzd admin rotate-secrets: %s (%lld secrets were re-encrypted before)\n", msg,
                (long long)n);
    } else {
        audit(d.pg, "agentzd admin rotate-secrets", NULL, az_secret_keyring_key_id(k));
        printf("re-encrypted %lld secrets under master key %s\n", (long long)n, az_secret_keyring_key_id(k));
        rc = EXIT_OK;
    }
    az_secret_keyring_free(k);
    db_close(&d);
    return rc;
}

/* ---------------------------------------------------------------- dispatch */

static const struct command {
    const char *name;
    int (*run)(const admin_opts *);
    const char *usage;
} commands[] = {
    {"create-key", cmd_create_key,
     "create-key --role viewer|editor|admin|owner [--workspace UUID|EXTERNAL_ID] [--name N] [--expires 30d]\n"
     "      mints an API key (printed once on stdout); the workspace is created when missing"},
    {"verify-audit", cmd_verify_audit,
     "verify-audit\n"
     "      recomputes the audit log's hash chain: exit 0 when intact, 1 when tampered"},
    {"rotate-secrets", cmd_rotate_secrets,
     "rotate-secrets\n"
     "      re-encrypts every secret under AGENTZ_MASTER_KEY (old keys in AGENTZ_MASTER_KEY_PREVIOUS)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: agentzd admin COMMAND [--data-dir DIR | --database-url URL] [flags]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) fprintf(out, "  %s\n", commands[i].usage);
    fprintf(out,
            "\nThe database is --database-url (or AGENTZ_DATABASE_URL); without one, the embedded cluster\n"
            "under --data-dir (or AGENTZ_DATA_DIR, default " DEFAULT_DATA_DIR "): that of a running agentzd,\n"
            "or one started for the command.\n");
}

int az_admin_main(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "help") == 0) {
        usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? EXIT_ERR : EXIT_OK;
    }
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(argv[0], commands[i].name) == 0) cmd = &commands[i];
    }
    if (!cmd) {
        fprintf(stderr, "agentzd admin: unknown command \"%s\"\n", argv[0]);
        usage(stderr);
        return EXIT_ERR;
    }
    admin_opts o = {0};
    if (parse_flags(argc, argv, &o) != 0) return EXIT_ERR;
    if (!o.data_dir) o.data_dir = env_or("AGENTZ_DATA_DIR", DEFAULT_DATA_DIR);
    /* Commands print their own results; keep the embedded stack's progress lines out of them. */
    if (!az_log_enabled(AZ_LOG_DEBUG)) az_log_set_level(AZ_LOG_WARN);
    return cmd->run(&o);
}

/* ---------------------------------------------------------------- the local admin key */

/* Reads the key file's first line into buf; 0, or -1 when missing or unreadable. */
static int read_key(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    int ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

/* Writes key + newline to path through a 0600 temporary file and rename, so a crash never leaves a
 * half-written key and no other user can open it in between. */
static az_err write_key(const char *path, const char *key, char *msg)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return az_fail(msg, AZ_ERR_INVALID, "path is too long: %s", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return az_fail(msg, AZ_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    size_t len = strlen(key);
    int ok = fchmod(fd, 0600) == 0 && write(fd, key, len) == (ssize_t)len && write(fd, "\n", 1) == 1 &&
             fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) ok = 0, e = errno;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        unlink(tmp);
        return az_fail(msg, AZ_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return AZ_OK;
}

az_err az_admin_ensure_local_key(az_pg *pg, const char *data_dir, char *msg)
{
    char path[PATH_MAX], old[256] = "";
    if (!data_dir || snprintf(path, sizeof path, "%s/" KEY_FILE, data_dir) >= (int)sizeof path)
        return az_fail(msg, AZ_ERR_INVALID, "data dir path is too long");
    if (read_key(path, old, sizeof old) == 0 && old[0]) {
        az_apikey_identity id;
        az_err err = az_apikey_verify(pg, old, &id, msg);
        OPENSSL_cleanse(old, sizeof old);
        if (err == AZ_OK) {
            struct stat st;
            if (stat(path, &st) == 0 && (st.st_mode & 077)) chmod(path, 0600);
            return AZ_OK;
        }
        if (err != AZ_ERR_UNAUTHENTICATED) return err;
        az_warn("the local admin key in %s is not valid (the database was reset?): writing a new one", path);
    }
    az_arena *a = az_arena_new(0);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    Agentz__V1__ApiKey *key;
    char *secret;
    az_err err = az_apikey_create_in(pg, AZ_DEFAULT_WORKSPACE, LOCAL_KEY_NAME, 4 /* ROLE_OWNER */, 0, a, &key,
                                     &secret, msg);
    if (err == AZ_OK) {
        err = write_key(path, secret, msg);
        OPENSSL_cleanse(secret, strlen(secret));
        if (err == AZ_OK) az_info("wrote the local admin key (api key %s, role owner) to %s", key->id, path);
    }
    az_arena_free(a);
    return err;
}
