/* Loads the web UI's files into memory, sorted by path for binary search, each with a content
 * type from its extension, a content hash as ETag and, when it shrinks, a gzip copy (zlib). */
#include "assets.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/file.h"

struct az_assets {
    az_asset *files;
    size_t n, cap;
    size_t bytes;
    const az_asset *index;
};

static const struct {
    const char *ext;
    const char *type;
    int compress;
} TYPES[] = {
    {".html", "text/html; charset=utf-8", 1},
    {".js", "text/javascript; charset=utf-8", 1},
    {".mjs", "text/javascript; charset=utf-8", 1},
    {".css", "text/css; charset=utf-8", 1},
    {".json", "application/json", 1},
    {".map", "application/json", 1},
    {".svg", "image/svg+xml", 1},
    {".txt", "text/plain; charset=utf-8", 1},
    {".webmanifest", "application/manifest+json", 1},
    {".wasm", "application/wasm", 1},
    {".ico", "image/x-icon", 1},
    {".png", "image/png", 0},
    {".jpg", "image/jpeg", 0},
    {".jpeg", "image/jpeg", 0},
    {".gif", "image/gif", 0},
    {".webp", "image/webp", 0},
    {".woff", "font/woff", 0},
    {".woff2", "font/woff2", 0},
};

static void type_of(const char *path, const char **type, int *compress)
{
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    *type = "application/octet-stream";
    *compress = 0;
    if (!dot || (slash && dot < slash)) return;
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++) {
        if (strcasecmp(dot, TYPES[i].ext) == 0) {
            *type = TYPES[i].type;
            *compress = TYPES[i].compress;
            return;
        }
    }
}

/* FNV-1a, 64 bits: an ETag only has to change when the content does. */
static void make_etag(const uint8_t *p, size_t n, char *out)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    snprintf(out, 24, "\"%016llx\"", (unsigned long long)h);
}

static void gzip_copy(az_asset *f)
{
    if (f->len < 512) return;
    z_stream z;
    memset(&z, 0, sizeof z);
    /* windowBits 15 + 16: a gzip wrapper, which is what Content-Encoding: gzip means. */
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK) return;
    uLong bound = deflateBound(&z, (uLong)f->len);
    uint8_t *out = malloc(bound);
    if (!out) {
        deflateEnd(&z);
        return;
    }
    z.next_in = (Bytef *)f->data;
    z.avail_in = (uInt)f->len;
    z.next_out = out;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    size_t n = bound - z.avail_out;
    deflateEnd(&z);
    /* Only worth it when it saves a tenth. */
    if (rc != Z_STREAM_END || n * 10 > f->len * 9) {
        free(out);
        return;
    }
    f->gzip = out;
    f->gzip_len = n;
}

static az_err add_file(az_assets *a, const char *full, const char *rel, char *msg)
{
    if (a->n >= AZ_ASSETS_MAX_FILES)
        return az_fail(msg, AZ_ERR_INVALID, "the web directory holds more than %d files",
                       AZ_ASSETS_MAX_FILES);
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        az_asset *grown = realloc(a->files, cap * sizeof *grown);
        if (!grown) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
        a->files = grown;
        a->cap = cap;
    }
    char *data = NULL;
    size_t len = 0;
    az_err err = az_file_read(full, &data, &len, msg);
    if (err) return err;
    if (a->bytes + len > AZ_ASSETS_MAX_BYTES) {
        free(data);
        return az_fail(msg, AZ_ERR_INVALID, "the web directory holds more than %u bytes",
                       AZ_ASSETS_MAX_BYTES);
    }
    az_asset *f = &a->files[a->n];
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(rel))) {
        free(data);
        return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    }
    int compress;
    type_of(rel, &f->content_type, &compress);
    f->data = (const uint8_t *)data;
    f->len = len;
    f->immutable = strncmp(rel, "/assets/", 8) == 0;
    make_etag(f->data, f->len, f->etag);
    if (compress) gzip_copy(f);
    a->n++;
    a->bytes += len;
    return AZ_OK;
}

/* Walks dir/rel; depth bounds how far a symlink loop could take us. */
static az_err walk(az_assets *a, const char *root, const char *rel, int depth, char *msg)
{
    if (depth > 16) return AZ_OK;
    char dirpath[4096];
    snprintf(dirpath, sizeof dirpath, "%s%s", root, rel);
    DIR *d = opendir(dirpath);
    if (!d) return depth == 0 ? az_fail(msg, AZ_ERR_IO, "cannot read web directory %s", root) : AZ_OK;
    az_err err = AZ_OK;
    struct dirent *e;
    while (err == AZ_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char child[2048], full[4096];
        int n = snprintf(child, sizeof child, "%s/%s", rel, e->d_name);
        if (n < 0 || (size_t)n >= sizeof child) continue;
        snprintf(full, sizeof full, "%s%s", root, child);
        struct stat st;
        if (lstat(full, &st) != 0) continue; /* symlinks are not followed */
        if (S_ISDIR(st.st_mode)) err = walk(a, root, child, depth + 1, msg);
        else if (S_ISREG(st.st_mode)) err = add_file(a, full, child, msg);
    }
    closedir(d);
    return err;
}

static int by_path(const void *x, const void *y)
{
    return strcmp(((const az_asset *)x)->path, ((const az_asset *)y)->path);
}

az_err az_assets_load(const char *dir, az_assets **out, char *msg)
{
    *out = NULL;
    az_assets *a = calloc(1, sizeof *a);
    if (!a) return az_fail(msg, AZ_ERR_NOMEM, "out of memory");
    char root[2048];
    snprintf(root, sizeof root, "%s", dir);
    size_t rl = strlen(root);
    while (rl > 1 && root[rl - 1] == '/') root[--rl] = '\0';
    az_err err = walk(a, root, "", 0, msg);
    if (err == AZ_OK) {
        if (a->n) qsort(a->files, a->n, sizeof *a->files, by_path);
        a->index = az_assets_find(a, "/index.html", 11);
        if (!a->index) err = az_fail(msg, AZ_ERR_INVALID, "web directory %s has no index.html", dir);
    }
    if (err) {
        az_assets_free(a);
        return err;
    }
    *out = a;
    return AZ_OK;
}

void az_assets_free(az_assets *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n; i++) {
        free((char *)a->files[i].path);
        free((uint8_t *)a->files[i].data);
        free((uint8_t *)a->files[i].gzip);
    }
    free(a->files);
    free(a);
}

const az_asset *az_assets_find(const az_assets *a, const char *path, size_t len)
{
    if (!a || !len || path[0] != '/') return NULL;
    if (len == 1) return a->index;
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *p = a->files[mid].path;
        int c = strncmp(p, path, len);
        if (c == 0 && p[len] != '\0') c = 1;
        if (c == 0) return &a->files[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const az_asset *az_assets_index(const az_assets *a) { return a->index; }
size_t az_assets_count(const az_assets *a) { return a->n; }
size_t az_assets_bytes(const az_assets *a) { return a->bytes; }
