/* The agentz dispatcher: global flags, noun and verb lookup by table, help text, and the
 * call/print/error helpers every verb handler shares. */
#include "cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Every resource the CLI knows. */
static const az_cli_noun *const nouns[] = {
    &az_cli_agents, &az_cli_tasks,  &az_cli_workflows, &az_cli_runs,
    &az_cli_templates, &az_cli_import, &az_cli_export, &az_cli_system,
    &az_cli_keys,   &az_cli_secrets, &az_cli_audit,  &az_cli_watch,
    &az_cli_top,
};
#define NNOUNS (sizeof nouns / sizeof nouns[0])

enum {
    G_SERVER,
    G_OUTPUT,
    G_TIMEOUT,
    G_TLS,
    G_CA_FILE,
    G_CERT,
    G_KEY,
    G_TLS_SERVER_NAME,
    G_REQUEST_ID,
    G_TOKEN,
    G_HELP,
    G_VERSION,
    G__COUNT
};

static const az_flag global_flags[G__COUNT] = {
    [G_SERVER] = {"server", 0, AZ_FLAG_VALUE, "HOST:PORT",
                  "server address (default $AGENTZ_SERVER, else " AZ_CONN_DEFAULT_TARGET ")"},
    [G_OUTPUT] = {"output", 'o', AZ_FLAG_VALUE, "FORMAT", "table (default), json or yaml"},
    [G_TIMEOUT] = {"timeout", 0, AZ_FLAG_VALUE, "SECONDS",
                   "per-call deadline: seconds or 1m30s; 0 = none (default 30)"},
    [G_TLS] = {"tls", 0, AZ_FLAG_BOOL, NULL, "connect with TLS (default roots unless --ca-file)"},
    [G_CA_FILE] = {"ca-file", 0, AZ_FLAG_VALUE, "FILE", "PEM roots to verify the server (implies --tls)"},
    [G_CERT] = {"cert", 0, AZ_FLAG_VALUE, "FILE", "PEM client certificate for mTLS (with --key)"},
    [G_KEY] = {"key", 0, AZ_FLAG_VALUE, "FILE", "PEM client private key for mTLS (with --cert)"},
    [G_TLS_SERVER_NAME] = {"tls-server-name", 0, AZ_FLAG_VALUE, "NAME",
                           "name to verify in the server certificate instead of HOST"},
    [G_REQUEST_ID] = {"request-id", 0, AZ_FLAG_VALUE, "ID",
                      "sent as x-request-id; create also uses it as the idempotency key"},
    [G_TOKEN] = {"token", 0, AZ_FLAG_VALUE, "TOKEN",
                 "API key or JWT sent as 'authorization: Bearer TOKEN' (default $AGENTZ_TOKEN, "
                 "else the local admin key when the server is on this machine)"},
    [G_HELP] = {"help", 'h', AZ_FLAG_BOOL, NULL, "show help"},
    [G_VERSION] = {"version", 0, AZ_FLAG_BOOL, NULL, "print the version and exit"},
};

enum { DEFAULT_TIMEOUT_MS = 30000 };

/* ---- help ---- */

static void print_top_help(FILE *f)
{
    fprintf(f, "agentz - command-line client of the AGENTZ server (agent teams)\n\n"
               "Usage:\n  agentz [global flags] RESOURCE COMMAND [ARGS] [flags]\n\nResources:\n");
    for (size_t i = 0; i < NNOUNS; i++) fprintf(f, "  %-12s%s\n", nouns[i]->name, nouns[i]->summary);
    fprintf(f, "\nGlobal flags (accepted anywhere on the line):\n");
    az_args_print_flags(f, global_flags, G__COUNT);
    fprintf(f, "\nEnvironment: AGENTZ_SERVER (default server), AGENTZ_TOKEN (sent as\n"
               "'authorization: Bearer TOKEN'), AGENTZ_DATA_DIR (where a local server keeps\n"
               "admin.key, used for loopback servers without a token), COLUMNS (table width).\n"
               "Exit codes: 0 success, 1 the call failed, 2 usage error.\n"
               "Run 'agentz RESOURCE --help' for its commands.\n");
}

