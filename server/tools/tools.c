/* The tool registry and the built-in tools (http_fetch, current_time, calculator). The registry
 * parses and checks arguments against each tool's JSON schema, runs the handler and turns every
 * outcome into a capped, valid UTF-8 observation for the model. */
#include "tools.h"

#include "core/text.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TRUNCATED_MARK "\xe2\x80\xa6[truncated]" /* "…[truncated]" */
#define ZONEINFO_DIR "/usr/share/zoneinfo"
#define TZ_NAME_MAX 64
#define TITLE_MAX_CHARS 300

/* ---------------------------------------------------------------------------------------------
 * Growable strings and UTF-8 */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_putc(sbuf *b, char c)
{
    sb_put(b, &c, 1);
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_free(sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void sb_utf8(sbuf *b, uint32_t cp)
{
    char u[4];
    if (cp < 0x80) {
        u[0] = (char)cp;
        sb_put(b, u, 1);
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f));
        sb_put(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        sb_put(b, u, 3);
    } else {
        u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        u[2] = (char)(0x80 | (cp >> 6 & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f));
        sb_put(b, u, 4);
    }
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when it is not one (overlongs,
 * surrogates and code points past U+10FFFF included). */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    size_t k;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) k = 1, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) k = 2, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) k = 3, cp = c & 0x07;
    else return 0;
    if (k >= len) return 0;
    for (size_t j = 1; j <= k; j++) {
        if ((s[j] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[j] & 0x3f);
    }
    static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return k + 1;
}

/* Appends s to b as valid UTF-8: invalid bytes become U+FFFD, control characters but for
 * \t \n \r are dropped (a model gains nothing from them and terminals may). */
static void sb_sanitized(sbuf *b, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0; /* [i - run, i) is clean and not yet copied */
    while (i < len) {
        size_t k = utf8_seq(u + i, len - i);
        int bad = k == 0;
        int ctl = k == 1 && (u[i] < 0x20 || u[i] == 0x7f) && u[i] != '\t' && u[i] != '\n' &&
                  u[i] != '\r';
        if (!bad && !ctl) {
            i += k, run += k;
            continue;
        }
        sb_put(b, s + i - run, run);
        run = 0;
        if (bad) sb_puts(b, "\xef\xbf\xbd");
        i++;
    }
    sb_put(b, s + i - run, run);
}

