/* Versioned SQL migrations compiled into the binary, applied at start-up under an advisory lock. */
#ifndef AZ_MIGRATE_H
#define AZ_MIGRATE_H

#include <stddef.h>

#include "../core/err.h"

typedef struct az_migration {
    int version;     /* from the file name: 0001_init.sql -> 1 */
    const char *name;
    const char *sql; /* may hold several statements */
} az_migration;

/* Generated from the .sql files in server/store/migrations, ascending by version. */
extern const az_migration az_migrations[];
extern const size_t az_migrations_count;

struct az_pg;

/* Applies every migration newer than the database's, each in its own transaction, while
 * holding a PostgreSQL advisory lock so replicas starting together apply each exactly once.
 * *applied (may be NULL) receives how many ran. On error the failing migration is rolled
 * back, msg names it, and earlier ones stay applied. */
az_err az_migrate(struct az_pg *pg, const az_migration *list, size_t n, int *applied, char *msg);

/* The highest applied version, 0 for an empty database. */
az_err az_migrate_version(struct az_pg *pg, int *version, char *msg);

#endif
