/* base64url without padding (RFC 4648 section 5): API keys, secret keys, page tokens. */
#ifndef AZ_B64_H
#define AZ_B64_H

#include <stddef.h>

#define AZ_B64URL_ALPHABET "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

/* Encodes n bytes into out, which must hold 4 * ceil(n / 3) + 1 bytes; NUL-terminates and
 * returns the length written. */
size_t az_b64url_encode(const unsigned char *in, size_t n, char *out);

/* Decodes s into out (at most cap bytes); returns the length, or -1 on a character outside the
 * alphabet or when out is too small. */
int az_b64url_decode(const char *s, unsigned char *out, size_t cap);

#endif
