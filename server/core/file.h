/* Reading whole files (or standard input) into memory, for certificates and -f inputs. */
#ifndef AZ_FILE_H
#define AZ_FILE_H

#include <stddef.h>

#include "core/err.h"

/* Upper bound on what az_file_read accepts, so a wrong path cannot eat all memory. */
#define AZ_FILE_MAX (16u << 20)

/* Reads path ("-" = standard input) completely. On AZ_OK *out is a NUL-terminated buffer of
 * *len bytes (the NUL not counted) that the caller frees with free(). On failure *out is
 * NULL and msg names the path: AZ_ERR_IO (cannot open or read), AZ_ERR_INVALID (larger than
 * AZ_FILE_MAX), AZ_ERR_NOMEM. len may be NULL. */
az_err az_file_read(const char *path, char **out, size_t *len, char *msg);

#endif
