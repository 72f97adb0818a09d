/* Fuzzes what the server does with credentials before it trusts anything: the authorizer's
 * metadata handling (server/auth/auth: "Bearer" split, x-api-key, the permission-table lookup of
 * the method) and the session-token (JWT) structure checks of server/auth/jwt (segments,
 * base64url, header JSON, alg/typ/crit/kid) that run before any key or network is used.
 * Input: the authorization value, a newline, the x-api-key value, a newline, the method path;
 * missing parts are absent metadata. */
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "auth/jwt.h"
#include "fuzz.h"

static az_auth *auth;
static az_jwt_verifier *verifier;

/* Session keys live at a loopback port nothing listens on (a token with an unknown kid costs
 * at most one refused connection per hour) and there is no database (API keys fail INTERNAL
 * "no database" before any query): no input can authenticate, so every input ends in parsing. */
static void init(void)
{
    static const char jwks[] = "http://127.0.0.1:1/.well-known/jwks.json";
    static const char issuer[] = "https://fuzz.clerk.accounts.dev";
    char msg[AZ_MSG_MAX];
    az_jwt_config jc = {.jwks_url = jwks, .issuer = issuer, .refresh_interval_ms = 3600 * 1000,
                        .timeout_ms = 200};
    verifier = az_jwt_verifier_new(&jc, msg);
    AZ_FUZZ_CHECK(verifier != NULL, "cannot create the verifier: %s", msg);
    az_auth_config ac = {.listen = "127.0.0.1:0", .jwks_url = jwks, .jwt_issuer = issuer,
                         .jwt_refresh_interval_ms = 3600 * 1000};
    auth = az_auth_new(&ac, NULL, msg);
    AZ_FUZZ_CHECK(auth != NULL, "cannot create the authorizer: %s", msg);
}

/* The next '\n'-terminated part of *s (NUL-terminated in place), or NULL when none is left. */
static char *next_part(char **s)
{
    if (!*s) return NULL;
    char *part = *s, *nl = strchr(part, '\n');
    if (nl) *nl = '\0';
    *s = nl ? nl + 1 : NULL;
    return part;
}

/* Credentials must never be echoed (docs/security.md): a long one must not show up in msg. */
static void check_not_echoed(const char *cred, const char *msg)
{
    AZ_FUZZ_CHECK(!cred || strlen(cred) < 24 || !strstr(msg, cred),
                  "the message echoes the credential: %s", msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!auth) init();
    /* Metadata values are strings: gRPC hands the server no NUL bytes, so stop at the first. */
    char *copy = malloc(size + 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *rest = copy;
    const char *authorization = next_part(&rest);
    const char *x_api_key = next_part(&rest);
    const char *method = rest ? rest : "/agentz.v1.AgentService/ListAgents";

    char msg[AZ_MSG_MAX] = "";
    az_principal p;
    az_err err = az_auth_resolve(auth, authorization, x_api_key, method, &p, msg);
    AZ_FUZZ_CHECK(err == AZ_OK || err == AZ_ERR_UNAUTHENTICATED || err == AZ_ERR_INTERNAL,
                  "unexpected result %d: %s", (int)err, msg);
    /* Only public and unknown methods pass, and they pass anonymously. */
    AZ_FUZZ_CHECK(err != AZ_OK || (p.id[0] == '\0' && p.role == 0),
                  "an unverifiable credential authenticated as %s", p.id);
    if (err != AZ_OK) {
        check_not_echoed(authorization, msg);
        check_not_echoed(x_api_key, msg);
    }

    if (authorization) {
        const char *token = strncasecmp(authorization, "Bearer ", 7) == 0 ? authorization + 7
                                                                           : authorization;
        az_jwt_claims claims;
        err = az_jwt_verify(verifier, token, &claims, msg);
        AZ_FUZZ_CHECK(err == AZ_ERR_UNAUTHENTICATED, "an unsigned token got %d: %s", (int)err,
                      msg);
        check_not_echoed(token, msg);
    }
    free(copy);
    return 0;
}
