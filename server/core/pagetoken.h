/* Opaque page tokens for every List method: base64url of a short text the owning service formats
 * and parses itself, bound by a hash to the filters it was issued for. */
#ifndef AZ_PAGETOKEN_H
#define AZ_PAGETOKEN_H

#include <stddef.h>

#include "core/arena.h"
#include "core/err.h"

/* Size of the raw text a token may carry. */
#define AZ_PAGETOKEN_RAW_MAX 240

/* base64url(raw) without padding, in arena (freed with it); NULL when out of memory or raw is
 * longer than AZ_PAGETOKEN_RAW_MAX. */
char *az_pagetoken_encode(az_arena *arena, const char *raw);

/* Decodes token into raw (AZ_PAGETOKEN_RAW_MAX + 1 bytes, NUL-terminated). AZ_ERR_INVALID
 * "page_token is invalid" (in msg) for an empty token, a character outside base64url, a text
 * too long or holding a NUL byte; the caller then checks the text's own format and hash. */
az_err az_pagetoken_decode(const char *token, char raw[AZ_PAGETOKEN_RAW_MAX + 1], char *msg);

/* FNV-1a of s (NULL = ""), folded into h: binds a token to its filters. Cannot fail. */
unsigned long az_pagetoken_hash(unsigned long h, const char *s);
#define AZ_PAGETOKEN_HASH_INIT 1469598103934665603ul

#endif
