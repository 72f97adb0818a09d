/* The agentz dispatcher: global flags, noun and verb lookup by table, help text, and the
 * call/print/error helpers every verb handler shares. */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Every resource the CLI knows. */
static const az_cli_noun *const nouns[] = {
    &az_cli_agents, &az_cli_tasks,  &az_cli_workflows, &az_cli_runs,
    &az_cli_templates, &az_cli_import, &az_cli_export,
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
               "'authorization: Bearer TOKEN'), COLUMNS (table width).\n"
               "Exit codes: 0 success, 1 the call failed, 2 usage error.\n"
               "Run 'agentz RESOURCE --help' for its commands.\n");
}

static void print_noun_help(FILE *f, const az_cli_noun *n)
{
    fprintf(f, "%s\n\nUsage:\n  agentz %s COMMAND [ARGS] [flags]\n\nCommands:\n", n->summary,
            n->name);
    for (size_t i = 0; i < n->nverbs; i++)
        fprintf(f, "  %-10s%s\n", n->verbs[i].name, n->verbs[i].summary);
    fprintf(f, "\nRun 'agentz %s COMMAND --help' for its flags.\n", n->name);
}

static void print_usage_line(FILE *f, const az_cli_noun *n, const az_cli_verb *v)
{
    fprintf(f, "Usage: agentz %s %s%s%s [flags]\n", n->name, v->name, *v->synopsis ? " " : "",
            v->synopsis);
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
        fprintf(cli->err, "Run 'agentz %s %s --help' for more information.\n", cli->noun->name,
                cli->verb->name);
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

/* ---- calls ---- */

static int open_conn(az_cli *cli)
{
    if (cli->conn) return AZ_CLI_EXIT_OK;
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
    const char *token = getenv("AGENTZ_TOKEN");
    if (token && *token) {
        if (asprintf(&cli->authorization, "Bearer %s", token) < 0) {
            cli->authorization = NULL;
            return az_cli_fail(cli, AZ_CLI_EXIT_FAILED, AZ_ERR_NOMEM, "out of memory");
        }
        cli->md[n++] = (az_md){"authorization", cli->authorization};
    }
    cli->md[n] = (az_md){NULL, NULL};
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
    free(cli.authorization);
    fflush(out);
    return code;
}
