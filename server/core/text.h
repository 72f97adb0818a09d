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

/* 1 when s is valid UTF-8. */
int az_text_utf8_valid(const char *s, size_t len);

/* 1 when s is a canonical lowercase or uppercase UUID (8-4-4-4-12 hex). */
int az_text_is_uuid(const char *s);

/* Writes a random version-4 UUID (37 bytes with the NUL) into out. AZ_ERR_IO when the
 * kernel's random source fails. */
az_err az_text_uuid4(char out[37]);

#endif