/* Bytes of the first max_chars code points of valid UTF-8 s. */
static size_t utf8_prefix(const char *s, size_t len, size_t max_chars)
{
    size_t i = 0, n = 0;
    while (i < len && n < max_chars) {
        i++;
        while (i < len && ((unsigned char)s[i] & 0xc0) == 0x80) i++;
        n++;
    }
    return i;
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Results */

static az_err result_take(az_tool_result *out, int is_error, sbuf *b)
{
    free(out->text);
    out->text = NULL, out->len = 0, out->is_error = is_error;
    if (b->oom || !b->p) {
        sb_free(b);
        return AZ_ERR_NOMEM;
    }
    out->text = b->p, out->len = b->len;
    memset(b, 0, sizeof *b);
    return AZ_OK;
}

az_err az_tools_result_set(az_tool_result *out, int is_error, const char *text)
{
    sbuf b = {0};
    sb_puts(&b, text ? text : "");
    return result_take(out, is_error, &b);
}

static az_err result_vprintf(az_tool_result *out, int is_error, const char *prefix,
                             const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return AZ_ERR_INTERNAL;
    size_t plen = strlen(prefix);
    char *p = malloc(plen + (size_t)n + 1);
    if (!p) return AZ_ERR_NOMEM;
    memcpy(p, prefix, plen);
    vsnprintf(p + plen, (size_t)n + 1, fmt, ap);
    free(out->text);
    out->text = p, out->len = plen + (size_t)n, out->is_error = is_error;
    return AZ_OK;
}

az_err az_tools_result_printf(az_tool_result *out, int is_error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    az_err e = result_vprintf(out, is_error, "", fmt, ap);
    va_end(ap);
    return e;
}

az_err az_tools_result_error(az_tool_result *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    az_err e = result_vprintf(out, 1, "error: ", fmt, ap);
    va_end(ap);
    return e;
}

void az_tools_result_free(az_tool_result *r)
{
    if (!r) return;
    free(r->text);
    memset(r, 0, sizeof *r);
}

/* ---------------------------------------------------------------------------------------------
 * Registry */

typedef struct tool {
    char name[AZ_TOOLS_NAME_MAX + 1];
    char *description; /* owned unless builtin */
    json_t *schema;    /* a reference of ours unless builtin (then the shared parse) */
    az_tools_fn fn;
    void *arg;
    az_tool_limits limits;
    int builtin;
} tool;

struct az_tools {
    az_tools_config cfg;
    char *proxy;
    size_t n;
    tool tools[AZ_TOOLS_MAX];
};

/* Reads the registry's config from a built-in handler's arg. */
static const az_tools_config *config_of(void *arg)
{
    return &((const az_tools *)arg)->cfg;
}

/* ---------------------------------------------------------------------------------------------
 * calculator: recursive descent over doubles.
 *   expr  := term (('+'|'-') term)*
 *   term  := unary (('*'|'/'|'%') unary)*
 *   unary := ('-'|'+') unary | power
 *   power := primary ('^' unary)?          right-associative; -2^2 = -(2^2)
 *   primary := number | constant | function '(' expr (',' expr)* ')' | '(' expr ')'
 * Every recursion passes through unary, so counting depth there bounds the C stack. */

typedef struct calc {
    const char *s;
    size_t pos;
    int depth;
    char err[200];
} calc;

static const struct calc_fn {
    const char *name;
    int nargs;
    double (*f1)(double);
    double (*f2)(double, double);
} calc_fns[] = {
    {"sqrt", 1, sqrt, NULL},   {"abs", 1, fabs, NULL},    {"ln", 1, log, NULL},
    {"log10", 1, log10, NULL}, {"exp", 1, exp, NULL},     {"sin", 1, sin, NULL},
    {"cos", 1, cos, NULL},     {"tan", 1, tan, NULL},     {"floor", 1, floor, NULL},
    {"ceil", 1, ceil, NULL},   {"round", 1, round, NULL}, {"min", 2, NULL, fmin},
    {"max", 2, NULL, fmax},
};

static const struct calc_const {
    const char *name;
    double value;
} calc_consts[] = {{"pi", M_PI}, {"e", M_E}};

static int calc_fail(calc *c, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int calc_fail(calc *c, size_t pos, const char *fmt, ...)
{
    if (c->err[0]) return -1; /* the innermost error is the precise one */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof c->err)
        snprintf(c->err + n, sizeof c->err - (size_t)n, " at position %zu", pos + 1);
    return -1;
}

static void calc_ws(calc *c)
{
    while (c->s[c->pos] == ' ' || c->s[c->pos] == '\t' || c->s[c->pos] == '\n' ||
           c->s[c->pos] == '\r')
        c->pos++;
}

static int calc_expr(calc *c, double *v);
static int calc_unary(calc *c, double *v);

static int calc_number(calc *c, double *v)
{
    const char *s = c->s;
    size_t start = c->pos, i = start, digits = 0;
    while (isdigit((unsigned char)s[i])) i++, digits++;
    if (s[i] == '.') {
        i++;
        while (isdigit((unsigned char)s[i])) i++, digits++;
    }
    if (!digits) return calc_fail(c, start, "malformed number");
    if (s[i] == 'e' || s[i] == 'E') {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-') j++;
        if (!isdigit((unsigned char)s[j])) return calc_fail(c, start, "malformed number");
        while (isdigit((unsigned char)s[j])) j++;
        i = j;
    }
    /* The span is checked above, so strtod sees only digits, '.', and an exponent: no hex, inf
     * or nan sneaks in. Copy so strtod cannot read past the number. */
    char buf[128];
    if (i - start >= sizeof buf) return calc_fail(c, start, "number too long");
    memcpy(buf, s + start, i - start);
    buf[i - start] = '\0';
    *v = strtod(buf, NULL);
    if (!isfinite(*v)) return calc_fail(c, start, "number out of range");
    c->pos = i;
    return 0;
}

static void calc_known(char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof calc_fns / sizeof *calc_fns && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", calc_fns[i].name);
    for (size_t i = 0; i < sizeof calc_consts / sizeof *calc_consts && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, ", %s", calc_consts[i].name);
}

static int calc_ident(calc *c, double *v)
{
    size_t start = c->pos, i = start;
    while (isalnum((unsigned char)c->s[i]) || c->s[i] == '_') i++;
    size_t n = i - start;
    c->pos = i;
    for (size_t k = 0; k < sizeof calc_consts / sizeof *calc_consts; k++) {
        if (strlen(calc_consts[k].name) == n && strncasecmp(c->s + start, calc_consts[k].name, n) == 0) {
            *v = calc_consts[k].value;
            return 0;
        }
    }
    const struct calc_fn *fn = NULL;
    for (size_t k = 0; k < sizeof calc_fns / sizeof *calc_fns; k++) {
        if (strlen(calc_fns[k].name) == n && strncasecmp(c->s + start, calc_fns[k].name, n) == 0)
            fn = &calc_fns[k];
    }
    if (!fn) {
        char known[160];
        calc_known(known, sizeof known);
        c->pos = start;
        int shown = n > 32 ? 32 : (int)n;
        calc_fail(c, start, "unknown identifier \"%.*s\"", shown, c->s + start);
        size_t l = strlen(c->err);
        snprintf(c->err + l, sizeof c->err - l, " (known: %s)", known);
        return -1;
    }
    calc_ws(c);
    if (c->s[c->pos] != '(') return calc_fail(c, c->pos, "expected '(' after %s", fn->name);
    c->pos++;
    double a[2];
    for (int k = 0; k < fn->nargs; k++) {
        if (k) {
            calc_ws(c);
            if (c->s[c->pos] != ',')
                return calc_fail(c, c->pos, "%s takes %d arguments: expected ','", fn->name,
                                 fn->nargs);
            c->pos++;
        }
        if (calc_expr(c, &a[k]) < 0) return -1;
    }
    calc_ws(c);
    if (c->s[c->pos] == ',')
        return calc_fail(c, c->pos, "%s takes %d argument%s", fn->name, fn->nargs,
                         fn->nargs == 1 ? "" : "s");
    if (c->s[c->pos] != ')') return calc_fail(c, c->pos, "expected ')'");
    c->pos++;
    *v = fn->nargs == 1 ? fn->f1(a[0]) : fn->f2(a[0], a[1]);
    if (isnan(*v)) return calc_fail(c, start, "%s is undefined for that argument", fn->name);
    return 0;
}

static int calc_primary(calc *c, double *v)
{
    calc_ws(c);
    char ch = c->s[c->pos];
    if (isdigit((unsigned char)ch) || ch == '.') return calc_number(c, v);
    if (isalpha((unsigned char)ch) || ch == '_') return calc_ident(c, v);
    if (ch == '(') {
        size_t open = c->pos++;
        if (calc_expr(c, v) < 0) return -1;
        calc_ws(c);
        if (c->s[c->pos] != ')') return calc_fail(c, open, "unclosed '('");
        c->pos++;
        return 0;
    }
    if (!ch) return calc_fail(c, c->pos, "unexpected end of expression");
    return calc_fail(c, c->pos, "unexpected character '%c'", isprint((unsigned char)ch) ? ch : '?');
}

static int calc_power(calc *c, double *v)
{
    if (calc_primary(c, v) < 0) return -1;
    calc_ws(c);
    if (c->s[c->pos] != '^') return 0;
    c->pos++;
    double r;
    if (calc_unary(c, &r) < 0) return -1;
    *v = pow(*v, r);
    return 0;
}

static int calc_unary(calc *c, double *v)
{
    if (++c->depth > AZ_TOOLS_CALC_DEPTH_MAX) {
        calc_fail(c, c->pos, "expression nests deeper than %d levels", AZ_TOOLS_CALC_DEPTH_MAX);
        c->depth--;
        return -1;
    }
    calc_ws(c);
    int rc;
    char ch = c->s[c->pos];
    if (ch == '-' || ch == '+') {
        c->pos++;
        rc = calc_unary(c, v);
        if (rc == 0 && ch == '-') *v = -*v;
    } else {
        rc = calc_power(c, v);
    }
    c->depth--;
    return rc;
}

static int calc_term(calc *c, double *v)
{
    if (calc_unary(c, v) < 0) return -1;
    for (;;) {
        calc_ws(c);
        char op = c->s[c->pos];
        if (op != '*' && op != '/' && op != '%') return 0;
        size_t at = c->pos++;
        double r;
        if (calc_unary(c, &r) < 0) return -1;
        if ((op == '/' || op == '%') && r == 0) return calc_fail(c, at, "division by zero");
        *v = op == '*' ? *v * r : op == '/' ? *v / r : fmod(*v, r);
    }
}

static int calc_expr(calc *c, double *v)
{
    if (calc_term(c, v) < 0) return -1;
    for (;;) {
        calc_ws(c);
        char op = c->s[c->pos];
        if (op != '+' && op != '-') return 0;
        c->pos++;
        double r;
        if (calc_term(c, &r) < 0) return -1;
        *v = op == '+' ? *v + r : *v - r;
    }
}

static az_err tool_calculator(void *arg, const json_t *args, az_tool_result *out, char *msg)
{
    const char *expr = json_string_value(json_object_get(args, "expression"));
    calc c = {.s = expr};
    calc_ws(&c);
    if (!expr[c.pos]) return az_tools_result_error(out, "expression is empty");
    double v;
    if (calc_expr(&c, &v) == 0) {
        calc_ws(&c);
        if (c.s[c.pos]) calc_fail(&c, c.pos, "unexpected trailing input");
    }
    if (c.err[0]) return az_tools_result_error(out, "%s", c.err);
    if (!isfinite(v)) return az_tools_result_error(out, "result is not a finite number");
    if (v == 0) v = 0; /* no "-0" */
    return az_tools_result_printf(out, 0, "%.15g", v);
}

/* ---------------------------------------------------------------------------------------------
 * current_time. Fixed offsets are computed directly. IANA zones need the C library's tz code,
 * which only reads the process-wide TZ: tz_lock serialises setenv("TZ")+tzset()+localtime_r
 * and the restore. Other threads calling localtime()/mktime() while the lock is held could see
 * the borrowed zone; AGENTZ logs and stores times in UTC (gmtime_r), which TZ does not affect. */

static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;

/* Writes "2026-11-24T06:00:00+01:00" (or ...Z when utc_z and the offset is 0). */
static void rfc3339(const struct tm *tm, long off, int utc_z, char *buf, size_t len)
{
    char date[40];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", tm);
    if (utc_z && off == 0) {
        snprintf(buf, len, "%sZ", date);
        return;
    }
    long a = off < 0 ? -off : off;
    snprintf(buf, len, "%s%c%02ld:%02ld", date, off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
}

/* Parses "+05:30", "-0800", "+09" into seconds east of UTC. 0 on success. */
static int parse_offset(const char *s, long *off)
{
    if (s[0] != '+' && s[0] != '-') return -1;
    int d[4], nd = 0;
    const char *p = s + 1;
    for (; *p && nd < 4; p++) {
        if (isdigit((unsigned char)*p)) d[nd++] = *p - '0';
        else if (!(*p == ':' && nd == 2)) return -1;
    }
    if (*p || (nd != 2 && nd != 4) || (p[-1] == ':')) return -1;
    long h = d[0] * 10 + d[1], m = nd == 4 ? d[2] * 10 + d[3] : 0;
    if (h > 14 || m > 59) return -1;
    *off = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return 0;
}

/* 1 when name is a plausible IANA zone ("Europe/Paris", "America/Argentina/Buenos_Aires",
 * "Etc/GMT+5") that exists as a TZif file under the zoneinfo directory. Only [A-Za-z0-9_+-/]
 * with no empty, "." or ".." components, so the name cannot leave that directory. */
static int tz_exists(const char *name)
{
    size_t n = strlen(name);
    if (!n || n > TZ_NAME_MAX || name[0] == '/' || name[n - 1] == '/') return 0;
    for (const char *p = name; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("_+-/", *p)) return 0;
        if (*p == '/' && p[1] == '/') return 0;
        if ((p == name || p[-1] == '/') && *p == '.') return 0;
    }
    char path[sizeof ZONEINFO_DIR + TZ_NAME_MAX + 2];
    snprintf(path, sizeof path, "%s/%s", ZONEINFO_DIR, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char magic[4];
    ssize_t r = read(fd, magic, sizeof magic);
    close(fd);
    return r == 4 && memcmp(magic, "TZif", 4) == 0;
}

static int zone_local(const char *name, time_t now, struct tm *tm)
{
    char tz[TZ_NAME_MAX + 2];
    snprintf(tz, sizeof tz, ":%s", name); /* ':' makes glibc read the file, never a rule */
    pthread_mutex_lock(&tz_lock);
    const char *old = getenv("TZ");
    char *saved = old ? strdup(old) : NULL;
    int ok = (!old || saved) && setenv("TZ", tz, 1) == 0;
    if (ok) {
        tzset();
        ok = localtime_r(&now, tm) != NULL;
        if (saved) setenv("TZ", saved, 1);
        else unsetenv("TZ");
        tzset();
    }
    pthread_mutex_unlock(&tz_lock);
    free(saved);
    return ok ? 0 : -1;
}

static az_err tool_current_time(void *arg, const json_t *args, az_tool_result *out, char *msg)
{
    const char *zone = json_string_value(json_object_get(args, "timezone"));
    if (!zone || !*zone) zone = "UTC";
    time_t now = time(NULL);
    struct tm tm;
    char when[64];
    long off;
    if (strcasecmp(zone, "UTC") == 0 || strcasecmp(zone, "Z") == 0 || strcasecmp(zone, "GMT") == 0) {
        gmtime_r(&now, &tm);
        rfc3339(&tm, 0, 1, when, sizeof when);
        return az_tools_result_printf(out, 0, "%s (UTC)", when);
    }
    if (zone[0] == '+' || zone[0] == '-') {
        if (parse_offset(zone, &off) < 0)
            return az_tools_result_error(out, "timezone \"%s\": offsets look like +05:30 or -08:00 "
                                              "(at most 14 hours)", zone);
        time_t shifted = now + off;
        gmtime_r(&shifted, &tm);
        rfc3339(&tm, off, 0, when, sizeof when);
        return az_tools_result_printf(out, 0, "%s (UTC%c%02ld:%02ld)", when, off < 0 ? '-' : '+',
                                      labs(off) / 3600, labs(off) / 60 % 60);
    }
    if (!tz_exists(zone))
        return az_tools_result_error(out, "unknown timezone \"%s\" (use an IANA name such as "
                                          "Europe/Paris, an offset such as +05:30, or UTC)", zone);
    if (zone_local(zone, now, &tm) < 0)
        return az_fail(msg, AZ_ERR_NOMEM, "cannot convert the time to %s", zone);
    rfc3339(&tm, tm.tm_gmtoff, 0, when, sizeof when);
    return az_tools_result_printf(out, 0, "%s (%s)", when, zone);
}

/* ---------------------------------------------------------------------------------------------
 * HTML to text: drop scripts, styles and tags, decode entities, collapse whitespace, keep the
 * title apart. A forgiving scanner, not a parser: it must never fail on broken markup. */

/* Appends text collapsing whitespace: a run containing a block boundary becomes "\n", else " ";
 * none at the start. The pending run is flushed only before the next visible character, so none at the end. */
typedef struct textout {
    sbuf *b;
    int pending; /* 0 none, 1 space, 2 newline */
} textout;

static void to_ws(textout *t, int nl)
{
    if (nl) t->pending = 2;
    else if (!t->pending) t->pending = 1;
}

static void to_put(textout *t, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        /* Source line breaks are ordinary whitespace in HTML; only block elements break. */
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v' || ch == '\n') {
            to_ws(t, 0);
            continue;
        }
        if (t->pending && t->b->len) sb_putc(t->b, t->pending == 2 ? '\n' : ' ');
        t->pending = 0;
        sb_putc(t->b, ch);
    }
}

