/* `agentz system whoami`, `agentz keys ...`, `agentz secrets ...` and `agentz audit list`: the
 * SystemService commands for identity, API keys, secrets and the audit log, one noun each. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentz/v1/system.pb-c.h"
#include "cli.h"
#include "core/file.h"
#include "google/protobuf/empty.pb-c.h"
#include "table.h"

#define SERVICE "/agentz.v1.SystemService/"
#define ROLE_PREFIX "ROLE_"
#define AUTH_PREFIX "AUTH_METHOD_"

/* ---- shared helpers ---- */

/* Prints the table (or "no X found") and the next-page hint; frees the table. */
static int finish_table(az_cli *cli, az_table *tb, const char *what, const char *next_token)
{
    if (az_table_rows(tb))
        az_table_print(tb, cli->out, az_table_width(cli->out));
    else
        fprintf(cli->err, "no %s found\n", what);
    az_table_free(tb);
    if (next_token && *next_token)
        fprintf(cli->err, "more %s: --page-token %s (or --all)\n", what, next_token);
    return AZ_CLI_EXIT_OK;
}

/* Paging flags every list verb here shares, in this order at the end of its table. */
#define PAGE_FLAGS(what)                                                                          \
    {"page-size", 0, AZ_FLAG_VALUE, "N", what " per page (server default 50, max 1000)", NULL},   \
        {"page-token", 0, AZ_FLAG_VALUE, "TOKEN", "continue from a previous page", NULL},         \
        {"all", 0, AZ_FLAG_BOOL, NULL, "follow next_page_token and print every page", NULL}