static void print_noun_help(FILE *f, const az_cli_noun *n)
{
    fprintf(f, "%s\n\nUsage:\n  agentz %s COMMAND [ARGS] [flags]\n\nCommands:\n", n->summary,
            n->name);
    int w = 8; /* the column fits the longest verb ("clear-memory") plus two spaces */
    for (size_t i = 0; i < n->nverbs; i++)
        if ((int)strlen(n->verbs[i].name) > w) w = (int)strlen(n->verbs[i].name);
    for (size_t i = 0; i < n->nverbs; i++)
        fprintf(f, "  %-*s  %s\n", w, n->verbs[i].name, n->verbs[i].summary);
    fprintf(f, "\nRun 'agentz %s COMMAND --help' for its flags.\n", n->name);
}

static void print_usage_line(FILE *f, const az_cli_noun *n, const az_cli_verb *v)
{
    fprintf(f, "Usage: agentz %s%s%s%s%s [flags]\n", n->name, *v->name ? " " : "", v->name,
            *v->synopsis ? " " : "", v->synopsis);
}

static void print_verb_help(FILE *f, const az_cli_noun *n, const az_cli_verb *v)
{
    fprintf(f, "%s\n\n", v->summary);
    print_usage_line(f, n, v);
    if (v->description) fprintf(f, "\n%s\n", v->description);
    if (v->nflags) {
        fprintf(f, "\nFlags:\n");
        az_args_print_flags(f, v->flags, v->nflags);
    }
    fprintf(f, "\nGlobal flags:\n");
    az_args_print_flags(f, global_flags, G__COUNT);
}

/* ---- errors ---- */

int az_cli_usage_error(az_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", cli->err);
    vfprintf(cli->err, fmt, ap);
    fputc('\n', cli->err);
    va_end(ap);
    if (cli->verb) {
        print_usage_line(cli->err, cli->noun, cli->verb);
        fprintf(cli->err, "Run 'agentz %s%s%s --help' for more information.\n", cli->noun->name,
                *cli->verb->name ? " " : "", cli->verb->name);
    } else if (cli->noun) {
        fprintf(cli->err, "Usage: agentz %s COMMAND [ARGS] [flags]\n"
                          "Run 'agentz %s --help' for its commands.\n",
                cli->noun->name, cli->noun->name);
    } else {
        fprintf(cli->err, "Usage: agentz [global flags] RESOURCE COMMAND [ARGS] [flags]\n"
                          "Run 'agentz --help' for more information.\n");
    }
    return AZ_CLI_EXIT_USAGE;
}

int az_cli_fail(az_cli *cli, int exit_code, az_err e, const char *msg)
{
    fprintf(cli->err, "error: %s: %s\n", az_conn_status_name(az_err_grpc_status(e)), msg);
    return exit_code;
}

/* ---- credentials ---- */

/* Longest admin.key accepted (keys are ~50 bytes; anything near this is not a key file). */
enum { KEY_FILE_MAX = 4096 };
/* agentzd's default data dir, tried after $AGENTZ_DATA_DIR. */
static const char *const admin_key_dirs_fallback = "./.agentz";

/* Scheme prefixes a loopback target may carry ("dns:///localhost:50051", "ipv4:127.0.0.1:1"). */
static const char *const target_schemes[] = {"dns:///", "dns:", "ipv4:", "ipv6:"};

/* 1 when target names this machine over TCP: localhost, 127.0.0.0/8 or ::1, with or without a
 * port and scheme. Other targets (other hosts, unix: sockets, lists) never get the local admin
 * key, so it cannot leak to a remote server. */
static int target_is_loopback(const char *target)
{
    for (size_t i = 0; i < sizeof target_schemes / sizeof target_schemes[0]; i++) {
        size_t n = strlen(target_schemes[i]);
        if (strncmp(target, target_schemes[i], n) == 0) {
            target += n;
            break;
        }
    }
    char host[256];
    size_t len;
    if (*target == '[') {
        const char *end = strchr(target, ']');
        if (!end) return 0;
        len = (size_t)(end - target - 1);
        target++;
    } else {
        const char *colon = strrchr(target, ':');
        /* Several colons without brackets is a bare IPv6 address without a port. */
        len = colon && strchr(target, ':') == colon ? (size_t)(colon - target) : strlen(target);
    }
    if (len == 0 || len >= sizeof host) return 0;
    memcpy(host, target, len);
    host[len] = '\0';
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0) return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