static const struct entity {
    const char *name;
    uint32_t cp;
} entities[] = {
    {"amp", '&'},      {"lt", '<'},         {"gt", '>'},         {"quot", '"'},
    {"apos", '\''},    {"nbsp", ' '},       {"copy", 0xa9},      {"reg", 0xae},
    {"trade", 0x2122}, {"mdash", 0x2014},   {"ndash", 0x2013},   {"hellip", 0x2026},
    {"lsquo", 0x2018}, {"rsquo", 0x2019},   {"ldquo", 0x201c},   {"rdquo", 0x201d},
    {"laquo", 0xab},   {"raquo", 0xbb},     {"middot", 0xb7},    {"bull", 0x2022},
    {"euro", 0x20ac},  {"pound", 0xa3},     {"yen", 0xa5},       {"cent", 0xa2},
    {"deg", 0xb0},     {"times", 0xd7},     {"divide", 0xf7},    {"shy", 0},
};

/* Decodes the entity at s[0] == '&' into t; returns bytes consumed (1 and a literal '&' when it
 * is not an entity we know). */
static size_t html_entity(const char *s, size_t n, textout *t)
{
    uint32_t cp = 0;
    size_t i = 1;
    if (i < n && s[i] == '#') {
        i++;
        int hex = i < n && (s[i] == 'x' || s[i] == 'X');
        if (hex) i++;
        size_t start = i;
        while (i < n && i - start < 8 && (hex ? isxdigit((unsigned char)s[i]) : isdigit((unsigned char)s[i]))) {
            cp = cp * (hex ? 16 : 10) +
                 (uint32_t)(isdigit((unsigned char)s[i]) ? s[i] - '0' : (tolower((unsigned char)s[i]) - 'a' + 10));
            i++;
        }
        if (i == start) {
            to_put(t, "&", 1);
            return 1;
        }
        if (i < n && s[i] == ';') i++;
        if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
            (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7f ||
            (cp >= 0x80 && cp < 0xa0))
            cp = 0xfffd;
        if (cp == 0xa0) cp = ' '; /* like &nbsp;: whitespace to collapse */
    } else {
        size_t start = i;
        while (i < n && i - start < 8 && isalnum((unsigned char)s[i])) i++;
        if (i >= n || s[i] != ';') {
            to_put(t, "&", 1);
            return 1;
        }
        const struct entity *e = NULL;
        for (size_t k = 0; k < sizeof entities / sizeof *entities; k++) {
            if (strlen(entities[k].name) == i - start && memcmp(entities[k].name, s + start, i - start) == 0)
                e = &entities[k];
        }
        if (!e) {
            to_put(t, "&", 1);
            return 1;
        }
        i++;
        if (!e->cp) return i; /* &shy; renders as nothing */
        cp = e->cp;
    }
    if (cp < 0x80) {
        char ch = (char)cp;
        to_put(t, &ch, 1);
    } else {
        sbuf tmp = {0};
        sb_utf8(&tmp, cp);
        to_put(t, tmp.p ? tmp.p : "", tmp.len);
        if (tmp.oom) t->b->oom = 1;
        sb_free(&tmp);
    }
    return i;
}

