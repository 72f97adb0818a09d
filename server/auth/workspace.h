/* Workspaces: owns the workspaces table. A workspace is the tenant every row belongs to. */
#ifndef AZ_WORKSPACE_H
#define AZ_WORKSPACE_H

#include "core/err.h"
#include "store/pgpool.h"

/* The workspace of an external organization or user (a Clerk org_id, or "user:<sub>" for a
 * personal workspace): returns its uuid in id (37 bytes), creating it on first sight. Stable:
 * the same external id always maps to the same uuid. */
az_err az_workspace_resolve(az_pg *pg, const char *external_id, const char *display_name,
                            char id[37], char *msg);

/* Creates workspace id (a uuid) if missing; AZ_OK when it exists. */
az_err az_workspace_ensure(az_pg *pg, const char *id, const char *name, char *msg);

#endif
