/* The permission table: every RPC the server knows and the least role it needs. */
#ifndef AZ_PERM_H
#define AZ_PERM_H

#include <stddef.h>

#define AZ_PERM_PUBLIC (-1) /* no principal needed: health and reflection */

typedef struct az_perm {
    const char *method; /* "/agentz.v1.AgentService/CreateAgent" */
    int role;           /* Agentz__V1__Role (VIEWER..OWNER) or AZ_PERM_PUBLIC */
    int mutating;       /* written to the audit log */
    int expensive;      /* counts against the stricter rate limit (StartRun, ...) */
} az_perm;

/* The entry for method, or NULL when the method is not in the table (unknown methods). */
const az_perm *az_perm_find(const char *method);

/* The whole table (for tests that check every RPC of the descriptor set is listed). */
const az_perm *az_perm_table(size_t *n);

#endif