/* Elements whose content is never text. */
static const char *const skip_content[] = {"script", "style", "template", "svg"};
/* Elements that break lines. */
static const char *const block_tags[] = {
    "address", "article", "aside", "blockquote", "body", "br", "dd", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "head", "header", "hr", "html", "li", "main", "nav", "ol", "option", "p", "pre", "section",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
};

static int name_is(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(name, list[i]) == 0) return 1;
    }
    return 0;
}

/* Finds "</name" (case-insensitive) at or after s+i; returns its offset or n. */
static size_t find_close(const char *s, size_t n, size_t i, const char *name)
{
    size_t nl = strlen(name);
    for (; i + 2 + nl <= n; i++) {
        if (s[i] == '<' && s[i + 1] == '/' && strncasecmp(s + i + 2, name, nl) == 0) {
            char after = i + 2 + nl < n ? s[i + 2 + nl] : '>';
            if (!isalnum((unsigned char)after)) return i;
        }
    }
    return n;
}

/* Skips a tag starting at s[i] == '<' to just past its '>', honouring quoted attributes. */
static size_t skip_tag(const char *s, size_t n, size_t i)
{
    char quote = 0;
    for (i++; i < n; i++) {
        if (quote) {
            if (s[i] == quote) quote = 0;
        } else if (s[i] == '"' || s[i] == '\'') {
            quote = s[i];
        } else if (s[i] == '>') {
            return i + 1;
        }
    }
    return n;
}

static void html_decode_into(const char *s, size_t n, textout *t)
{
    for (size_t i = 0; i < n;) {
        if (s[i] == '&') i += html_entity(s + i, n - i, t);
        else to_put(t, s + i++, 1);
    }
}

static void html_extract(const char *s, size_t n, sbuf *text, sbuf *title)
{
    textout body = {text, 0};
    int have_title = 0;
    size_t i = 0;
    while (i < n) {
        if (s[i] == '&') {
            i += html_entity(s + i, n - i, &body);
            continue;
        }
        if (s[i] != '<') {
            size_t j = i;
            while (j < n && s[j] != '<' && s[j] != '&') j++;
            to_put(&body, s + i, j - i);
            i = j;
            continue;
        }
        if (n - i >= 4 && memcmp(s + i, "<!--", 4) == 0) {
            const char *end = memmem(s + i + 4, n - i - 4, "-->", 3);
            i = end ? (size_t)(end - s) + 3 : n;
            continue;
        }
        size_t j = i + 1;
        int closing = j < n && s[j] == '/';
        if (closing) j++;
        if (j >= n || !isalpha((unsigned char)s[j])) {
            if (j < n && (s[j] == '!' || s[j] == '?')) { /* doctype, processing instruction */
                i = skip_tag(s, n, i);
                continue;
            }
            to_put(&body, "<", 1); /* a stray '<' in text */
            i++;
            continue;
        }
        char name[16];
        size_t k = 0;
        while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '-') ) {
            if (k < sizeof name - 1) name[k++] = (char)tolower((unsigned char)s[j]);
            j++;
        }
        name[k] = '\0';
        size_t after = skip_tag(s, n, i);
        if (!closing && name_is(name, skip_content, sizeof skip_content / sizeof *skip_content)) {
            size_t close = find_close(s, n, after, name);
            i = close < n ? skip_tag(s, n, close) : n;
            to_ws(&body, 0);
            continue;
        }
        if (!closing && strcmp(name, "title") == 0) {
            size_t close = find_close(s, n, after, name);
            if (!have_title) {
                textout tt = {title, 0};
                html_decode_into(s + after, (close < n ? close : n) - after, &tt);
                have_title = 1;
            }
            i = close < n ? skip_tag(s, n, close) : n;
            continue;
        }
        if (name_is(name, block_tags, sizeof block_tags / sizeof *block_tags)) to_ws(&body, 1);
        i = after;
    }
}

