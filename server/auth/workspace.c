/* Workspaces in PostgreSQL: stable mapping of external organizations to workspace uuids, and
 * creation on demand for bootstrapping. These lookups cross tenants, so they run as system work. */
#include "workspace.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "core/text.h"

#define EXTERNAL_ID_MAX 256
#define NAME_MAX_CHARS 256
#define LOOKUP_MS 5000

/* No workspace: row-level security treats the statements as system work. */
static az_ctx system_ctx(void) { return (az_ctx){.deadline_ms = az_now_ms() + LOOKUP_MS}; }

az_err az_workspace_resolve(az_pg *pg, const char *external_id, const char *display_name,
                            char id[37], char *msg)
{
    id[0] = '\0';
    az_err err = az_text_check("external_id", external_id, EXTERNAL_ID_MAX, AZ_TEXT_REQUIRED, msg);
    if (err != AZ_OK) return err;
    const char *name = display_name && *display_name ? display_name : external_id;
    if ((err = az_text_check("display_name", name, NAME_MAX_CHARS, 0, msg)) != AZ_OK) return err;
    az_ctx ctx = system_ctx();
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, &ctx, &c, msg)) != AZ_OK) return err;
    const char *p[2] = {external_id, name};
    PGresult *r = NULL;
    /* The WHERE keeps a known workspace's row untouched (no dead tuple per sign-in); RETURNING
     * is then empty and the plain SELECT below finds the id. */
    err = az_pg_exec(c, &ctx,
                     "INSERT INTO workspaces (id, name, external_id) VALUES (gen_random_uuid(), $2, $1)"
                     " ON CONFLICT (external_id) DO UPDATE SET name = EXCLUDED.name"
                     " WHERE workspaces.name IS DISTINCT FROM EXCLUDED.name"
                     " RETURNING id::text",
                     2, p, &r, msg);
    if (err == AZ_OK && PQntuples(r) == 0) {
        PQclear(r);
        r = NULL;
        err = az_pg_exec(c, &ctx, "SELECT id::text FROM workspaces WHERE external_id = $1", 1, p, &r,
                         msg);
        if (err == AZ_OK && PQntuples(r) == 0)
            err = az_fail(msg, AZ_ERR_INTERNAL, "workspace of %s vanished while resolving it",
                          external_id);
    }
    if (err == AZ_OK) snprintf(id, 37, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    az_pg_release(c);
    return err;
}

az_err az_workspace_ensure(az_pg *pg, const char *id, const char *name, char *msg)
{
    if (!id || !az_text_is_uuid(id))
        return az_fail(msg, AZ_ERR_INVALID, "workspace: \"%.40s\" is not a uuid", id ? id : "");
    if (!name || !*name) name = id;
    az_err err = az_text_check("workspace name", name, NAME_MAX_CHARS, 0, msg);
    if (err != AZ_OK) return err;
    az_ctx ctx = system_ctx();
    az_pgconn *c;
    if ((err = az_pg_acquire(pg, &ctx, &c, msg)) != AZ_OK) return err;
    const char *p[2] = {id, name};
    err = az_pg_exec(c, &ctx,
                     "INSERT INTO workspaces (id, name) VALUES ($1::uuid, $2)"
                     " ON CONFLICT (id) DO NOTHING",
                     2, p, NULL, msg);
    az_pg_release(c);
    return err;
}
