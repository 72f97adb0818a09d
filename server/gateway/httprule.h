/* google.api.http path templates (the HttpRule grammar): parsed once at start-up, then matched
 * against request paths by the gateway's router. */
#ifndef AZ_HTTPRULE_H
#define AZ_HTTPRULE_H

#include <stddef.h>

#include "core/err.h"

/* Most variables one template may hold (ours have at most two). */
#define AZ_HTTPRULE_MAX_VARS 8

typedef struct az_httprule az_httprule;

/* One variable bound by a match: the request field path ("agent.id", as written in the
 * template; owned by the rule) and its value, a span of the matched path (not NUL-terminated;
 * a "**" or multi-segment variable spans its '/' separators). */
typedef struct az_httprule_binding {
    const char *field;
    const char *value;
    size_t len;
} az_httprule_binding;

/* Parses tmpl ("/v1/agents/{id}", "/v1/tasks/{id}:cancel", "/v1/{name=**}:undelete") per the
 * HttpRule grammar: Template = "/" Segments [ Verb ]; Segment = "*" | "**" | LITERAL | Variable;
 * Variable = "{" FieldPath [ "=" Segments ] "}"; Verb = ":" LITERAL. A "**" may only be last;
 * variables do not nest; FieldPath is dot-separated identifiers ("agent.id"), each bound at most
 * once, at most AZ_HTTPRULE_MAX_VARS of them. LITERAL is letters, digits and "-._~!$&'()+,;=@"
 * (no '%': paths are matched decoded). {f} means {f=*}.
 * On AZ_OK *out is a rule the caller frees with az_httprule_free. On AZ_ERR_INVALID *out is
 * NULL and msg says what is wrong and where ("template /v1/{id: '}' expected at 7").
 * AZ_ERR_NOMEM on allocation failure. */
az_err az_httprule_parse(const char *tmpl, az_httprule **out, char *msg);

/* Frees r; accepts NULL. */
void az_httprule_free(az_httprule *r);

/* The template text as parsed; owned by r. */
const char *az_httprule_template(const az_httprule *r);

/* The verb without its colon ("cancel"), or "" when the template has none; owned by r. */
const char *az_httprule_verb(const az_httprule *r);

/* The variables in template order: count, and the field path of the i-th (owned by r). */
size_t az_httprule_nvars(const az_httprule *r);
const char *az_httprule_var(const az_httprule *r, size_t i);

/* Matches path (len bytes, already percent-decoded by the HTTP layer, no query string) against
 * r. A template with a verb matches only when the path's last segment ends in ":<verb>"; a
 * template without one never takes a verb off the path. "*" and a plain {var} match one
 * non-empty segment, "**" the remaining segments (zero or more). Empty segments ("//", a
 * trailing '/') never match.
 * Returns 1 on a match with b[0..*nb) filled (at most max bindings; a template with more
 * variables than max does not match), 0 otherwise (b and *nb then unspecified). Never
 * allocates. */
int az_httprule_match(const az_httprule *r, const char *path, size_t len, az_httprule_binding *b,
                      size_t max, size_t *nb);

/* Orders rules for matching: negative when a is more specific than b (so it must be tried
 * first): more literal segments first, then fewer wildcard segments, then a verb before none,
 * then, at the first segment where they differ, a literal before "*" before "**" (so for
 * "/a/b/c" "/a/b/{y}" is tried before "/a/{x}/c"), then the template text. 0 only for identical
 * templates. */
int az_httprule_compare(const az_httprule *a, const az_httprule *b);

/* 1 when a and b match exactly the same paths: the same literals, wildcards and verb in the same
 * places, whatever their variables are called ("/v1/{id}" and "/v1/{name}"); else 0. The route
 * table refuses two such templates for one HTTP method. */
int az_httprule_same_paths(const az_httprule *a, const az_httprule *b);

#endif
