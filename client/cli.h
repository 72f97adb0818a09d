/* The agentz command line: global flags, the noun/verb dispatch tables, and the helpers verb
 * handlers use to call the server and print results. Nouns (agents, later tasks, workflows,
 * runs) each export one az_cli_noun with their verb table. */
#ifndef AZ_CLI_H
#define AZ_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "args.h"
#include "conn.h"
#include "output.h"

/* Exit codes of the agentz command. */
enum {
    AZ_CLI_EXIT_OK = 0,
    AZ_CLI_EXIT_FAILED = 1, /* the RPC returned a non-OK status, or a runtime failure */
    AZ_CLI_EXIT_USAGE = 2,  /* bad command, flag, argument or -f input; nothing was sent */
};

/* What one invocation runs with, after global flags are applied. */
typedef struct az_cli {
    FILE *out, *err;
    const struct az_cli_noun *noun;
    const struct az_cli_verb *verb;
    az_output_format output;
    int timeout_ms;         /* 0 = no deadline */
    const char *request_id; /* --request-id, or NULL */
    az_conn_opts conn_opts;
    az_conn *conn;          /* opened by the first az_cli_call */
    az_md md[3];            /* x-request-id, authorization; NULL-terminated */
    char *authorization;    /* "Bearer $AGENTZ_TOKEN", owned */
} az_cli;

/* A verb handler: values has one entry per verb flag (in table order), args the positional
 * arguments (already checked against min_args/max_args). Returns an AZ_CLI_EXIT_ code and
 * has printed any error. */
typedef int (*az_cli_run_fn)(az_cli *cli, const az_flag_value *values, const char *const *args,
                             size_t nargs);

typedef struct az_cli_verb {
    const char *name;        /* "create" */
    const char *synopsis;    /* positional arguments for the usage line: "ID", "" */
    const char *summary;     /* one line for the noun's help */
    const char *description; /* paragraph for the verb's help; may be NULL */
    const az_flag *flags;
    size_t nflags;
    size_t min_args, max_args;
    az_cli_run_fn run;
} az_cli_verb;

typedef struct az_cli_noun {
    const char *name;  /* "agents" */
    const char *alias; /* "agent"; may be NULL */
    const char *summary;
    const az_cli_verb *verbs;
    size_t nverbs;
} az_cli_noun;

/* The agents noun (client/cli_agents.c). */
/* The nouns, one per client/cli_<noun>.c. */
extern const az_cli_noun az_cli_agents, az_cli_tasks, az_cli_workflows, az_cli_runs,
    az_cli_templates, az_cli_import, az_cli_export, az_cli_system, az_cli_keys, az_cli_secrets,
    az_cli_audit, az_cli_watch, az_cli_top;

/* Runs the agentz command line (argv[0] is the program) writing to out and err; returns
 * the exit code. Owns nothing after it returns. */
int az_cli_main(int argc, char **argv, FILE *out, FILE *err);

/* Calls method on the server (opening the connection on first use) with the invocation's
 * timeout and metadata. Returns AZ_CLI_EXIT_OK with *resp set (free with
 * protobuf_c_message_free_unpacked(*resp, NULL)), or prints
 * "error: <GRPC_STATUS_NAME>: <details>" and returns AZ_CLI_EXIT_FAILED (or
 * AZ_CLI_EXIT_USAGE when the connection flags are wrong). */
int az_cli_call(az_cli *cli, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **resp);

/* Opens a server stream like az_cli_call; on failure prints the error and returns its exit
 * code with *out NULL. */
int az_cli_stream(az_cli *cli, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *out_desc, az_conn_stream **out);

/* Prints m in the invocation's format; on failure prints the error. Returns an exit code. */
int az_cli_print(az_cli *cli, const ProtobufCMessage *m);

/* Prints "error: <msg>" and the verb's usage line to err; returns AZ_CLI_EXIT_USAGE. */
int az_cli_usage_error(az_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "error: <GRPC_STATUS_NAME of e>: <msg>" to err; returns exit_code. */
int az_cli_fail(az_cli *cli, int exit_code, az_err e, const char *msg);


/* Reports out of memory; returns the exit code. */
int az_cli_out_of_memory(az_cli *cli);

/* Prints a single message and frees it; returns the exit code. */
int az_cli_print_free(az_cli *cli, ProtobufCMessage *m);

/* Calls a List method until the last page (or once unless all), following next_page_token into
 * *token. On AZ_CLI_EXIT_OK *pages holds *npages responses the caller frees with
 * az_cli_free_pages. */
int az_cli_fetch_pages(az_cli *cli, const char *method, const ProtobufCMessage *req, char **token,
                       const ProtobufCMessageDescriptor *desc, int all, ProtobufCMessage ***pages,
                       size_t *npages);

/* json/yaml: one page as is; several merged into one response (the items of field, no token). */
int az_cli_print_pages(az_cli *cli, ProtobufCMessage **pages, size_t npages, const char *field);
void az_cli_free_pages(ProtobufCMessage **pages, size_t npages);

#endif