/* Reads the admin key at path into buf (trailing whitespace removed). Returns 1 with a key, 0
 * when there is none to use: absent or unreadable files are skipped silently, a file others
 * may read is refused with a warning (the key is a credential; agentzd writes it 0600). */
static int read_admin_key(az_cli *cli, const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return 0;
    struct stat st;
    int ok = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) goto done;
    if (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH)) {
        fprintf(cli->err, "warning: ignoring %s: it is readable or writable by others "
                          "(chmod 600 %s)\n", path, path);
        goto done;
    }
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) goto done;
        if (n == 0) break;
        len += (size_t)n;
        if (len == cap - 1) goto done; /* far longer than any key: not a key file */
    }
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                   buf[len - 1] == '\t'))
        len--;
    buf[len] = '\0';
    ok = len > 0;
done:
    close(fd);
    if (!ok) explicit_bzero(buf, cap);
    return ok;
}

/* Keeps a token read from a file. cli->authorization holds "Bearer <token>" (see cli.h); the
 * connection gets the part after the prefix. */
static int keep_token(az_cli *cli, const char *token)
{
    static const char prefix[] = "Bearer ";
    if (asprintf(&cli->authorization, "%s%s", prefix, token) < 0) {
        cli->authorization = NULL;
        return az_cli_fail(cli, AZ_CLI_EXIT_FAILED, AZ_ERR_NOMEM, "out of memory");
    }
    cli->conn_opts.token = cli->authorization + sizeof prefix - 1;
    return AZ_CLI_EXIT_OK;
}

/* Without --token or $AGENTZ_TOKEN, a server on this machine is called with its local admin
 * key: $AGENTZ_DATA_DIR/admin.key, else ./.agentz/admin.key. Never prints the key. */
static int local_admin_token(az_cli *cli)
{
    if (cli->conn_opts.token) return AZ_CLI_EXIT_OK;
    const char *target =
        cli->conn_opts.target && *cli->conn_opts.target ? cli->conn_opts.target
                                                         : az_conn_default_target();
    if (!target_is_loopback(target)) return AZ_CLI_EXIT_OK;
    const char *data_dir = getenv("AGENTZ_DATA_DIR");
    const char *dirs[] = {data_dir && *data_dir ? data_dir : NULL, admin_key_dirs_fallback};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        if (!dirs[i]) continue;
        char path[4096], key[KEY_FILE_MAX];
        if (snprintf(path, sizeof path, "%s/admin.key", dirs[i]) >= (int)sizeof path) continue;
        if (!read_admin_key(cli, path, key, sizeof key)) continue;
        int code = keep_token(cli, key);
        explicit_bzero(key, sizeof key);
        return code;
    }
    return AZ_CLI_EXIT_OK;
}

/* ---- calls ---- */

static int open_conn(az_cli *cli)
{
    if (cli->conn) return AZ_CLI_EXIT_OK;
    int code = local_admin_token(cli);
    if (code) return code;
    char msg[AZ_MSG_MAX];
    az_err err = az_conn_open(&cli->conn_opts, &cli->conn, msg);
    if (!err) return AZ_CLI_EXIT_OK;
    /* Bad or unreadable --cert/--key/--ca-file are usage errors: nothing was sent. */
    if (err == AZ_ERR_INVALID || err == AZ_ERR_IO) return az_cli_usage_error(cli, "%s", msg);
    return az_cli_fail(cli, AZ_CLI_EXIT_FAILED, err, msg);
}

int az_cli_call(az_cli *cli, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **resp)
{
    *resp = NULL;
    int code = open_conn(cli);
    if (code) return code;
    char msg[AZ_MSG_MAX];
    int status = 0;
    az_err err = az_conn_unary(cli->conn, method, req, out_desc, cli->timeout_ms, cli->md, resp,
                               &status, msg);
    if (!err) return AZ_CLI_EXIT_OK;
    fprintf(cli->err, "error: %s: %s\n", az_conn_status_name(status), msg);
    return AZ_CLI_EXIT_FAILED;
}

