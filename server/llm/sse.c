/* Incremental server-sent-events parser: a line buffer, a data buffer and the event name, with
 * one bound on their sum so a hostile or broken server cannot make us buffer without limit. */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

struct az_sse {
    az_sse_event_fn fn;
    void *arg;
    size_t max_event;
    char *line; /* the line being read, without its terminator */
    size_t line_len, line_cap;
    char *data; /* data lines of the current event, '\n'-joined */
    size_t data_len, data_cap;
    char event[64]; /* longer names are truncated: providers use short ones */
    int has_data;   /* a data field was seen (an empty `data:` still dispatches) */
    int after_cr;   /* the previous chunk ended in CR: a leading LF belongs to it */
    size_t bom_seen; /* bytes of the leading BOM matched so far; SIZE_MAX once past it */
    int failed;
};

static const unsigned char BOM[3] = {0xef, 0xbb, 0xbf};

az_err az_sse_new(size_t max_event, az_sse_event_fn fn, void *arg, az_sse **out, char *msg)
{
    *out = NULL;
    az_sse *p = calloc(1, sizeof *p);
    if (!p) return az_fail(msg, AZ_ERR_NOMEM, "cannot allocate sse parser");
    p->fn = fn;
    p->arg = arg;
    p->max_event = max_event ? max_event : AZ_SSE_MAX_EVENT;
    *out = p;
    return AZ_OK;
}

void az_sse_free(az_sse *p)
{
    if (!p) return;
    free(p->line);
    free(p->data);
    free(p);
}

int az_sse_pending(const az_sse *p) { return p && (p->line_len > 0 || p->has_data); }

/* Grows *buf to hold need bytes plus a NUL. */
static az_err reserve(char **buf, size_t *cap, size_t need, char *msg)
{
    if (need + 1 <= *cap) return AZ_OK;
    size_t n = *cap ? *cap : 256;
    while (n < need + 1) n *= 2;
    char *b = realloc(*buf, n);
    if (!b) return az_fail(msg, AZ_ERR_NOMEM, "cannot grow sse buffer to %zu bytes", n);
    *buf = b;
    *cap = n;
    return AZ_OK;
}

static az_err too_big(az_sse *p, char *msg)
{
    return az_fail(msg, AZ_ERR_EXHAUSTED, "sse event larger than %zu bytes", p->max_event);
}

static az_err dispatch(az_sse *p, char *msg)
{
    az_err e = AZ_OK;
    if (p->has_data) {
        az_sse_event ev = {p->event[0] ? p->event : "message", p->data ? p->data : "", p->data_len};
        if (p->data) p->data[p->data_len] = '\0';
        e = p->fn(p->arg, &ev, msg);
    }
    p->data_len = 0;
    p->has_data = 0;
    p->event[0] = '\0';
    return e;
}

static az_err field_data(az_sse *p, const char *v, size_t n, char *msg)
{
    size_t need = p->data_len + (p->has_data ? 1 : 0) + n;
    if (need > p->max_event) return too_big(p, msg);
    az_err e = reserve(&p->data, &p->data_cap, need, msg);
    if (e) return e;
    if (p->has_data) p->data[p->data_len++] = '\n';
    memcpy(p->data + p->data_len, v, n);
    p->data_len += n;
    p->data[p->data_len] = '\0';
    p->has_data = 1;
    return AZ_OK;
}

static az_err field_event(az_sse *p, const char *v, size_t n, char *msg)
{
    if (n >= sizeof p->event) n = sizeof p->event - 1;
    memcpy(p->event, v, n);
    p->event[n] = '\0';
    return AZ_OK;
}

typedef struct field_handler {
    const char *name;
    az_err (*fn)(az_sse *p, const char *v, size_t n, char *msg);
} field_handler;

/* id and retry are meaningless for one POST response (we never reconnect), so not listed. */
static const field_handler FIELDS[] = {
    {"data", field_data},
    {"event", field_event},
};

static az_err process_line(az_sse *p, char *msg)
{
    const char *l = p->line ? p->line : "";
    size_t n = p->line_len;
    p->line_len = 0;
    if (n == 0) return dispatch(p, msg);
    if (l[0] == ':') return AZ_OK; /* comment, e.g. ": OPENROUTER PROCESSING" keep-alives */
    const char *colon = memchr(l, ':', n);
    size_t name_len = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vn = colon ? n - name_len - 1 : 0;
    if (vn > 0 && v[0] == ' ') {
        v++;
        vn--;
    }
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        if (strlen(FIELDS[i].name) == name_len && memcmp(FIELDS[i].name, l, name_len) == 0)
            return FIELDS[i].fn(p, v, vn, msg);
    return AZ_OK;
}

static az_err append_line(az_sse *p, const char *s, size_t n, char *msg)
{
    if (n == 0) return AZ_OK;
    if (p->line_len + n + p->data_len > p->max_event) return too_big(p, msg);
    az_err e = reserve(&p->line, &p->line_cap, p->line_len + n, msg);
    if (e) return e;
    memcpy(p->line + p->line_len, s, n);
    p->line_len += n;
    return AZ_OK;
}

az_err az_sse_feed(az_sse *p, const char *buf, size_t len, char *msg)
{
    if (p->failed) return az_fail(msg, AZ_ERR_PRECONDITION, "sse parser already failed");
    size_t i = 0;
    az_err e = AZ_OK;
    /* The BOM may itself be split across chunks. */
    while (p->bom_seen < sizeof BOM && i < len) {
        if ((unsigned char)buf[i] != BOM[p->bom_seen]) {
            if (p->bom_seen > 0) {
                /* A partial BOM that turned out not to be one: it was text. */
                if ((e = append_line(p, (const char *)BOM, p->bom_seen, msg))) goto fail;
            }
            p->bom_seen = (size_t)-1;
            break;
        }
        p->bom_seen++;
        i++;
    }
    if (p->bom_seen == sizeof BOM) p->bom_seen = (size_t)-1;
    while (i < len) {
        if (p->after_cr) {
            p->after_cr = 0;
            if (buf[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < len && buf[j] != '\n' && buf[j] != '\r') j++;
        if ((e = append_line(p, buf + i, j - i, msg))) goto fail;
        if (j == len) break;
        if (buf[j] == '\r') p->after_cr = 1;
        i = j + 1;
        if ((e = process_line(p, msg))) goto fail;
    }
    return AZ_OK;
fail:
    p->failed = 1;
    return e;
}