/* ---------------------------------------------------------------------------------------------
 * http_fetch */

typedef enum ctype { CT_UNSUPPORTED, CT_HTML, CT_TEXT } ctype;

/* Media types we turn into text; a trailing '*' matches a prefix, a leading '*' a suffix. */
static const struct media {
    const char *pattern;
    ctype kind;
} media_types[] = {
    {"text/html", CT_HTML},        {"application/xhtml+xml", CT_HTML}, {"text/*", CT_TEXT},
    {"application/json", CT_TEXT}, {"*+json", CT_TEXT},                {"application/xml", CT_TEXT},
    {"*+xml", CT_TEXT},
};

/* Lowercased media type of a Content-Type value ("text/html; charset=x" -> "text/html"). */
static void media_type(const char *ct, char *buf, size_t len)
{
    size_t k = 0;
    while (ct && (*ct == ' ' || *ct == '\t')) ct++;
    for (; ct && *ct && *ct != ';' && *ct != ' ' && k + 1 < len; ct++)
        buf[k++] = (char)tolower((unsigned char)*ct);
    buf[k] = '\0';
}

static ctype classify(const char *mt)
{
    size_t n = strlen(mt);
    for (size_t i = 0; i < sizeof media_types / sizeof *media_types; i++) {
        const char *p = media_types[i].pattern;
        size_t pl = strlen(p);
        int hit = p[pl - 1] == '*'  ? n >= pl - 1 && strncmp(mt, p, pl - 1) == 0
                  : p[0] == '*'     ? n >= pl - 1 && strcmp(mt + n - (pl - 1), p + 1) == 0
                                    : strcmp(mt, p) == 0;
        if (hit && n) return media_types[i].kind;
    }
    return CT_UNSUPPORTED;
}

/* 1 when the Content-Type names a single-byte Latin charset, which we widen to UTF-8 (the
 * common non-UTF-8 case; anything else is taken as UTF-8 and repaired). */
static int charset_latin1(const char *ct)
{
    const char *p = ct ? strcasestr(ct, "charset=") : NULL;
    if (!p) return 0;
    p += 8;
    if (*p == '"') p++;
    static const char *const latin[] = {"iso-8859-1", "latin1", "iso_8859-1", "windows-1252",
                                        "us-ascii"};
    for (size_t i = 0; i < sizeof latin / sizeof *latin; i++) {
        if (strncasecmp(p, latin[i], strlen(latin[i])) == 0) return 1;
    }
    return 0;
}

typedef struct fetch {
    const az_tools_config *cfg;
    CURL *h;
    sbuf body;
    size_t max;
    int typed, too_big, bad_type, cancelled;
    char mtype[96];
    az_netguard_curl ng; /* the outbound policy's record of this fetch's connections */
} fetch;

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    fetch *f = ud;
    size_t n = size * nmemb;
    if (!f->typed) {
        /* Decide on the first chunk, so a 2 MiB image is refused after a few KiB. */
        char *ct = NULL;
        curl_easy_getinfo(f->h, CURLINFO_CONTENT_TYPE, &ct);
        media_type(ct, f->mtype, sizeof f->mtype);
        f->typed = 1;
        if (classify(f->mtype) == CT_UNSUPPORTED) {
            f->bad_type = 1;
            return 0;
        }
    }
    if (n > f->max - f->body.len) {
        f->too_big = 1;
        return 0;
    }
    sb_put(&f->body, p, n);
    return f->body.oom ? 0 : n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    fetch *f = ud;
    if (f->cfg->cancelled && f->cfg->cancelled(f->cfg->cancel_arg)) {
        f->cancelled = 1;
        return 1;
    }
    return 0;
}

/* What a failed transfer tells the model; errbuf details follow in parentheses. */
static const struct curl_msg {
    CURLcode code;
    const char *text;
} curl_msgs[] = {
    {CURLE_OPERATION_TIMEDOUT, "the request timed out"},
    {CURLE_TOO_MANY_REDIRECTS, "too many redirects (at most 5 are followed)"},
    {CURLE_COULDNT_RESOLVE_HOST, "cannot resolve the host name"},
    {CURLE_COULDNT_CONNECT, "cannot connect to the server"},
    {CURLE_UNSUPPORTED_PROTOCOL, "redirected to a URL that is not http or https"},
    {CURLE_PEER_FAILED_VERIFICATION, "the server's TLS certificate is not valid"},
    {CURLE_SSL_CONNECT_ERROR, "the TLS handshake failed"},
    {CURLE_GOT_NOTHING, "the server closed the connection without a response"},
    {CURLE_RECV_ERROR, "the connection failed while receiving"},
    {CURLE_SEND_ERROR, "the connection failed while sending"},
    {CURLE_WEIRD_SERVER_REPLY, "the server's response is not valid HTTP"},
    {CURLE_URL_MALFORMAT, "url is not a valid URL"},
};

static az_err fetch_failed(fetch *f, CURLcode rc, const char *errbuf, az_tool_result *out,
                           char *msg)
{
    if (f->cancelled) {
        az_tools_result_error(out, "cancelled");
        return az_fail(msg, AZ_ERR_CANCELLED, "http_fetch cancelled");
    }
    if (f->body.oom) return az_fail(msg, AZ_ERR_NOMEM, "out of memory reading the response");
    if (f->ng.refused && rc == CURLE_COULDNT_CONNECT)
        return az_tools_result_error(out, "connection to %s refused by the network policy (%s "
                                          "addresses are not allowed)",
                                     f->ng.refused_addr, f->ng.refused_range ? f->ng.refused_range : "these");
    if (f->bad_type)
        return az_tools_result_error(out, "unsupported content type %s",
                                     f->mtype[0] ? f->mtype : "(none)");
    if (f->too_big || rc == CURLE_FILESIZE_EXCEEDED)
        return az_tools_result_error(out, "response larger than %zu bytes", f->max);
    const char *text = NULL;
    for (size_t i = 0; i < sizeof curl_msgs / sizeof *curl_msgs; i++) {
        if (curl_msgs[i].code == rc) text = curl_msgs[i].text;
    }
    if (!text) text = curl_easy_strerror(rc);
    if (errbuf[0]) return az_tools_result_error(out, "%s (%s)", text, errbuf);
    return az_tools_result_error(out, "%s", text);
}

/* Checks the URL before curl sees it: only absolute http(s) URLs. The network policy is applied
 * later, on the addresses actually connected to. */
