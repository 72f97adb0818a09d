/* Whole-file reads (or standard input): certificates for TLS, JSON given with -f, web assets. */
#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

az_err az_file_read(const char *path, char **out, size_t *len, char *msg)
{
    *out = NULL;
    if (len) *len = 0;
    int is_stdin = strcmp(path, "-") == 0;
    const char *shown = is_stdin ? "standard input" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return az_fail(msg, AZ_ERR_IO, "cannot open %s: %s", shown, strerror(errno));

    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    az_err err = AZ_OK;
    if (!buf) {
        err = az_fail(msg, AZ_ERR_NOMEM, "cannot read %s: out of memory", shown);
        goto done;
    }
    for (;;) {
        /* Keep one byte free for the terminating NUL. */
        if (cap - n < 2) {
            /* The last size holds AZ_FILE_MAX bytes, the NUL, and one byte more to see past it. */
            if (n > AZ_FILE_MAX) {
                err = az_fail(msg, AZ_ERR_INVALID, "cannot read %s: larger than %u bytes", shown,
                              AZ_FILE_MAX);
                goto done;
            }
            size_t grown = cap * 2 > (size_t)AZ_FILE_MAX + 2 ? (size_t)AZ_FILE_MAX + 2 : cap * 2;
            char *bigger = realloc(buf, grown);
            if (!bigger) {
                err = az_fail(msg, AZ_ERR_NOMEM, "cannot read %s: out of memory", shown);
                goto done;
            }
            buf = bigger;
            cap = grown;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        err = az_fail(msg, AZ_ERR_IO, "cannot read %s: %s", shown, strerror(errno));
        goto done;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    if (len) *len = n;
done:
    free(buf);
    if (!is_stdin) fclose(f);
    return err;
}
