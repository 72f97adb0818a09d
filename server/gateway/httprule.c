/* google.api.http path templates: a recursive-descent parser for the HttpRule grammar, and an
 * allocation-free matcher the router runs on every REST request. */
#include "httprule.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef enum seg_kind {
    SEG_LITERAL, /* matches itself */
    SEG_STAR,    /* "*": one non-empty segment */
    SEG_DSTAR,   /* "**": every remaining segment (zero or more) */
} seg_kind;

typedef struct seg {
    seg_kind kind;
    const char *text; /* a literal's bytes, inside r->tmpl; not NUL-terminated */
    size_t len;
} seg;

typedef struct var {
    const char *field;   /* NUL-terminated, inside r->names */
    size_t first, last;  /* the segments it binds: segs[first..last) */
} var;

struct az_httprule {
    char *tmpl;  /* the template text */
    char *names; /* field paths and the verb, each NUL-terminated */
    const char *verb;
    size_t verb_len;
    seg *segs;
    size_t nsegs;
    var vars[AZ_HTTPRULE_MAX_VARS];
    size_t nvars;
    size_t nliterals, nwild; /* for az_httprule_compare */
};

/* ---- parser ---- */

typedef struct parser {
    az_httprule *r;
    const char *s; /* the template */
    size_t i;      /* read position */
    char *names;   /* write position in r->names */
    char *msg;
} parser;

static az_err syntax(parser *p, const char *what)
{
    return az_fail(p->msg, AZ_ERR_INVALID, "template %.300s: %s at %zu", p->s, what, p->i);
}

/* RFC 3986 pchar without ':' (the verb separator), '%' (paths arrive decoded, so an escape could
 * never match) and '*' (wildcards); anything else has a meaning in the grammar or no place in a
 * path. */
static bool literal_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("-._~!$&'()+,;=@", ch) != NULL);
}

