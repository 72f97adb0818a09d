/* Terminal tables: rows of copied cells, printed with columns sized to content and shrunk
 * to the terminal width. */
#include "table.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct az_table {
    size_t ncols;
    size_t nrows, cap;
    char **headers;
    char ***rows;
    unsigned char *keep; /* per column: never shrink */
};

#define ELLIPSIS "\xe2\x80\xa6" /* U+2026, one display column */
#define GAP 3
#define MIN_COLUMN 6

static char *copy_cell(const char *s)
{
    char *c = strdup(s ? s : "");
    if (!c) return NULL;
    for (char *p = c; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
    return c;
}

static void free_row(char **row, size_t n)
{
    if (!row) return;
    for (size_t i = 0; i < n; i++) free(row[i]);
    free(row);
}

az_table *az_table_new(size_t ncols, const char *const *headers)
{
    az_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ncols = ncols;
    t->headers = calloc(ncols ? ncols : 1, sizeof *t->headers);
    t->keep = calloc(ncols ? ncols : 1, 1);
    if (!t->headers || !t->keep) {
        free(t->headers);
        free(t->keep);
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < ncols; i++)
        if (!(t->headers[i] = copy_cell(headers[i]))) {
            az_table_free(t);
            return NULL;
        }
    return t;
}

void az_table_free(az_table *t)
{
    if (!t) return;
    for (size_t r = 0; r < t->nrows; r++) free_row(t->rows[r], t->ncols);
    free(t->rows);
    free_row(t->headers, t->ncols);
    free(t->keep);
    free(t);
}

az_err az_table_add(az_table *t, const char *const *cells, char *msg)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char ***rows = realloc(t->rows, cap * sizeof *rows);
        if (!rows) return az_fail(msg, AZ_ERR_NOMEM, "table: out of memory");
        t->rows = rows;
        t->cap = cap;
    }
    char **row = calloc(t->ncols, sizeof *row);
    if (!row) return az_fail(msg, AZ_ERR_NOMEM, "table: out of memory");
    for (size_t i = 0; i < t->ncols; i++)
        if (!(row[i] = copy_cell(cells[i]))) {
            free_row(row, t->ncols);
            return az_fail(msg, AZ_ERR_NOMEM, "table: out of memory");
        }
    t->rows[t->nrows++] = row;
    return AZ_OK;
}

void az_table_keep(az_table *t, size_t col)
{
    if (col < t->ncols) t->keep[col] = 1;
}

size_t az_table_rows(const az_table *t) { return t->nrows; }

size_t az_table_text_width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) n++; /* count lead bytes, not continuations */
    return n;
}

char *az_table_truncate(const char *s, size_t width, char *buf, size_t size)
{
    if (!size) return buf;
    if (az_table_text_width(s) <= width) {
        snprintf(buf, size, "%s", s);
        return buf;
    }
    size_t keep = width ? width - 1 : 0; /* code points before the ellipsis */
    size_t room = size > sizeof ELLIPSIS ? size - sizeof ELLIPSIS : 0;
    size_t i = 0, cps = 0;
    while (s[i] && cps < keep) {
        size_t next = i + 1;
        while (s[next] && ((unsigned char)s[next] & 0xc0) == 0x80) next++;
        if (next > room) break;
        i = next;
        cps++;
    }
    memcpy(buf, s, i);
    if (width && i + sizeof ELLIPSIS <= size) {
        memcpy(buf + i, ELLIPSIS, sizeof ELLIPSIS); /* includes the NUL */
    } else {
        buf[i] = '\0';
    }
    return buf;
}

int az_table_width(FILE *f)
{
    int w = 0;
    const char *env = getenv("COLUMNS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v > 0 && v < 100000) w = (int)v;
    }
    struct winsize ws;
    if (!w && isatty(fileno(f)) && ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        w = ws.ws_col;
    /* Not a terminal and no COLUMNS: output goes to a pipe or file, where cut cells only hurt. */
    if (!w && !isatty(fileno(f))) return 100000;
    return w < 80 ? 80 : w;
}

static void print_cell(FILE *f, const char *s, size_t width, int last)
{
    char buf[4096];
    az_table_truncate(s, width, buf, sizeof buf);
    fputs(buf, f);
    if (!last)
        for (size_t pad = az_table_text_width(buf); pad < width + GAP; pad++) fputc(' ', f);
}

void az_table_print(const az_table *t, FILE *f, int width)
{
    size_t *w = calloc(t->ncols ? t->ncols : 1, sizeof *w);
    size_t *min = calloc(t->ncols ? t->ncols : 1, sizeof *min);
    if (!w || !min) {
        free(w);
        free(min);
        return;
    }
    size_t total = 0;
    for (size_t c = 0; c < t->ncols; c++) {
        w[c] = az_table_text_width(t->headers[c]);
        min[c] = w[c] > MIN_COLUMN ? w[c] : MIN_COLUMN;
        for (size_t r = 0; r < t->nrows; r++) {
            size_t cw = az_table_text_width(t->rows[r][c]);
            if (cw > w[c]) w[c] = cw;
        }
        if (min[c] > w[c] || t->keep[c]) min[c] = w[c];
        total += w[c] + (c ? GAP : 0);
    }
    /* Take one column at a time from the widest shrinkable column: long text columns give
     * way before short ones such as ids and statuses. */
    while (width > 0 && total > (size_t)width) {
        size_t best = t->ncols;
        for (size_t c = 0; c < t->ncols; c++)
            if (w[c] > min[c] && (best == t->ncols || w[c] > w[best])) best = c;
        if (best == t->ncols) break;
        w[best]--;
        total--;
    }
    for (size_t c = 0; c < t->ncols; c++) print_cell(f, t->headers[c], w[c], c + 1 == t->ncols);
    fputc('\n', f);
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) print_cell(f, t->rows[r][c], w[c], c + 1 == t->ncols);
        fputc('\n', f);
    }
    free(w);
    free(min);
}
