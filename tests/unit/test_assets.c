/* CUnit suite for server/gateway/assets: a web directory built under mkdtemp (index.html, hashed
 * files under assets/, a nested directory, dot files, symlinks to files and directories) loaded
 * into memory, then counts and bytes, lookups (exact paths only, "/" = index.html), content
 * types, the immutable flag, gzip copies (present and valid for big compressible files, absent
 * for small or incompressible ones and for images), ETags, and the load errors (no index.html,
 * no directory, the file-count and size limits). */
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "gateway/assets.h"

/* ---- a scratch directory tree ---- */

static char root[256];

static void join(char *out, size_t cap, const char *base, const char *rel)
{
    snprintf(out, cap, "%s/%s", base, rel);
}

static int write_file(const char *base, const char *rel, const void *data, size_t len)
{
    char p[512];
    join(p, sizeof p, base, rel);
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static int make_dir(const char *base, const char *rel)
{
    char p[512];
    join(p, sizeof p, base, rel);
    return mkdir(p, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

/* rm -r of a tree this suite made (no symlinks are followed: unlink removes the link). */
static void remove_tree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "\n  could not remove %s\n", path);
}

static char *new_root(void)
{
    char *d = malloc(256);
    if (!d) return NULL;
    snprintf(d, 256, "%s/azassets-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(d)) {
        free(d);
        return NULL;
    }
    return d;
}

/* The contents of the main tree, kept to compare with what was loaded. */
static const char INDEX[] = "<!doctype html><html><head><title>AGENTZ</title></head>"
                            "<body><div id=\"root\"></div></body></html>\n";
static char app_js[6000];  /* compressible, > 1 KB */
static uint8_t logo[3000]; /* png: compressible bytes, never gzipped */
static char css[2048];
static uint8_t noise[4096]; /* .json of pseudo-random bytes: gzip would not save a tenth */
static const char SMALL[] = "User-agent: *\nDisallow:\n"; /* robots.txt, too small */
static const char MAP[] = "{\"v\":1}"; /* /assetsmap.json: starts with "/assets", not under it */

static void fill_contents(void)
{
    size_t o = 0;
    for (int i = 0; o + 64 < sizeof app_js; i++)
        o += (size_t)snprintf(app_js + o, sizeof app_js - o, "export function f%d(x){return x+%d;}\n",
                              i, i % 7);
    app_js[o] = '\0';
    for (size_t i = 0; i < sizeof logo; i++) logo[i] = (uint8_t)(i % 4 == 0 ? 0x89 : 0);
    o = 0;
    for (int i = 0; o + 48 < sizeof css; i++)
        o += (size_t)snprintf(css + o, sizeof css - o, ".c%d{color:#333;margin:0 auto}\n", i);
    css[o] = '\0';
    uint32_t x = 0x12345678u; /* xorshift32: the same bytes every run */
    for (size_t i = 0; i < sizeof noise; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise[i] = (uint8_t)x;
    }
}

static size_t total_bytes(void)
{
    return strlen(INDEX) + strlen(app_js) + sizeof logo + strlen(css) + sizeof noise +
           strlen(SMALL) + strlen(MAP);
}

static int setup(void)
{
    fill_contents();
    char *d = new_root();
    if (!d) return 1;
    snprintf(root, sizeof root, "%s", d);
    free(d);
    char p[512], t[512];
    int bad = 0;
    bad |= write_file(root, "index.html", INDEX, strlen(INDEX));
    bad |= make_dir(root, "assets");
    bad |= write_file(root, "assets/app-1234.js", app_js, strlen(app_js));
    bad |= write_file(root, "assets/logo.png", logo, sizeof logo);
    bad |= make_dir(root, "nested");
    bad |= make_dir(root, "nested/dir");
    bad |= write_file(root, "nested/dir/file.css", css, strlen(css));
    bad |= write_file(root, "noise.json", noise, sizeof noise);
    bad |= write_file(root, "robots.txt", SMALL, strlen(SMALL));
    bad |= write_file(root, "assetsmap.json", MAP, strlen(MAP));
    /* skipped: dot files, a dot directory, symlinks to a file and to a directory */
    bad |= write_file(root, ".env", "SECRET=1\n", 9);
    bad |= write_file(root, "assets/.DS_Store", "x", 1);
    bad |= make_dir(root, ".git");
    bad |= write_file(root, ".git/config", "[core]\n", 7);
    join(p, sizeof p, root, "assets/app-1234.js");
    join(t, sizeof t, root, "link.js");
    bad |= symlink(p, t);
    join(p, sizeof p, root, "nested");
    join(t, sizeof t, root, "linkdir");
    bad |= symlink(p, t);
    /* a dangling one too */
    join(t, sizeof t, root, "dangling.css");
    bad |= symlink("/nonexistent/azassets", t);
    return bad ? 1 : 0;
}

static int teardown(void)
{
    remove_tree(root);
    return 0;
}

static az_assets *load_dir(const char *dir)
{
    char msg[AZ_MSG_MAX] = "";
    az_assets *a = (az_assets *)1;
    az_err err = az_assets_load(dir, &a, msg);
    if (err) fprintf(stderr, "\n  az_assets_load(%s): %s\n", dir, msg);
    CU_ASSERT_EQUAL(err, AZ_OK);
    CU_ASSERT_PTR_NOT_NULL(a);
    return err ? NULL : a;
}

static const az_asset *find(const az_assets *a, const char *path)
{
    return az_assets_find(a, path, strlen(path));
}

/* find for a path that must be there (stops the test rather than crash). */
static const az_asset *must(const az_assets *a, const char *path)
{
    const az_asset *f = find(a, path);
    if (!f) fprintf(stderr, "\n  %s not loaded\n", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    return f;
}

/* Inflates a gzip stream and compares it with want. */
static void check_gunzip(const uint8_t *gz, size_t gzlen, const void *want, size_t want_len)
{
    CU_ASSERT_FATAL(gzlen >= 18);
    CU_ASSERT_EQUAL(gz[0], 0x1f); /* gzip magic: Content-Encoding: gzip, not raw zlib */
    CU_ASSERT_EQUAL(gz[1], 0x8b);
    uint8_t *out = malloc(want_len + 16);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    z_stream z;
    memset(&z, 0, sizeof z);
    CU_ASSERT_EQUAL_FATAL(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (Bytef *)gz;
    z.avail_in = (uInt)gzlen;
    z.next_out = out;
    z.avail_out = (uInt)(want_len + 16);
    int rc = inflate(&z, Z_FINISH);
    CU_ASSERT_EQUAL(rc, Z_STREAM_END);
    CU_ASSERT_EQUAL(z.total_out, want_len);
    CU_ASSERT_EQUAL(z.avail_in, 0); /* nothing after the stream */
    if (z.total_out == want_len) CU_ASSERT(memcmp(out, want, want_len) == 0);
    inflateEnd(&z);
    free(out);
}

/* ---- tests ---- */

static void test_count_and_bytes(void)
{
    az_assets *a = load_dir(root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    /* index.html, app-1234.js, logo.png, file.css, noise.json, robots.txt, assetsmap.json */
    CU_ASSERT_EQUAL(az_assets_count(a), 7);
    CU_ASSERT_EQUAL(az_assets_bytes(a), total_bytes());
    az_assets_free(a);
}

static void test_find(void)
{
    az_assets *a = load_dir(root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const az_asset *idx = az_assets_index(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(idx);
    CU_ASSERT_STRING_EQUAL(idx->path, "/index.html");
    CU_ASSERT_PTR_EQUAL(find(a, "/"), idx);
    CU_ASSERT_PTR_EQUAL(find(a, "/index.html"), idx);

    const char *paths[] = {"/assets/app-1234.js", "/assets/logo.png", "/nested/dir/file.css",
                           "/noise.json", "/robots.txt", "/assetsmap.json"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        const az_asset *f = find(a, paths[i]);
        CU_ASSERT_PTR_NOT_NULL(f);
        if (f) CU_ASSERT_STRING_EQUAL(f->path, paths[i]);
    }
    /* contents as on disk */
    const az_asset *js = find(a, "/assets/app-1234.js");
    CU_ASSERT_PTR_NOT_NULL_FATAL(js);
    CU_ASSERT_EQUAL(js->len, strlen(app_js));
    CU_ASSERT(memcmp(js->data, app_js, js->len) == 0);
    CU_ASSERT_EQUAL(idx->len, strlen(INDEX));
    CU_ASSERT(memcmp(idx->data, INDEX, idx->len) == 0);
    const az_asset *png = find(a, "/assets/logo.png");
    CU_ASSERT_PTR_NOT_NULL_FATAL(png);
    CU_ASSERT_EQUAL(png->len, sizeof logo);
    CU_ASSERT(memcmp(png->data, logo, sizeof logo) == 0);

    /* exact paths only: no prefixes, no extensions, no directories, case matters */
    const char *misses[] = {"/assets",  "/assets/",          "/assets/app-1234.j",
                            "/assets/app-1234.jsx", "/assets/app",  "/nested",
                            "/nested/dir", "/nested/dir/",   "/index.htm",
                            "/index.html/", "/INDEX.HTML",   "/Assets/logo.png",
                            "//index.html", "/missing.js",   "/zzz",
                            "/a",        "/assets/logo.png.gz"};
    for (size_t i = 0; i < sizeof misses / sizeof *misses; i++) {
        const az_asset *f = find(a, misses[i]);
        if (f) fprintf(stderr, "\n  %s found as %s\n", misses[i], f->path);
        CU_ASSERT_PTR_NULL(f);
    }
    /* a path must start with '/' and be non-empty */
    CU_ASSERT_PTR_NULL(find(a, "index.html"));
    CU_ASSERT_PTR_NULL(find(a, "assets/logo.png"));
    CU_ASSERT_PTR_NULL(az_assets_find(a, "/index.html", 0));
    /* only len bytes of the path count */
    const char *q = "/nested/dir/file.css?v=2";
    const az_asset *f = az_assets_find(a, q, strlen("/nested/dir/file.css"));
    CU_ASSERT_PTR_NOT_NULL(f);
    if (f) CU_ASSERT_STRING_EQUAL(f->path, "/nested/dir/file.css");
    CU_ASSERT_PTR_NULL(az_assets_find(a, q, strlen("/nested/dir/file.cs")));
    CU_ASSERT_PTR_EQUAL(az_assets_find(a, "/index.html", 1), idx); /* "/" */
    az_assets_free(a);
}

static void test_skipped_entries(void)
{
    az_assets *a = load_dir(root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NULL(find(a, "/.env"));
    CU_ASSERT_PTR_NULL(find(a, "/assets/.DS_Store"));
    CU_ASSERT_PTR_NULL(find(a, "/.git/config"));
    CU_ASSERT_PTR_NULL(find(a, "/link.js"));
    CU_ASSERT_PTR_NULL(find(a, "/linkdir/dir/file.css"));
    CU_ASSERT_PTR_NULL(find(a, "/dangling.css"));
    az_assets_free(a);
}

static void test_content_types(void)
{
    az_assets *a = load_dir(root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    static const struct {
        const char *path, *type;
    } want[] = {
        {"/index.html", "text/html; charset=utf-8"},
        {"/assets/app-1234.js", "text/javascript; charset=utf-8"},
        {"/assets/logo.png", "image/png"},
        {"/nested/dir/file.css", "text/css; charset=utf-8"},
        {"/noise.json", "application/json"},
        {"/robots.txt", "text/plain; charset=utf-8"},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const az_asset *f = find(a, want[i].path);
        CU_ASSERT_PTR_NOT_NULL(f);
        if (f) CU_ASSERT_STRING_EQUAL(f->content_type, want[i].type);
    }
    az_assets_free(a);
}

static void test_immutable(void)
{
    az_assets *a = load_dir(root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(must(a, "/assets/app-1234.js")->immutable, 1);
    CU_ASSERT_EQUAL(must(a, "/assets/logo.png")->immutable, 1);
    CU_ASSERT_EQUAL(must(a, "/index.html")->immutable, 0);
    CU_ASSERT_EQUAL(must(a, "/nested/dir/file.css")->immutable, 0);
    CU_ASSERT_EQUAL(must(a, "/robots.txt")->immutable, 0);
    CU_ASSERT_EQUAL(must(a, "/assetsmap.json")->immutable, 0); /* a name, not the directory */
    az_assets_free(a);
}

static void test_gzip(void)
{
    az_assets *a = load_dir(root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    /* big and compressible: a valid gzip copy that is smaller */
    const az_asset *js = find(a, "/assets/app-1234.js");
    CU_ASSERT_PTR_NOT_NULL_FATAL(js);
    CU_ASSERT_PTR_NOT_NULL_FATAL(js->gzip);
    CU_ASSERT(js->gzip_len > 0 && js->gzip_len < js->len);
    check_gunzip(js->gzip, js->gzip_len, app_js, strlen(app_js));
    const az_asset *c = find(a, "/nested/dir/file.css");
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->gzip);
    CU_ASSERT(c->gzip_len < c->len);
    check_gunzip(c->gzip, c->gzip_len, css, strlen(css));
    /* small files, images and incompressible bytes have none */
    const az_asset *i = must(a, "/index.html");
    CU_ASSERT_PTR_NULL(i->gzip);
    CU_ASSERT_EQUAL(i->gzip_len, 0);
    const az_asset *r = must(a, "/robots.txt");
    CU_ASSERT_PTR_NULL(r->gzip);
    CU_ASSERT_EQUAL(r->gzip_len, 0);
    const az_asset *png = must(a, "/assets/logo.png");
    CU_ASSERT_PTR_NULL(png->gzip); /* even though its bytes would compress well */
    CU_ASSERT_EQUAL(png->gzip_len, 0);
    const az_asset *nz = must(a, "/noise.json");
    CU_ASSERT_PTR_NULL(nz->gzip);
    CU_ASSERT_EQUAL(nz->gzip_len, 0);
    az_assets_free(a);
}

static int is_etag(const char *e)
{
    if (strlen(e) != 18 || e[0] != '"' || e[17] != '"') return 0;
    for (int i = 1; i < 17; i++)
        if (!((e[i] >= '0' && e[i] <= '9') || (e[i] >= 'a' && e[i] <= 'f') ||
              (e[i] >= 'A' && e[i] <= 'F')))
            return 0;
    return 1;
}

static void test_etag(void)
{
    char *d = new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_EQUAL_FATAL(write_file(d, "index.html", "<p>one</p>", 10), 0);
    CU_ASSERT_EQUAL_FATAL(write_file(d, "a.js", "var a=1;", 8), 0);
    CU_ASSERT_EQUAL_FATAL(write_file(d, "b.js", "var a=2;", 8), 0);
    az_assets *a = load_dir(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    char first[24];
    snprintf(first, sizeof first, "%s", az_assets_index(a)->etag);
    CU_ASSERT(is_etag(first));
    CU_ASSERT(is_etag(must(a, "/a.js")->etag));
    /* different content, different tag */
    CU_ASSERT_STRING_NOT_EQUAL(must(a, "/a.js")->etag, must(a, "/b.js")->etag);
    CU_ASSERT_STRING_NOT_EQUAL(must(a, "/a.js")->etag, first);
    az_assets_free(a);

    /* the same content loads to the same tag */
    a = load_dir(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_STRING_EQUAL(az_assets_index(a)->etag, first);
    az_assets_free(a);

    /* a one-bit change (same length, 'e' -> 'd') changes it */
    CU_ASSERT_EQUAL_FATAL(write_file(d, "index.html", "<p>ond</p>", 10), 0);
    a = load_dir(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT(is_etag(az_assets_index(a)->etag));
    CU_ASSERT_STRING_NOT_EQUAL(az_assets_index(a)->etag, first);
    CU_ASSERT_EQUAL(az_assets_index(a)->len, 10);
    CU_ASSERT(memcmp(az_assets_index(a)->data, "<p>ond</p>", 10) == 0);
    az_assets_free(a);
    remove_tree(d);
    free(d);
}

static void test_trailing_slash_and_empty_files(void)
{
    char *d = new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_EQUAL_FATAL(write_file(d, "index.html", "", 0), 0);
    CU_ASSERT_EQUAL_FATAL(make_dir(d, "assets"), 0);
    CU_ASSERT_EQUAL_FATAL(write_file(d, "assets/x.js", "1", 1), 0);
    char with_slash[300];
    snprintf(with_slash, sizeof with_slash, "%s//", d);
    az_assets *a = load_dir(with_slash);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(az_assets_count(a), 2);
    CU_ASSERT_EQUAL(az_assets_bytes(a), 1);
    CU_ASSERT_PTR_NOT_NULL(find(a, "/assets/x.js"));
    CU_ASSERT_EQUAL(az_assets_index(a)->len, 0);
    CU_ASSERT(is_etag(az_assets_index(a)->etag));
    CU_ASSERT_STRING_EQUAL(must(a, "/assets/x.js")->path, "/assets/x.js");
    az_assets_free(a);
    remove_tree(d);
    free(d);
}

static void check_load_err(const char *dir, az_err want, const char *needle)
{
    char msg[AZ_MSG_MAX] = "";
    az_assets *a = (az_assets *)1;
    az_err err = az_assets_load(dir, &a, msg);
    if (err != want) fprintf(stderr, "\n  az_assets_load(%s): %d %s\n", dir, (int)err, msg);
    CU_ASSERT_EQUAL(err, want);
    CU_ASSERT_PTR_NULL(a);
    CU_ASSERT(msg[0] != '\0');
    if (needle) {
        if (!strstr(msg, needle)) fprintf(stderr, "\n  msg [%s] lacks [%s]\n", msg, needle);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, needle));
    }
    if (err == AZ_OK && a && a != (az_assets *)1) az_assets_free(a);
}

static void test_missing_index(void)
{
    char *d = new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    /* empty */
    check_load_err(d, AZ_ERR_INVALID, "index.html");
    /* files, and an index.html only in a subdirectory */
    CU_ASSERT_EQUAL_FATAL(write_file(d, "app.js", "x", 1), 0);
    CU_ASSERT_EQUAL_FATAL(make_dir(d, "sub"), 0);
    CU_ASSERT_EQUAL_FATAL(write_file(d, "sub/index.html", "<p>", 3), 0);
    check_load_err(d, AZ_ERR_INVALID, "index.html");
    /* a symlinked or dot-named index is no index */
    char p[512], t[512];
    join(p, sizeof p, d, "sub/index.html");
    join(t, sizeof t, d, "index.html");
    CU_ASSERT_EQUAL_FATAL(symlink(p, t), 0);
    check_load_err(d, AZ_ERR_INVALID, "index.html");
    remove_tree(d);
    free(d);
}

static void test_missing_dir(void)
{
    char p[512];
    join(p, sizeof p, root, "does-not-exist");
    check_load_err(p, AZ_ERR_IO, "does-not-exist");
    /* a regular file is not a directory */
    join(p, sizeof p, root, "index.html");
    check_load_err(p, AZ_ERR_IO, NULL);
}

static void test_limits(void)
{
    /* one file over AZ_ASSETS_MAX_FILES */
    char *d = new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_EQUAL_FATAL(write_file(d, "index.html", "<p>", 3), 0);
    CU_ASSERT_EQUAL_FATAL(make_dir(d, "assets"), 0);
    int bad = 0;
    for (int i = 0; i < AZ_ASSETS_MAX_FILES && !bad; i++) {
        char name[64];
        snprintf(name, sizeof name, "assets/f%05d.js", i);
        bad = write_file(d, name, "1", 1);
    }
    CU_ASSERT_EQUAL_FATAL(bad, 0);
    check_load_err(d, AZ_ERR_INVALID, "files");
    /* exactly at the limit loads */
    char p[512];
    join(p, sizeof p, d, "assets/f00000.js");
    CU_ASSERT_EQUAL_FATAL(unlink(p), 0);
    az_assets *a = load_dir(d);
    if (a) CU_ASSERT_EQUAL(az_assets_count(a), AZ_ASSETS_MAX_FILES);
    az_assets_free(a);
    remove_tree(d);
    free(d);

    /* more than AZ_ASSETS_MAX_BYTES in total: sparse files of 13 MiB (one file may not reach
     * AZ_FILE_MAX) and index.html's 3 bytes: 4 x 13 MiB + (12 MiB - 3) + 3 is the limit */
    d = new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_EQUAL_FATAL(write_file(d, "index.html", "<p>", 3), 0);
    const off_t mib = 1 << 20;
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "big%d.bin", i);
        CU_ASSERT_EQUAL_FATAL(write_file(d, name, "", 0), 0);
        join(p, sizeof p, d, name);
        CU_ASSERT_EQUAL_FATAL(truncate(p, i < 4 ? 13 * mib : 12 * mib - 3), 0);
    }
    CU_ASSERT_EQUAL_FATAL(4 * 13 * mib + 12 * mib, (off_t)AZ_ASSETS_MAX_BYTES);
    /* exactly the limit loads */
    a = load_dir(d);
    if (a) {
        CU_ASSERT_EQUAL(az_assets_bytes(a), AZ_ASSETS_MAX_BYTES);
        CU_ASSERT_EQUAL(az_assets_count(a), 6);
    }
    az_assets_free(a);
    /* one byte more does not, and the message says why */
    CU_ASSERT_EQUAL_FATAL(truncate(p, 12 * mib - 2), 0);
    check_load_err(d, AZ_ERR_INVALID, "more than");
    /* nor does a whole 13 MiB more */
    CU_ASSERT_EQUAL_FATAL(truncate(p, 13 * mib), 0);
    check_load_err(d, AZ_ERR_INVALID, "more than");
    remove_tree(d);
    free(d);
}

static void test_free_null(void)
{
    az_assets_free(NULL); /* must simply return */
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("assets", setup, teardown);
    if (!s) return 1;
    CU_add_test(s, "count and bytes", test_count_and_bytes);
    CU_add_test(s, "find", test_find);
    CU_add_test(s, "dot files and symlinks skipped", test_skipped_entries);
    CU_add_test(s, "content types", test_content_types);
    CU_add_test(s, "immutable under /assets/", test_immutable);
    CU_add_test(s, "gzip copies", test_gzip);
    CU_add_test(s, "etag", test_etag);
    CU_add_test(s, "trailing slash, empty file", test_trailing_slash_and_empty_files);
    CU_add_test(s, "missing index.html", test_missing_index);
    CU_add_test(s, "missing directory", test_missing_dir);
    CU_add_test(s, "limits", test_limits);
    CU_add_test(s, "free NULL", test_free_null);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
