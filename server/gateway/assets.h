/* The web UI's static files, read into memory once at start-up (with gzip copies of the
 * compressible ones), so serving them costs no file I/O and no compression per request. */
#ifndef AZ_ASSETS_H
#define AZ_ASSETS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Limits: what one directory may hold in total, and in files. */
#define AZ_ASSETS_MAX_BYTES (64u << 20)
#define AZ_ASSETS_MAX_FILES 4096

typedef struct az_asset {
    const char *path;         /* "/index.html", "/assets/index-3f2a.js" */
    const char *content_type; /* "text/html; charset=utf-8" */
    const uint8_t *data;
    size_t len;
    const uint8_t *gzip; /* NULL when not worth compressing */
    size_t gzip_len;
    char etag[24];       /* "\"<16 hex digits>\"" of the content */
    int immutable;       /* under /assets/ (hashed names): cached for a year */
} az_asset;

typedef struct az_assets az_assets;

/* Reads every regular file under dir (recursively; dot files and symlinks are skipped).
 * On AZ_OK *out is freed with az_assets_free. On failure *out is NULL and msg says why:
 * AZ_ERR_IO (dir cannot be read), AZ_ERR_INVALID (no index.html, or more than the limits),
 * AZ_ERR_NOMEM. */
az_err az_assets_load(const char *dir, az_assets **out, char *msg);

/* Frees a; accepts NULL. */
void az_assets_free(az_assets *a);

/* The file at path (len bytes, starting with '/'; "/" means "/index.html"), or NULL. */
const az_asset *az_assets_find(const az_assets *a, const char *path, size_t len);

/* index.html, for client-side routes of the single-page app. Never NULL on a loaded set. */
const az_asset *az_assets_index(const az_assets *a);

/* Files and bytes loaded (uncompressed). */
size_t az_assets_count(const az_assets *a);
size_t az_assets_bytes(const az_assets *a);

#endif
