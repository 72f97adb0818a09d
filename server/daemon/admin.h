/* `agentzd admin ...`: operator commands that work on the database directly (create an API key,
 * verify the audit chain, re-encrypt secrets), and the local admin key of the embedded default. */
#ifndef AZ_ADMIN_H
#define AZ_ADMIN_H

#include <stddef.h>

#include "core/err.h"
#include "store/pgpool.h"

/* Runs one admin command; argv starts after "admin" (argv[0] is the subcommand). Prints results
 * to stdout and errors to stderr. Returns the process exit code: 0 success, 1 a negative answer
 * (verify-audit found tampering), 2 usage or operational errors. */
int az_admin_main(int argc, char **argv);

/* Makes data_dir/admin.key (mode 0600, the key and a newline) hold a working owner key of the
 * default workspace: nothing happens when the file's key verifies; otherwise (no file, or a
 * database that was reset) a new key is minted and the file rewritten atomically. Never logs
 * the key. Errors: the database's, or AZ_ERR_IO for the file. */
az_err az_admin_ensure_local_key(az_pg *pg, const char *data_dir, char *msg);

/* The libpq URL of the embedded PostgreSQL running under data_dir (the socket recorded in
 * DATA/run), into url (cap bytes), when it answers; AZ_ERR_UNAVAILABLE when none does. Lets
 * admin commands and tests reach the cluster of a running agentzd without its data-dir lock. */
az_err az_admin_running_url(const char *data_dir, char *url, size_t cap, char *msg);

#endif