/* Applies --page-size/--page-token (values at v[0], v[1]); returns an exit code. */
static int page_args(az_cli *cli, const az_flag_value *v, int32_t *size, char **token)
{
    char msg[AZ_MSG_MAX];
    if (v[0].count && az_args_int32("--page-size", v[0].value, 0, INT32_MAX, size, msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (v[1].count) *token = (char *)v[1].value;
    return AZ_CLI_EXIT_OK;
}

/* ---- system whoami ---- */

static int run_whoami(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__WhoAmIRequest req = AGENTZ__V1__WHO_AM_IREQUEST__INIT;
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "WhoAmI", &req.base, &agentz__v1__who_am_iresponse__descriptor,
                           &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

static const az_cli_verb system_verbs[] = {
    {"whoami", "", "Show who the server thinks you are: principal, workspace, role, auth method",
     NULL, NULL, 0, 0, 0, run_whoami},
};

const az_cli_noun az_cli_system = {
    .name = "system",
    .alias = NULL,
    .summary = "Server-wide information: whoami",
    .verbs = system_verbs,
    .nverbs = sizeof system_verbs / sizeof system_verbs[0],
};

/* ---- keys create ---- */

enum { KC_NAME, KC_ROLE, KC_EXPIRES, KC__COUNT };

static const az_flag key_create_flags[KC__COUNT] = {
    [KC_NAME] = {"name", 0, AZ_FLAG_VALUE, "NAME", "display name (required)", NULL},
    [KC_ROLE] = {"role", 0, AZ_FLAG_VALUE, "ROLE", "viewer, editor, admin or owner (required)", NULL},
    [KC_EXPIRES] = {"expires", 0, AZ_FLAG_VALUE, "DURATION",
                    "lifetime from now, e.g. 30d or 12h (default: never expires)", NULL},
};

static int run_key_create(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    if (!v[KC_NAME].count || !*v[KC_NAME].value) return az_cli_usage_error(cli, "--name is required");
    if (!v[KC_ROLE].count) return az_cli_usage_error(cli, "--role is required");
    int role = 0;
    if (az_args_enum("--role", &agentz__v1__role__descriptor, ROLE_PREFIX, v[KC_ROLE].value, &role,
                     msg))
        return az_cli_usage_error(cli, "%s", msg);
    if (role == AGENTZ__V1__ROLE__ROLE_UNSPECIFIED)
        return az_cli_usage_error(cli, "--role: must be viewer, editor, admin or owner");
    Agentz__V1__CreateApiKeyRequest req = AGENTZ__V1__CREATE_API_KEY_REQUEST__INIT;
    Google__Protobuf__Timestamp expire = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    req.name = (char *)v[KC_NAME].value;
    req.role = (Agentz__V1__Role)role;
    if (v[KC_EXPIRES].count) {
        int64_t secs;
        if (az_args_days_duration("--expires", v[KC_EXPIRES].value, &secs, msg))
            return az_cli_usage_error(cli, "%s", msg);
        if (secs <= 0) return az_cli_usage_error(cli, "--expires: must be more than 0");
        expire.seconds = (int64_t)time(NULL) + secs;
        req.expire_time = &expire;
    }
    if (cli->request_id) req.request_id = (char *)cli->request_id;
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "CreateApiKey", &req.base,
                           &agentz__v1__create_api_key_response__descriptor, &resp);
    if (code) return code;
    if (cli->output != AZ_OUTPUT_TABLE) return az_cli_print_free(cli, resp);
    /* Table: the key alone on stdout (KEY=$(agentz keys create ...)), everything else on stderr. */
    const Agentz__V1__CreateApiKeyResponse *r = (const Agentz__V1__CreateApiKeyResponse *)resp;
    const Agentz__V1__ApiKey *k = r->api_key;
    char rolebuf[32];
    fprintf(cli->err, "created API key %s (%s, role %s)\n", k ? k->id : "?", k ? k->name : "?",
            az_output_enum(&agentz__v1__role__descriptor, ROLE_PREFIX, k ? (int)k->role : 0, rolebuf,
                           sizeof rolebuf));
    if (*r->key) {
        fprintf(cli->out, "%s\n", r->key);
        fprintf(cli->err, "warning: store this key now; the server keeps only its hash and will "
                          "not show it again\n");
    } else {
        fprintf(cli->err, "warning: the server returned no key (a retry of an earlier request id "
                          "returns the key only the first time)\n");
    }
    explicit_bzero(r->key, strlen(r->key));
    protobuf_c_message_free_unpacked(resp, NULL);
    return AZ_CLI_EXIT_OK;
}

/* ---- keys list, revoke ---- */

enum { KL_PAGE_SIZE, KL_PAGE_TOKEN, KL_ALL, KL__COUNT };

static const az_flag key_list_flags[KL__COUNT] = {PAGE_FLAGS("keys")};

static int print_key_table(az_cli *cli, ProtobufCMessage **pages, size_t npages)
{
    enum { NCOLS = 8 };
    static const char *const headers[NCOLS] = {"ID",      "NAME",    "ROLE",      "PREFIX",
                                               "CREATED", "EXPIRES", "LAST USED", "STATE"};
    char msg[AZ_MSG_MAX];
    az_table *tb = az_table_new(NCOLS, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    az_table_keep(tb, 0);
    az_table_keep(tb, 3);
    int64_t now = (int64_t)time(NULL);
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__ListApiKeysResponse *r = (const Agentz__V1__ListApiKeysResponse *)pages[p];
        for (size_t i = 0; i < r->n_api_keys; i++) {
            const Agentz__V1__ApiKey *k = r->api_keys[i];
            char role[32], created[32], expires[32], used[32];
            const char *state = k->revoke_time                                          ? "revoked"
                                : k->expire_time && k->expire_time->seconds <= now ? "expired"
                                                                                    : "active";
            const char *cells[NCOLS] = {
                k->id,
                k->name,
                az_output_enum(&agentz__v1__role__descriptor, ROLE_PREFIX, (int)k->role, role,
                               sizeof role),
                k->prefix,
                az_output_time(k->create_time ? k->create_time->seconds : 0, created, sizeof created),
                k->expire_time ? az_output_time(k->expire_time->seconds, expires, sizeof expires)
                               : "never",
                k->last_use_time ? az_output_age(k->last_use_time->seconds, now, used, sizeof used)
                                 : "never",
                state,
            };
            if (az_table_add(tb, cells, msg)) {
                az_table_free(tb);
                return az_cli_out_of_memory(cli);
            }
        }
    }
    const Agentz__V1__ListApiKeysResponse *last =
        (const Agentz__V1__ListApiKeysResponse *)pages[npages - 1];
    return finish_table(cli, tb, "keys", last->next_page_token);
}

static int run_key_list(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__ListApiKeysRequest req = AGENTZ__V1__LIST_API_KEYS_REQUEST__INIT;
    int code = page_args(cli, &v[KL_PAGE_SIZE], &req.page_size, &req.page_token);
    if (code) return code;
    ProtobufCMessage **pages;
    size_t npages;
    if ((code = az_cli_fetch_pages(cli, SERVICE "ListApiKeys", &req.base, &req.page_token,
                                   &agentz__v1__list_api_keys_response__descriptor,
                                   az_args_bool(&v[KL_ALL]), &pages, &npages)))
        return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_key_table(cli, pages, npages)
                                          : az_cli_print_pages(cli, pages, npages, "api_keys");
    az_cli_free_pages(pages, npages);
    return code;
}

static int run_key_revoke(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__RevokeApiKeyRequest req = AGENTZ__V1__REVOKE_API_KEY_REQUEST__INIT;
    req.id = (char *)args[0];
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "RevokeApiKey", &req.base, &agentz__v1__api_key__descriptor,
                           &resp);
    return code ? code : az_cli_print_free(cli, resp);
}

static const az_cli_verb key_verbs[] = {
    {"create", "", "Create an API key; the key is printed once",
     "Table output prints the key alone on stdout (so KEY=$(agentz keys create ...) works) and\n"
     "the key's id, name and role with a warning on stderr: the server keeps only a hash, so\n"
     "store the key at once. -o json|yaml prints the whole CreateApiKeyResponse, key included.\n"
     "--expires is a lifetime from now (30d, 12h, 90m). The new key's role may not exceed\n"
     "yours. Requires the admin role.",
     key_create_flags, KC__COUNT, 0, 0, run_key_create},
    {"list", "", "List the workspace's API keys (never the keys themselves)",
     "Table columns: ID NAME ROLE PREFIX CREATED EXPIRES LAST USED STATE.", key_list_flags,
     KL__COUNT, 0, 0, run_key_list},
    {"revoke", "ID", "Revoke an API key at once (revoking twice succeeds)", NULL, NULL, 0, 1, 1,
     run_key_revoke},
};

const az_cli_noun az_cli_keys = {
    .name = "keys",
    .alias = "key",
    .summary = "Create, list and revoke API keys",
    .verbs = key_verbs,
    .nverbs = sizeof key_verbs / sizeof key_verbs[0],
};

/* ---- secrets create ---- */

enum { SC_VALUE, SC_FROM_FILE, SC_FROM_STDIN, SC__COUNT };

static const az_flag secret_create_flags[SC__COUNT] = {
    [SC_VALUE] = {"value", 0, AZ_FLAG_VALUE, "VALUE",
                  "the value on the command line (visible in ps and shell history; prefer the "
                  "others)", NULL},
    [SC_FROM_FILE] = {"from-file", 0, AZ_FLAG_VALUE, "FILE", "read the value from FILE", NULL},
    [SC_FROM_STDIN] = {"from-stdin", 0, AZ_FLAG_BOOL, NULL, "read the value from standard input",
                       NULL},
};

static int run_secret_create(az_cli *cli, const az_flag_value *v, const char *const *args,
                             size_t nargs)
{
    char msg[AZ_MSG_MAX];
    int sources = (v[SC_VALUE].count > 0) + (v[SC_FROM_FILE].count > 0) +
                  az_args_bool(&v[SC_FROM_STDIN]);
    if (sources != 1)
        return az_cli_usage_error(cli, "give the value with exactly one of --from-stdin, "
                                       "--from-file FILE or --value VALUE");
    char *buf = NULL;
    size_t len = 0;
    const char *value = v[SC_VALUE].value;
    if (!v[SC_VALUE].count) {
        const char *flag = v[SC_FROM_FILE].count ? "--from-file" : "--from-stdin";
        const char *path = v[SC_FROM_FILE].count ? v[SC_FROM_FILE].value : "-";
        az_err err = az_file_read(path, &buf, &len, msg);
        if (err == AZ_ERR_NOMEM) return az_cli_out_of_memory(cli);
        if (err) return az_cli_usage_error(cli, "%s: %s", flag, msg);
        if (strlen(buf) != len) {
            explicit_bzero(buf, len);
            free(buf);
            return az_cli_usage_error(cli, "%s: the value contains a NUL byte", flag);
        }
        /* One trailing newline is the end of the line `echo` or an editor wrote, not the value. */
        if (len && buf[len - 1] == '\n') buf[--len] = '\0';
        if (len && buf[len - 1] == '\r') buf[--len] = '\0';
        value = buf;
    }
    int code;
    if (!*value) {
        code = az_cli_usage_error(cli, "the secret value is empty");
    } else {
        Agentz__V1__CreateSecretRequest req = AGENTZ__V1__CREATE_SECRET_REQUEST__INIT;
        req.name = (char *)args[0];
        req.value = (char *)value;
        if (cli->request_id) req.request_id = (char *)cli->request_id;
        ProtobufCMessage *resp;
        code = az_cli_call(cli, SERVICE "CreateSecret", &req.base, &agentz__v1__secret__descriptor,
                           &resp);
        if (!code) code = az_cli_print_free(cli, resp);
    }
    if (buf) {
        explicit_bzero(buf, len);
        free(buf);
    }
    return code;
}

/* ---- secrets list, delete ---- */

enum { SL_PAGE_SIZE, SL_PAGE_TOKEN, SL_ALL, SL__COUNT };

static const az_flag secret_list_flags[SL__COUNT] = {PAGE_FLAGS("secrets")};

static int print_secret_table(az_cli *cli, ProtobufCMessage **pages, size_t npages)
{
    static const char *const headers[] = {"NAME", "CREATED", "UPDATED"};
    char msg[AZ_MSG_MAX];
    az_table *tb = az_table_new(3, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    az_table_keep(tb, 0);
    int64_t now = (int64_t)time(NULL);
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__ListSecretsResponse *r = (const Agentz__V1__ListSecretsResponse *)pages[p];
        for (size_t i = 0; i < r->n_secrets; i++) {
            const Agentz__V1__Secret *s = r->secrets[i];
            char created[32], updated[32];
            const char *cells[3] = {
                s->name,
                az_output_time(s->create_time ? s->create_time->seconds : 0, created, sizeof created),
                az_output_age(s->update_time ? s->update_time->seconds : 0, now, updated,
                              sizeof updated),
            };
            if (az_table_add(tb, cells, msg)) {
                az_table_free(tb);
                return az_cli_out_of_memory(cli);
            }
        }
    }
    const Agentz__V1__ListSecretsResponse *last =
        (const Agentz__V1__ListSecretsResponse *)pages[npages - 1];
    return finish_table(cli, tb, "secrets", last->next_page_token);
}

static int run_secret_list(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    Agentz__V1__ListSecretsRequest req = AGENTZ__V1__LIST_SECRETS_REQUEST__INIT;
    int code = page_args(cli, &v[SL_PAGE_SIZE], &req.page_size, &req.page_token);
    if (code) return code;
    ProtobufCMessage **pages;
    size_t npages;
    if ((code = az_cli_fetch_pages(cli, SERVICE "ListSecrets", &req.base, &req.page_token,
                                   &agentz__v1__list_secrets_response__descriptor,
                                   az_args_bool(&v[SL_ALL]), &pages, &npages)))
        return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_secret_table(cli, pages, npages)
                                          : az_cli_print_pages(cli, pages, npages, "secrets");
    az_cli_free_pages(pages, npages);
    return code;
}

static int run_secret_delete(az_cli *cli, const az_flag_value *v, const char *const *args,
                             size_t nargs)
{
    Agentz__V1__DeleteSecretRequest req = AGENTZ__V1__DELETE_SECRET_REQUEST__INIT;
    req.name = (char *)args[0];
    ProtobufCMessage *resp;
    int code = az_cli_call(cli, SERVICE "DeleteSecret", &req.base,
                           &google__protobuf__empty__descriptor, &resp);
    if (code) return code;
    if (cli->output == AZ_OUTPUT_TABLE) {
        fprintf(cli->out, "deleted secret %s\n", args[0]);
        protobuf_c_message_free_unpacked(resp, NULL);
        return AZ_CLI_EXIT_OK;
    }
    return az_cli_print_free(cli, resp);
}

static const az_cli_verb secret_verbs[] = {
    {"create", "NAME", "Store a secret under NAME, replacing the value if NAME exists",
     "Give the value with exactly one of --from-stdin, --from-file FILE or --value VALUE.\n"
     "Prefer the first two: --value is visible to other users in ps and stays in shell\n"
     "history. One trailing newline is removed from stdin and file values. The value is never\n"
     "printed; the output is the secret's name and times. Requires the editor role.",
     secret_create_flags, SC__COUNT, 1, 1, run_secret_create},
    {"list", "", "List the workspace's secrets (names and times, never values)",
     "Table columns: NAME CREATED UPDATED.", secret_list_flags, SL__COUNT, 0, 0, run_secret_list},
    {"delete", "NAME", "Delete a secret; agents using it fail their next model call", NULL, NULL, 0,
     1, 1, run_secret_delete},
};

const az_cli_noun az_cli_secrets = {
    .name = "secrets",
    .alias = "secret",
    .summary = "Store, list and delete secrets (e.g. LLM API keys)",
    .verbs = secret_verbs,
    .nverbs = sizeof secret_verbs / sizeof secret_verbs[0],
};

/* ---- audit list ---- */

enum { AL_PRINCIPAL, AL_METHOD, AL_SINCE, AL_PAGE_SIZE, AL_PAGE_TOKEN, AL_ALL, AL__COUNT };

static const az_flag audit_list_flags[AL__COUNT] = {
    [AL_PRINCIPAL] = {"principal", 0, AZ_FLAG_VALUE, "P",
                      "only calls by this principal, e.g. key:ID (see system whoami)", NULL},
    [AL_METHOD] = {"method", 0, AZ_FLAG_VALUE, "M",
                   "only calls of this full method, e.g. /agentz.v1.AgentService/DeleteAgent", NULL},
    [AL_SINCE] = {"since", 0, AZ_FLAG_VALUE, "DURATION", "only entries this recent, e.g. 24h or 7d",
                  NULL},
    PAGE_FLAGS("entries"),
};

static int print_audit_table(az_cli *cli, ProtobufCMessage **pages, size_t npages)
{
    static const char *const headers[] = {"TIME", "PRINCIPAL", "METHOD", "TARGET", "OUTCOME"};
    char msg[AZ_MSG_MAX];
    az_table *tb = az_table_new(5, headers);
    if (!tb) return az_cli_out_of_memory(cli);
    az_table_keep(tb, 0);
    az_table_keep(tb, 4);
    for (size_t p = 0; p < npages; p++) {
        const Agentz__V1__ListAuditLogResponse *r = (const Agentz__V1__ListAuditLogResponse *)pages[p];
        for (size_t i = 0; i < r->n_entries; i++) {
            const Agentz__V1__AuditEntry *e = r->entries[i];
            char when[32];
            const char *cells[5] = {
                az_output_time(e->time ? e->time->seconds : 0, when, sizeof when),
                e->principal,
                e->method,
                e->target_id,
                e->outcome,
            };
            if (az_table_add(tb, cells, msg)) {
                az_table_free(tb);
                return az_cli_out_of_memory(cli);
            }
        }
    }
    const Agentz__V1__ListAuditLogResponse *last =
        (const Agentz__V1__ListAuditLogResponse *)pages[npages - 1];
    return finish_table(cli, tb, "entries", last->next_page_token);
}

static int run_audit_list(az_cli *cli, const az_flag_value *v, const char *const *args, size_t nargs)
{
    char msg[AZ_MSG_MAX];
    Agentz__V1__ListAuditLogRequest req = AGENTZ__V1__LIST_AUDIT_LOG_REQUEST__INIT;
    Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    int code = page_args(cli, &v[AL_PAGE_SIZE], &req.page_size, &req.page_token);
    if (code) return code;
    if (v[AL_SINCE].count) {
        int64_t secs;
        if (az_args_days_duration("--since", v[AL_SINCE].value, &secs, msg))
            return az_cli_usage_error(cli, "%s", msg);
        start.seconds = (int64_t)time(NULL) - secs;
        req.start_time = &start;
    }
    if (v[AL_PRINCIPAL].count) req.principal = (char *)v[AL_PRINCIPAL].value;
    if (v[AL_METHOD].count) req.method = (char *)v[AL_METHOD].value;
    ProtobufCMessage **pages;
    size_t npages;
    if ((code = az_cli_fetch_pages(cli, SERVICE "ListAuditLog", &req.base, &req.page_token,
                                   &agentz__v1__list_audit_log_response__descriptor,
                                   az_args_bool(&v[AL_ALL]), &pages, &npages)))
        return code;
    code = cli->output == AZ_OUTPUT_TABLE ? print_audit_table(cli, pages, npages)
                                          : az_cli_print_pages(cli, pages, npages, "entries");
    az_cli_free_pages(pages, npages);
    return code;
}

static const az_cli_verb audit_verbs[] = {
    {"list", "", "List audit log entries, newest first, one page or --all",
     "Table columns: TIME PRINCIPAL METHOD TARGET OUTCOME. -o json|yaml adds the peer, request\n"
     "id and hash chain. Requires the admin role.",
     audit_list_flags, AL__COUNT, 0, 0, run_audit_list},
};

const az_cli_noun az_cli_audit = {
    .name = "audit",
    .alias = NULL,
    .summary = "Read the audit log of calls that changed state (or were denied)",
    .verbs = audit_verbs,
    .nverbs = sizeof audit_verbs / sizeof audit_verbs[0],
};