int az_cli_stream(az_cli *cli, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *out_desc, az_conn_stream **out)
{
    *out = NULL;
    int code = open_conn(cli);
    if (code) return code;
    char msg[AZ_MSG_MAX];
    int status = 0;
    /* Watches run until interrupted: the --timeout deadline does not apply to them. */
    az_err err = az_conn_stream_open(cli->conn, method, req, out_desc, 0, cli->md, out, &status,
                                     msg);
    if (!err) return AZ_CLI_EXIT_OK;
    fprintf(cli->err, "error: %s: %s\n", az_conn_status_name(status), msg);
    return AZ_CLI_EXIT_FAILED;
}

int az_cli_print(az_cli *cli, const ProtobufCMessage *m)
{
    char msg[AZ_MSG_MAX];
    az_err err = az_output_message(cli->out, m, cli->output, msg);
    if (err) return az_cli_fail(cli, AZ_CLI_EXIT_FAILED, err, msg);
    return AZ_CLI_EXIT_OK;
}

/* ---- global flags ---- */

static az_err parse_timeout(const char *s, int *ms, char *msg)
{
    double secs;
    /* A bare number is seconds; anything else must be a Go-style duration. */
    if (az_args_double("--timeout", s, &secs, NULL) != AZ_OK) {
        int64_t sec;
        int32_t ns;
        az_err err = az_args_duration("--timeout", s, &sec, &ns, msg);
        if (err) return err;
        secs = (double)sec + ns / 1e9;
    }
    if (secs < 0 || secs > 24 * 3600.0 * 365)
        return az_fail(msg, AZ_ERR_INVALID, "--timeout: %s is out of range", s);
    *ms = secs > 0 && secs < 0.001 ? 1 : (int)(secs * 1000 + 0.5);
    return AZ_OK;
}