static int url_ok(const char *url, az_tool_result *out, az_err *err)
{
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
        *err = az_tools_result_error(out, "url must be http or https");
        return 0;
    }
    CURLU *u = curl_url();
    if (!u) {
        *err = AZ_ERR_NOMEM;
        return 0;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    char *host = NULL;
    if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_free(host);
    curl_url_cleanup(u);
    if (uc != CURLUE_OK) {
        *err = az_tools_result_error(out, "url is not a valid URL (%s)", curl_url_strerror(uc));
        return 0;
    }
    return 1;
}

static void fetch_setopts(fetch *f, const char *url, char *errbuf)
{
    const az_tools_config *c = f->cfg;
    CURL *h = f->h;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)AZ_TOOLS_FETCH_MAX_REDIRECTS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->fetch_timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->fetch_connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->fetch_max_bytes);
    curl_easy_setopt(h, CURLOPT_USERAGENT, AZ_TOOLS_FETCH_USER_AGENT);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, ""); /* decoded size is what on_data caps */
    /* An empty proxy disables http_proxy/https_proxy/all_proxy from the environment. */
    curl_easy_setopt(h, CURLOPT_PROXY, c->proxy ? c->proxy : "");
    f->ng.guard = c->guard;
    az_netguard_curl_use(h, &f->ng); /* every address checked right before connect */
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, f);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
}

/* Builds "URL: ...\nStatus: N\nTitle: ...\n\n<text>" from a finished transfer. */
static az_err fetch_observation(fetch *f, size_t max_chars, az_tool_result *out, char *msg)
{
    char *eff = NULL, *ct = NULL;
    long status = 0;
    curl_easy_getinfo(f->h, CURLINFO_EFFECTIVE_URL, &eff);
    curl_easy_getinfo(f->h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(f->h, CURLINFO_CONTENT_TYPE, &ct);
    if (!f->typed) { /* empty body: on_data never ran */
        media_type(ct, f->mtype, sizeof f->mtype);
        if (classify(f->mtype) == CT_UNSUPPORTED && f->mtype[0])
            return az_tools_result_error(out, "unsupported content type %s",
                                     f->mtype[0] ? f->mtype : "(none)");
    }
    sbuf clean = {0}, text = {0}, title = {0}, obs = {0};
    if (charset_latin1(ct)) {
        for (size_t i = 0; i < f->body.len; i++) sb_utf8(&clean, (unsigned char)f->body.p[i]);
        sbuf tmp = clean;
        memset(&clean, 0, sizeof clean);
        sb_sanitized(&clean, tmp.p ? tmp.p : "", tmp.len);
        sb_free(&tmp);
    } else {
        sb_sanitized(&clean, f->body.p ? f->body.p : "", f->body.len);
    }
    if (classify(f->mtype) == CT_HTML) {
        html_extract(clean.p ? clean.p : "", clean.len, &text, &title);
    } else {
        text = clean;
        memset(&clean, 0, sizeof clean);
    }
    sb_printf(&obs, "URL: %s\nStatus: %ld\n", eff ? eff : "", status);
    if (title.len) {
        size_t tb = utf8_prefix(title.p, title.len, TITLE_MAX_CHARS);
        sb_puts(&obs, "Title: ");
        sb_put(&obs, title.p, tb);
        sb_putc(&obs, '\n');
    }
    sb_putc(&obs, '\n');
    size_t keep = utf8_prefix(text.p ? text.p : "", text.len, max_chars);
    sb_put(&obs, text.p ? text.p : "", keep);
    if (keep < text.len) sb_puts(&obs, TRUNCATED_MARK);
    int oom = clean.oom || text.oom || title.oom;
    sb_free(&clean);
    sb_free(&text);
    sb_free(&title);
    if (oom) {
        sb_free(&obs);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory extracting text");
    }
    if (result_take(out, 0, &obs) != AZ_OK)
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory extracting text");
    return AZ_OK;
}

static az_err tool_http_fetch(void *arg, const json_t *args, az_tool_result *out, char *msg)
{
    const az_tools_config *cfg = config_of(arg);
    const char *url = json_string_value(json_object_get(args, "url"));
    json_t *mc = json_object_get(args, "max_chars");
    size_t max_chars = mc ? (size_t)json_number_value(mc) : AZ_TOOLS_FETCH_CHARS_DEFAULT;
    az_err err = AZ_OK;
    if (!url_ok(url, out, &err)) return err == AZ_ERR_NOMEM ? az_fail(msg, err, "out of memory") : err;
    fetch f = {.cfg = cfg, .max = cfg->fetch_max_bytes};
    if (cfg->cancelled && cfg->cancelled(cfg->cancel_arg)) {
        az_tools_result_error(out, "cancelled");
        return az_fail(msg, AZ_ERR_CANCELLED, "http_fetch cancelled");
    }
    f.h = curl_easy_init();
    if (!f.h) return az_fail(msg, AZ_ERR_NOMEM, "cannot create a curl handle");
    char errbuf[CURL_ERROR_SIZE] = "";
    fetch_setopts(&f, url, errbuf);
    CURLcode rc = curl_easy_perform(f.h);
    if (rc != CURLE_OK) err = fetch_failed(&f, rc, errbuf, out, msg);
    else err = fetch_observation(&f, max_chars, out, msg);
    curl_easy_cleanup(f.h);
    sb_free(&f.body);
    return err;
}

/* ---------------------------------------------------------------------------------------------
 * Built-in table and process-wide state */

static const char *const builtin_names[] = {"http_fetch", "current_time", "calculator"};

static const struct builtin {
    const char *name;
    const char *description;
    const char *schema;
    az_tools_fn fn;
    az_tool_limits limits;
} builtins[] = {
    {"http_fetch",
     "Fetch a web page or document over HTTP(S) with GET and return its text: HTML is reduced to "
     "readable text with its title, JSON and plain text are returned as they are. Private and "
     "local network addresses are refused.",
     "{\"type\":\"object\",\"properties\":{"
     "\"url\":{\"type\":\"string\",\"description\":\"Absolute http:// or https:// URL.\","
     "\"maxLength\":2048},"
     "\"max_chars\":{\"type\":\"integer\",\"description\":\"Most characters of text to return "
     "(default 20000).\",\"minimum\":1,\"maximum\":100000}},"
     "\"required\":[\"url\"],\"additionalProperties\":false}",
     tool_http_fetch,
     {4096, 512 * 1024}},
    {"current_time",
     "Return the current date and time (RFC 3339) in a time zone.",
     "{\"type\":\"object\",\"properties\":{"
     "\"timezone\":{\"type\":\"string\",\"description\":\"IANA time zone such as Europe/Paris, "
     "a fixed offset such as +05:30, or UTC (the default).\",\"maxLength\":64}},"
     "\"additionalProperties\":false}",
     tool_current_time,
     {1024, 1024}},
    {"calculator",
     "Evaluate an arithmetic expression: + - * / % ^ and parentheses, functions sqrt abs ln log10 "
     "exp sin cos tan floor ceil round min(a,b) max(a,b), constants pi and e.",
     "{\"type\":\"object\",\"properties\":{"
     "\"expression\":{\"type\":\"string\",\"description\":\"The expression, e.g. "
     "(2 + 3) * sqrt(16) / 2^3.\",\"maxLength\":1000}},"
     "\"required\":[\"expression\"],\"additionalProperties\":false}",
     tool_calculator,
     {8192, 4096}},
};

_Static_assert(sizeof builtin_names / sizeof *builtin_names == sizeof builtins / sizeof *builtins,
               "builtin_names and builtins must list the same tools");

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static json_t *builtin_schemas[sizeof builtins / sizeof *builtins]; /* process lifetime */
static int init_failed;

static void init_process(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) init_failed = 1;
    for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++) {
        builtin_schemas[i] = json_loads(builtins[i].schema, 0, NULL);
        if (!json_is_object(builtin_schemas[i])) init_failed = 1;
    }
}