static bool ident_start(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static bool ident_char(char ch) { return ident_start(ch) || (ch >= '0' && ch <= '9'); }

static az_err parse_segments(parser *p, bool in_var);

/* Segment = "*" | "**" | LITERAL, or a Variable when not already inside one. */
static az_err parse_segment(parser *p, bool in_var)
{
    az_httprule *r = p->r;
    const char *s = p->s;
    if (s[p->i] == '{') {
        if (in_var) return syntax(p, "variables cannot nest");
        if (r->nvars == AZ_HTTPRULE_MAX_VARS) return syntax(p, "too many variables");
        p->i++;
        if (!ident_start(s[p->i])) return syntax(p, "field name expected");
        var *v = &r->vars[r->nvars];
        v->field = p->names;
        for (;;) {
            while (ident_char(s[p->i])) *p->names++ = s[p->i++];
            if (s[p->i] != '.') break;
            *p->names++ = s[p->i++];
            if (!ident_start(s[p->i])) return syntax(p, "field name expected");
        }
        *p->names++ = '\0';
        for (size_t k = 0; k < r->nvars; k++)
            if (strcmp(r->vars[k].field, v->field) == 0)
                return syntax(p, "field bound by two variables");
        v->first = r->nsegs;
        if (s[p->i] == '=') {
            p->i++;
            az_err err = parse_segments(p, true);
            if (err) return err;
        } else {
            r->segs[r->nsegs++] = (seg){SEG_STAR, NULL, 0}; /* {f} means {f=*} */
        }
        if (s[p->i] != '}') return syntax(p, "'}' expected");
        p->i++;
        v->last = r->nsegs;
        r->nvars++;
        return AZ_OK;
    }
    if (s[p->i] == '*') {
        bool dstar = s[p->i + 1] == '*';
        p->i += dstar ? 2 : 1;
        if (s[p->i] == '*') return syntax(p, "'*' or '**' expected");
        r->segs[r->nsegs++] = (seg){dstar ? SEG_DSTAR : SEG_STAR, NULL, 0};
        return AZ_OK;
    }
    size_t start = p->i;
    while (literal_char(s[p->i])) p->i++;
    if (p->i == start) return syntax(p, "segment expected");
    r->segs[r->nsegs++] = (seg){SEG_LITERAL, s + start, p->i - start};
    return AZ_OK;
}

/* Segments = Segment { "/" Segment }; a "**" must be the very last segment of the template. */
static az_err parse_segments(parser *p, bool in_var)
{
    for (;;) {
        size_t at = p->i;
        az_err err = parse_segment(p, in_var);
        if (err) return err;
        if (p->s[p->i] != '/') return AZ_OK;
        if (p->r->segs[p->r->nsegs - 1].kind == SEG_DSTAR) {
            p->i = at;
            return syntax(p, "'**' must be the last segment");
        }
        p->i++;
    }
}

static az_err parse(parser *p)
{
    az_httprule *r = p->r;
    if (p->s[0] != '/') return syntax(p, "'/' expected");
    p->i = 1;
    az_err err = parse_segments(p, false);
    if (err) return err;
    r->verb = "";
    if (p->s[p->i] == ':') {
        p->i++;
        size_t start = p->i;
        while (literal_char(p->s[p->i])) p->i++;
        if (p->i == start) return syntax(p, "verb expected");
        r->verb = p->names;
        r->verb_len = p->i - start;
        memcpy(p->names, p->s + start, r->verb_len);
        p->names += r->verb_len;
        *p->names++ = '\0';
    }
    if (p->s[p->i] != '\0')
        return syntax(p, p->s[p->i] == ':' ? "only one verb allowed" : "unexpected character");
    for (size_t k = 0; k < r->nsegs; k++) {
        if (r->segs[k].kind == SEG_LITERAL)
            r->nliterals++;
        else
            r->nwild++;
    }
    return AZ_OK;
}

az_err az_httprule_parse(const char *tmpl, az_httprule **out, char *msg)
{
    if (!out) return az_fail(msg, AZ_ERR_INTERNAL, "az_httprule_parse: no output");
    *out = NULL;
    if (!tmpl) return az_fail(msg, AZ_ERR_INVALID, "template missing");
    size_t len = strlen(tmpl), nslash = 0;
    for (size_t k = 0; k < len; k++) nslash += tmpl[k] == '/';
    az_httprule *r = calloc(1, sizeof *r);
    if (r) {
        r->tmpl = malloc(len + 1);
        r->names = malloc(len + 1); /* field paths and the verb are disjoint spans of tmpl */
        /* each segment follows a '/' (the one starting the template or a separator) */
        r->segs = malloc((nslash ? nslash : 1) * sizeof *r->segs);
    }
    if (!r || !r->tmpl || !r->names || !r->segs) {
        az_httprule_free(r);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    memcpy(r->tmpl, tmpl, len + 1);
    parser p = {r, r->tmpl, 0, r->names, msg};
    az_err err = parse(&p);
    if (err) {
        az_httprule_free(r);
        return err;
    }
    *out = r;
    return AZ_OK;
}

void az_httprule_free(az_httprule *r)
{
    if (!r) return;
    free(r->tmpl);
    free(r->names);
    free(r->segs);
    free(r);
}

const char *az_httprule_template(const az_httprule *r) { return r->tmpl; }

const char *az_httprule_verb(const az_httprule *r) { return r->verb; }

size_t az_httprule_nvars(const az_httprule *r) { return r->nvars; }

const char *az_httprule_var(const az_httprule *r, size_t i)
{
    return i < r->nvars ? r->vars[i].field : NULL;
}

/* ---- matcher ---- */

int az_httprule_match(const az_httprule *r, const char *path, size_t len, az_httprule_binding *b,
                      size_t max, size_t *nb)
{
    if (!r || !path || len == 0 || path[0] != '/' || r->nvars > max) return 0;
    if (r->verb_len) {
        /* the verb comes off the last segment only: in "/a:b/c:verb" "a:b" is a plain segment */
        size_t need = r->verb_len + 1;
        if (len <= need || path[len - need] != ':' ||
            memcmp(path + len - r->verb_len, r->verb, r->verb_len) != 0)
            return 0;
        len -= need;
    }
    /* pos: where the next segment starts; len + 1 once the path is used up */
    size_t pos = 1, v = 0, vstart = 0;
    for (size_t k = 0; k < r->nsegs; k++) {
        const seg *sg = &r->segs[k];
        size_t start = pos, end;
        if (sg->kind == SEG_DSTAR && pos == len + 1) {
            start = end = len; /* "**" matching no segment at all */
        } else {
            if (pos >= len) return 0; /* nothing left, or an empty segment after a final '/' */
            if (sg->kind == SEG_DSTAR) {
                end = len;
                for (size_t q = start; q < end; q++) /* no empty segment inside or at the end */
                    if (path[q] == '/' && (q == start || path[q - 1] == '/' || q + 1 == end))
                        return 0;
            } else {
                const char *slash = memchr(path + start, '/', len - start);
                end = slash ? (size_t)(slash - path) : len;
                if (end == start) return 0;
                if (sg->kind == SEG_LITERAL &&
                    (end - start != sg->len || memcmp(path + start, sg->text, sg->len) != 0))
                    return 0;
            }
        }
        if (v < r->nvars && r->vars[v].first == k) vstart = start;
        if (v < r->nvars && r->vars[v].last == k + 1) {
            b[v] = (az_httprule_binding){r->vars[v].field, path + vstart, end - vstart};
            v++;
        }
        pos = end + 1;
    }
    if (pos != len + 1) return 0;
    *nb = r->nvars;
    return 1;
}

/* A literal sorts before "*", which sorts before "**": the narrower segment first. */
static int seg_rank(const seg *s) { return s->kind == SEG_LITERAL ? 0 : s->kind == SEG_STAR ? 1 : 2; }

int az_httprule_compare(const az_httprule *a, const az_httprule *b)
{
    if (a->nliterals != b->nliterals) return a->nliterals > b->nliterals ? -1 : 1;
    if (a->nwild != b->nwild) return a->nwild < b->nwild ? -1 : 1;
    if ((a->verb_len != 0) != (b->verb_len != 0)) return a->verb_len ? -1 : 1;
    size_t n = a->nsegs < b->nsegs ? a->nsegs : b->nsegs;
    for (size_t k = 0; k < n; k++) {
        int ra = seg_rank(&a->segs[k]), rb = seg_rank(&b->segs[k]);
        if (ra != rb) return ra < rb ? -1 : 1;
    }
    int c = strcmp(a->tmpl, b->tmpl);
    return c < 0 ? -1 : c > 0;
}

int az_httprule_same_paths(const az_httprule *a, const az_httprule *b)
{
    if (a->nsegs != b->nsegs || a->verb_len != b->verb_len ||
        memcmp(a->verb, b->verb, a->verb_len) != 0)
        return 0;
    for (size_t k = 0; k < a->nsegs; k++) {
        const seg *x = &a->segs[k], *y = &b->segs[k];
        if (x->kind != y->kind ||
            (x->kind == SEG_LITERAL && (x->len != y->len || memcmp(x->text, y->text, x->len) != 0)))
            return 0;
    }
    return 1;
}
