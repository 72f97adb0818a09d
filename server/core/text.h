/* Input checks shared by every API layer: UTF-8, control characters, lengths, identifiers. */
#ifndef AZ_TEXT_H
#define AZ_TEXT_H

#include <stddef.h>

#include "err.h"

enum {
    AZ_TEXT_REQUIRED = 1 << 0,  /* empty is an error */
    AZ_TEXT_MULTILINE = 1 << 1, /* allow \n, \r and \t */
};

/* Checks that s is valid UTF-8 of at most max characters (code points) without control
 * characters (but for \n\r\t with AZ_TEXT_MULTILINE). On failure returns AZ_ERR_INVALID with
 * msg naming field: "agent.role is required", "agent.goal: longer than 4096 characters". */
az_err az_text_check(const char *field, const char *s, size_t max, int flags, char *msg);

#define AZ_TEXT_URL_MAX 2048
#define AZ_TEXT_LABEL_KEY_MAX 63

/* 1 when k is a label key: 1..63 characters of a-z, 0-9, '_', '-', '.', '/'. Shared by every
 * resource's labels and label selectors. */
int az_text_label_key_ok(const char *k);

/* Checks an http(s) URL of at most AZ_TEXT_URL_MAX characters with a host and no spaces; empty
 * is an error only with AZ_TEXT_REQUIRED. AZ_ERR_INVALID names field. */
az_err az_text_check_url(const char *field, const char *u, int flags, char *msg);

struct Google__Protobuf__Duration;
/* Checks a google.protobuf.Duration (NULL = unset, fine): not negative, at most max_s seconds. */
az_err az_text_check_duration(const char *field, const struct Google__Protobuf__Duration *d,
                              long max_s, char *msg);

/* 1 when s is valid UTF-8. */
int az_text_utf8_valid(const char *s, size_t len);

/* 1 when s is a canonical lowercase or uppercase UUID (8-4-4-4-12 hex). */
int az_text_is_uuid(const char *s);

/* Writes a random version-4 UUID (37 bytes with the NUL) into out. AZ_ERR_IO when the
 * kernel's random source fails. */
az_err az_text_uuid4(char out[37]);

#endif