const char *const *az_tools_builtin_names(size_t *n)
{
    *n = sizeof builtin_names / sizeof *builtin_names;
    return builtin_names;
}

az_err az_tools_new(const az_tools_config *cfg, az_tools **out, char *msg)
{
    *out = NULL;
    pthread_once(&init_once, init_process);
    if (init_failed) return az_fail(msg, AZ_ERR_INTERNAL, "cannot initialise the built-in tools");
    az_tools *reg = calloc(1, sizeof *reg);
    if (!reg) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    if (cfg) reg->cfg = *cfg;
    if (reg->cfg.proxy && *reg->cfg.proxy && !(reg->proxy = strdup(reg->cfg.proxy))) {
        free(reg);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    reg->cfg.proxy = reg->proxy;
    if (reg->cfg.fetch_timeout_ms <= 0) reg->cfg.fetch_timeout_ms = AZ_TOOLS_FETCH_TIMEOUT_MS;
    if (reg->cfg.fetch_connect_timeout_ms <= 0)
        reg->cfg.fetch_connect_timeout_ms = AZ_TOOLS_FETCH_CONNECT_TIMEOUT_MS;
    if (reg->cfg.fetch_max_bytes == 0) reg->cfg.fetch_max_bytes = AZ_TOOLS_FETCH_MAX_BYTES;
    for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++) {
        tool *t = &reg->tools[reg->n++];
        snprintf(t->name, sizeof t->name, "%s", builtins[i].name);
        t->description = (char *)builtins[i].description;
        t->schema = builtin_schemas[i];
        t->fn = builtins[i].fn;
        t->arg = reg;
        t->limits = builtins[i].limits;
        t->builtin = 1;
    }
    *out = reg;
    return AZ_OK;
}

void az_tools_free(az_tools *reg)
{
    if (!reg) return;
    for (size_t i = 0; i < reg->n; i++) {
        if (reg->tools[i].builtin) continue;
        free(reg->tools[i].description);
        json_decref(reg->tools[i].schema);
    }
    free(reg->proxy);
    free(reg);
}

static const tool *find_tool(const az_tools *reg, const char *name)
{
    for (size_t i = 0; name && i < reg->n; i++) {
        if (strcmp(reg->tools[i].name, name) == 0) return &reg->tools[i];
    }
    return NULL;
}

int az_tools_has(const az_tools *reg, const char *name)
{
    return reg && find_tool(reg, name) != NULL;
}

static int name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > AZ_TOOLS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-') return 0;
    }
    return 1;
}