static int apply_globals(az_cli *cli, const az_flag_value *g)
{
    char msg[AZ_MSG_MAX];
    if (g[G_OUTPUT].count &&
        az_output_parse_format("--output", g[G_OUTPUT].value, &cli->output, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (g[G_TIMEOUT].count && parse_timeout(g[G_TIMEOUT].value, &cli->timeout_ms, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (!g[G_CERT].count != !g[G_KEY].count)
        return az_cli_usage_error(cli, "--cert and --key must be given together");
    if (g[G_SERVER].count && !*g[G_SERVER].value)
        return az_cli_usage_error(cli, "--server: empty address");
    cli->conn_opts.target = g[G_SERVER].count ? g[G_SERVER].value : NULL;
    cli->conn_opts.tls = az_args_bool(&g[G_TLS]);
    cli->conn_opts.ca_file = g[G_CA_FILE].value;
    cli->conn_opts.cert_file = g[G_CERT].value;
    cli->conn_opts.key_file = g[G_KEY].value;
    cli->conn_opts.server_name = g[G_TLS_SERVER_NAME].value;

    size_t n = 0;
    if (g[G_REQUEST_ID].count && *g[G_REQUEST_ID].value) {
        cli->request_id = g[G_REQUEST_ID].value;
        cli->md[n++] = (az_md){"x-request-id", cli->request_id};
    }
    cli->md[n] = (az_md){NULL, NULL};
    /* The token goes on the connection, which sends it with every call; a local admin key is
     * looked up only when a connection is opened (local_admin_token). */
    if (g[G_TOKEN].count && !*g[G_TOKEN].value)
        return az_cli_usage_error(cli, "--token: empty token");
    const char *token = g[G_TOKEN].count ? g[G_TOKEN].value : getenv("AGENTZ_TOKEN");
    cli->conn_opts.token = token && *token ? token : NULL;
    return AZ_CLI_EXIT_OK;
}

/* ---- dispatch ---- */

static const az_cli_noun *find_noun(const char *name)
{
    for (size_t i = 0; i < NNOUNS; i++)
        if (strcmp(nouns[i]->name, name) == 0 ||
            (nouns[i]->alias && strcmp(nouns[i]->alias, name) == 0))
            return nouns[i];
    return NULL;
}

static const az_cli_verb *find_verb(const az_cli_noun *n, const char *name)
{
    for (size_t i = 0; i < n->nverbs; i++)
        if (strcmp(n->verbs[i].name, name) == 0) return &n->verbs[i];
    return NULL;
}

static int run_verb(az_cli *cli, az_flag_value *g, int argc, char **argv, int idx)
{
    const az_cli_verb *v = cli->verb;
    az_flag_value *values = calloc(v->nflags ? v->nflags : 1, sizeof *values);
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int code = AZ_CLI_EXIT_OK;
    if (!values || !pos) {
        code = az_cli_fail(cli, AZ_CLI_EXIT_FAILED, AZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* A command's own flags win over global ones of the same name (tasks create --timeout is the
     * task's timeout; put the call deadline before the resource: agentz --timeout 5 tasks ...). */
    az_flag_set sets[] = {{v->flags, values, v->nflags}, {global_flags, g, G__COUNT}};
    size_t npos = 0;
    char msg[AZ_MSG_MAX];
    if (az_args_parse(sets, 2, argc, argv, &idx, 0, pos, (size_t)argc, &npos, msg)) {
        code = az_cli_usage_error(cli, "%s", msg);
        goto done;
    }
    if (az_args_bool(&g[G_HELP])) {
        print_verb_help(cli->out, cli->noun, v);
        goto done;
    }
    if (az_args_bool(&g[G_VERSION])) {
        fprintf(cli->out, "agentz %s\n", AZ_VERSION);
        goto done;
    }
    if ((code = apply_globals(cli, g)) != AZ_CLI_EXIT_OK) goto done;
    if (npos < v->min_args) {
        code = az_cli_usage_error(cli, "missing %s", v->synopsis);
        goto done;
    }
    if (npos > v->max_args) {
        code = az_cli_usage_error(cli, "unexpected argument \"%s\"", pos[v->max_args]);
        goto done;
    }
    code = v->run(cli, values, pos, npos);
done:
    if (values) az_args_free_values(values, v->nflags);
    free(values);
    free(pos);
    return code;
}

int az_cli_main(int argc, char **argv, FILE *out, FILE *err)
{
    az_cli cli = {.out = out, .err = err, .output = AZ_OUTPUT_TABLE,
                  .timeout_ms = DEFAULT_TIMEOUT_MS};
    cli.md[0] = (az_md){NULL, NULL};
    az_flag_value g[G__COUNT] = {0};
    az_flag_set globals = {global_flags, g, G__COUNT};
    char msg[AZ_MSG_MAX];
    int idx = 1, code;
    size_t npos = 0;
    const char *pos[1];

    /* Global flags may come before the resource, between resource and command, and after. */
    if (az_args_parse(&globals, 1, argc, argv, &idx, AZ_ARGS_STOP_AT_POSITIONAL, pos, 1, &npos,
                      msg)) {
        code = az_cli_usage_error(&cli, "%s", msg);
        goto done;
    }
    if (az_args_bool(&g[G_VERSION])) {
        fprintf(out, "agentz %s\n", AZ_VERSION);
        code = AZ_CLI_EXIT_OK;
        goto done;
    }
    if (idx >= argc) {
        print_top_help(az_args_bool(&g[G_HELP]) ? out : err);
        code = az_args_bool(&g[G_HELP]) ? AZ_CLI_EXIT_OK : AZ_CLI_EXIT_USAGE;
        goto done;
    }
    if (!(cli.noun = find_noun(argv[idx]))) {
        code = az_cli_usage_error(&cli, "unknown resource \"%s\"", argv[idx]);
        goto done;
    }
    idx++;
    /* A noun whose only verb has no name is a command of its own: agentz top [flags]. */
    if (cli.noun->nverbs == 1 && !*cli.noun->verbs[0].name) {
        cli.verb = &cli.noun->verbs[0];
        code = run_verb(&cli, g, argc, argv, idx);
        goto done;
    }
    if (az_args_parse(&globals, 1, argc, argv, &idx, AZ_ARGS_STOP_AT_POSITIONAL, pos, 1, &npos,
                      msg)) {
        code = az_cli_usage_error(&cli, "%s", msg);
        goto done;
    }
    if (idx >= argc) {
        print_noun_help(az_args_bool(&g[G_HELP]) ? out : err, cli.noun);
        code = az_args_bool(&g[G_HELP]) ? AZ_CLI_EXIT_OK : AZ_CLI_EXIT_USAGE;
        goto done;
    }
    if (!(cli.verb = find_verb(cli.noun, argv[idx]))) {
        code = az_cli_usage_error(&cli, "unknown command \"%s\" for %s", argv[idx],
                                  cli.noun->name);
        goto done;
    }
    code = run_verb(&cli, g, argc, argv, idx + 1);
done:
    az_args_free_values(g, G__COUNT);
    az_conn_free(cli.conn);
    if (cli.authorization) explicit_bzero(cli.authorization, strlen(cli.authorization));
    free(cli.authorization);
    fflush(out);
    return code;
}

int az_cli_out_of_memory(az_cli *cli)
{
    return az_cli_fail(cli, AZ_CLI_EXIT_FAILED, AZ_ERR_NOMEM, "out of memory");
}

/* Prints a single message and frees it. */
int az_cli_print_free(az_cli *cli, ProtobufCMessage *m)
{
    int code = az_cli_print(cli, m);
    protobuf_c_message_free_unpacked(m, NULL);
    return code;
}

/* ---- helpers shared by the nouns ---- */

/* Calls method until the last page (or once unless all), following next_page_token into
 * *token. On AZ_CLI_EXIT_OK *pages holds *npages responses the caller frees. */
int az_cli_fetch_pages(az_cli *cli, const char *method, const ProtobufCMessage *req, char **token,
                       const ProtobufCMessageDescriptor *desc, int all, ProtobufCMessage ***pages,
                       size_t *npages)
{
    const ProtobufCFieldDescriptor *next_fd =
        protobuf_c_message_descriptor_get_field_by_name(desc, "next_page_token");
    *pages = NULL;
    *npages = 0;
    int code = AZ_CLI_EXIT_OK;
    for (;;) {
        ProtobufCMessage *m;
        if ((code = az_cli_call(cli, method, req, desc, &m))) break;
        ProtobufCMessage **bigger = realloc(*pages, (*npages + 1) * sizeof *bigger);
        if (!bigger) {
            protobuf_c_message_free_unpacked(m, NULL);
            code = az_cli_out_of_memory(cli);
            break;
        }
        *pages = bigger;
        (*pages)[(*npages)++] = m;
        char *next = *(char **)(void *)((char *)m + next_fd->offset);
        if (!all || !*next) break;
        /* A server handing back the token it was given would loop forever. */
        if (strcmp(next, *token) == 0) {
            code = az_cli_fail(cli, AZ_CLI_EXIT_FAILED, AZ_ERR_INTERNAL,
                               "the server returned the same page token twice");
            break;
        }
        *token = next;
    }
    if (code) {
        for (size_t i = 0; i < *npages; i++) protobuf_c_message_free_unpacked((*pages)[i], NULL);
        free(*pages);
        *pages = NULL;
        *npages = 0;
    }
    return code;
}

/* json/yaml: one page as is; several merged into one response (items of field, no token). */
int az_cli_print_pages(az_cli *cli, ProtobufCMessage **pages, size_t npages, const char *field)
{
    if (npages == 1) return az_cli_print(cli, pages[0]);
    const ProtobufCMessageDescriptor *d = pages[0]->descriptor;
    const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field_by_name(d, field);
    size_t total = 0;
    for (size_t p = 0; p < npages; p++)
        total += *(size_t *)(void *)((char *)pages[p] + fd->quantifier_offset);
    ProtobufCMessage *merged = calloc(1, d->sizeof_message);
    void **items = calloc(total ? total : 1, sizeof *items);
    if (!merged || !items) {
        free(merged);
        free(items);
        return az_cli_out_of_memory(cli);
    }
    protobuf_c_message_init(d, merged);
    size_t n = 0;
    for (size_t p = 0; p < npages; p++) {
        size_t k = *(size_t *)(void *)((char *)pages[p] + fd->quantifier_offset);
        void **v = *(void ***)(void *)((char *)pages[p] + fd->offset);
        for (size_t i = 0; i < k; i++) items[n++] = v[i];
    }
    *(size_t *)(void *)((char *)merged + fd->quantifier_offset) = n;
    *(void ***)(void *)((char *)merged + fd->offset) = items;
    int code = az_cli_print(cli, merged);
    free(items); /* the items belong to their pages */
    free(merged);
    return code;
}

void az_cli_free_pages(ProtobufCMessage **pages, size_t npages)
{
    for (size_t i = 0; i < npages; i++) protobuf_c_message_free_unpacked(pages[i], NULL);
    free(pages);
}