az_err az_tools_register(az_tools *reg, const char *name, const char *description,
                         json_t *schema, az_tools_fn handler, void *arg, char *msg)
{
    if (!name_valid(name))
        return az_fail(msg, AZ_ERR_INVALID, "tool name \"%.64s\": 1 to %d of A-Z a-z 0-9 _ -",
                       name ? name : "", AZ_TOOLS_NAME_MAX);
    if (!description || !*description || !az_text_utf8_valid(description, strlen(description)))
        return az_fail(msg, AZ_ERR_INVALID, "tool %s: description must be non-empty UTF-8", name);
    if (!json_is_object(schema) || !json_is_string(json_object_get(schema, "type")) ||
        strcmp(json_string_value(json_object_get(schema, "type")), "object") != 0)
        return az_fail(msg, AZ_ERR_INVALID, "tool %s: schema must be a JSON object with "
                                            "\"type\":\"object\"", name);
    if (!handler) return az_fail(msg, AZ_ERR_INVALID, "tool %s: handler is required", name);
    if (find_tool(reg, name)) return az_fail(msg, AZ_ERR_EXISTS, "tool %s already exists", name);
    if (reg->n == AZ_TOOLS_MAX)
        return az_fail(msg, AZ_ERR_EXHAUSTED, "at most %d tools", AZ_TOOLS_MAX);
    char *d = strdup(description);
    if (!d) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    tool *t = &reg->tools[reg->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->description = d;
    t->schema = json_incref(schema);
    t->fn = handler;
    t->arg = arg;
    t->limits = (az_tool_limits){AZ_TOOLS_DEFAULT_MAX_ARGS, AZ_TOOLS_DEFAULT_MAX_OUTPUT};
    return AZ_OK;
}

/* JSON schema "type" names and their checks, for the subset of JSON Schema tools use. */
static int is_integral(const json_t *v)
{
    if (json_is_integer(v)) return 1;
    double d = json_is_real(v) ? json_real_value(v) : NAN;
    return isfinite(d) && d == floor(d) && fabs(d) < 9007199254740992.0;
}
static int is_bool(const json_t *v) { return json_is_boolean(v); }
static int is_string(const json_t *v) { return json_is_string(v); }
static int is_number(const json_t *v) { return json_is_number(v); }
static int is_object(const json_t *v) { return json_is_object(v); }
static int is_array(const json_t *v) { return json_is_array(v); }
static const struct json_type {
    const char *name, *article;
    int (*check)(const json_t *);
} json_types[] = {
    {"string", "a", is_string},   {"integer", "an", is_integral}, {"number", "a", is_number},
    {"boolean", "a", is_bool},    {"object", "an", is_object},    {"array", "an", is_array},
};

/* Checks args against the subset of JSON Schema a tool's parameters use: required,
 * additionalProperties:false, and per property type, maxLength (code points), minimum, maximum.
 * Returns 0, or -1 with an error observation in *out. */
static int args_check(const json_t *schema, const json_t *args, az_tool_result *out)
{
    const json_t *props = json_object_get(schema, "properties");
    const json_t *req = json_object_get(schema, "required");
    size_t i;
    json_t *r;
    json_array_foreach(req, i, r) {
        if (json_is_string(r) && !json_object_get(args, json_string_value(r))) {
            az_tools_result_error(out, "argument \"%s\" is required", json_string_value(r));
            return -1;
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)args, key, v) {
        const json_t *p = json_object_get(props, key);
        if (!p) {
            if (json_is_false(json_object_get(schema, "additionalProperties"))) {
                az_tools_result_error(out, "unknown argument \"%.64s\"", key);
                return -1;
            }
            continue;
        }
        const char *type = json_string_value(json_object_get(p, "type"));
        for (size_t k = 0; type && k < sizeof json_types / sizeof *json_types; k++) {
            if (strcmp(type, json_types[k].name) == 0 && !json_types[k].check(v)) {
                az_tools_result_error(out, "argument \"%s\" must be %s %s", key,
                                      json_types[k].article, type);
                return -1;
            }
        }
        const json_t *ml = json_object_get(p, "maxLength");
        if (json_is_integer(ml) && json_is_string(v) &&
            utf8_chars(json_string_value(v), json_string_length(v)) > (size_t)json_integer_value(ml)) {
            az_tools_result_error(out, "argument \"%s\" is longer than %lld characters", key,
                                  (long long)json_integer_value(ml));
            return -1;
        }
        const json_t *mn = json_object_get(p, "minimum"), *mx = json_object_get(p, "maximum");
        if (json_is_number(v) && ((json_is_number(mn) && json_number_value(v) < json_number_value(mn)) ||
                                  (json_is_number(mx) && json_number_value(v) > json_number_value(mx)))) {
            if (json_is_number(mn) && json_is_number(mx))
                az_tools_result_error(out, "argument \"%s\" must be between %g and %g", key,
                                      json_number_value(mn), json_number_value(mx));
            else
                az_tools_result_error(out, "argument \"%s\" must be %s %g", key,
                                      json_is_number(mn) ? "at least" : "at most",
                                      json_number_value(json_is_number(mn) ? mn : mx));
            return -1;
        }
    }
    return 0;
}

/* Makes out->text valid UTF-8 without control characters and at most max bytes. */
static az_err finish(az_tool_result *out, size_t max)
{
    sbuf b = {0};
    sb_sanitized(&b, out->text, out->len);
    if (b.len > max) {
        size_t room = max > sizeof TRUNCATED_MARK ? max - (sizeof TRUNCATED_MARK - 1) : 0;
        size_t keep = room;
        /* Back off to a character boundary. */
        while (keep > 0 && keep < b.len && ((unsigned char)b.p[keep] & 0xc0) == 0x80) keep--;
        b.len = keep;
        b.p[keep] = '\0';
        sb_puts(&b, TRUNCATED_MARK);
    }
    return result_take(out, out->is_error, &b);
}

static int listed(const char *name, const char *const *names, size_t n)
{
    for (size_t i = 0; name && i < n; i++) {
        if (names[i] && strcmp(names[i], name) == 0) return 1;
    }
    return 0;
}

az_err az_tools_call(const az_tools *reg, const char *name, const char *arguments_json,
                     az_tool_result *out, char *msg)
{
    return az_tools_call_as(reg, NULL, 0, name, arguments_json, out, msg);
}

az_err az_tools_call_as(const az_tools *reg, const char *const *allowed, size_t n_allowed,
                        const char *name, const char *arguments_json, az_tool_result *out,
                        char *msg)
{
    memset(out, 0, sizeof *out);
    if (msg) msg[0] = '\0';
    const tool *t = reg ? find_tool(reg, name) : NULL;
    if (t && allowed && !listed(name, allowed, n_allowed)) t = NULL;
    az_err err = AZ_OK;
    if (!t) {
        sbuf b = {0};
        sb_printf(&b, "error: unknown tool \"%.64s\" (available:", name ? name : "");
        size_t shown = 0;
        for (size_t i = 0; reg && i < reg->n; i++) {
            if (allowed && !listed(reg->tools[i].name, allowed, n_allowed)) continue;
            sb_printf(&b, "%s %s", shown++ ? "," : "", reg->tools[i].name);
        }
        sb_puts(&b, shown ? ")" : " none)");
        err = result_take(out, 1, &b);
    } else {
        const char *text = arguments_json && *arguments_json ? arguments_json : "{}";
        size_t len = strlen(text);
        if (len > t->limits.max_args_bytes) {
            err = az_tools_result_error(out, "arguments longer than %zu bytes", t->limits.max_args_bytes);
        } else {
            json_error_t je;
            json_t *args = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
            if (!args)
                err = az_tools_result_error(out, "arguments are not valid JSON: %s (at character %d)",
                                            je.text, je.position);
            else if (!json_is_object(args))
                err = az_tools_result_error(out, "arguments must be a JSON object");
            else if (args_check(t->schema, args, out) == 0)
                err = t->fn(t->arg, args, out, msg);
            json_decref(args);
        }
    }
    if (err == AZ_ERR_NOMEM && msg && !msg[0]) az_fail(msg, err, "out of memory");
    if (err != AZ_OK && !out->text) {
        /* Still give the model something to read if the executor chooses to. */
        az_tools_result_error(out, "%s failed (%s)", t ? t->name : "tool", az_err_name(err));
        if (msg && !msg[0]) az_fail(msg, err, "tool %s failed", t ? t->name : "?");
        return err;
    }
    if (err == AZ_OK && !out->text) {
        az_fail(msg, AZ_ERR_INTERNAL, "tool %s returned no observation", t ? t->name : "?");
        err = az_tools_result_error(out, "%s returned nothing", t ? t->name : "tool");
        if (err != AZ_OK) return err;
    }
    az_err ferr = finish(out, t ? t->limits.max_output_bytes : AZ_TOOLS_DEFAULT_MAX_OUTPUT);
    if (ferr != AZ_OK) return az_fail(msg, ferr, "out of memory");
    return err;
}

az_err az_tools_schema_json(const az_tools *reg, const char *const *names, size_t n, json_t **out,
                            char *msg)
{
    *out = NULL;
    json_t *arr = json_array();
    if (!arr) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const tool *t = find_tool(reg, names[i]);
        if (!t) {
            json_decref(arr);
            return az_fail(msg, AZ_ERR_INVALID, "tools[%zu]: unknown tool \"%.64s\"", i,
                           names[i] ? names[i] : "");
        }
        /* A deep copy: the shared built-in schemas must never be mutated or reference-counted
         * by callers on other threads. */
        json_t *fn = json_pack("{s:s, s:s, s:o}", "name", t->name, "description", t->description,
                               "parameters", json_deep_copy(t->schema));
        json_t *item = fn ? json_pack("{s:s, s:o}", "type", "function", "function", fn) : NULL;
        if (!item || json_array_append_new(arr, item) != 0) {
            json_decref(arr);
            return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        }
    }
    *out = arr;
    return AZ_OK;
}
