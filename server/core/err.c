/* Error names and the single table mapping az_err to gRPC status codes. */
#include "err.h"

#include <stdio.h>

static const struct {
    const char *name;
    int grpc; /* grpc_status_code values, stable by the gRPC spec */
} table[AZ_ERR__COUNT] = {
    [AZ_OK] = {"ok", 0},
    [AZ_ERR_INVALID] = {"invalid", 3},
    [AZ_ERR_NOT_FOUND] = {"not_found", 5},
    [AZ_ERR_EXISTS] = {"already_exists", 6},
    [AZ_ERR_ABORTED] = {"aborted", 10},
    [AZ_ERR_PRECONDITION] = {"failed_precondition", 9},
    [AZ_ERR_OUT_OF_RANGE] = {"out_of_range", 11},
    [AZ_ERR_EXHAUSTED] = {"resource_exhausted", 8},
    [AZ_ERR_UNAUTHENTICATED] = {"unauthenticated", 16},
    [AZ_ERR_PERMISSION] = {"permission_denied", 7},
    [AZ_ERR_UNAVAILABLE] = {"unavailable", 14},
    [AZ_ERR_DEADLINE] = {"deadline_exceeded", 4},
    [AZ_ERR_CANCELLED] = {"cancelled", 1},
    [AZ_ERR_UNIMPLEMENTED] = {"unimplemented", 12},
    [AZ_ERR_NOMEM] = {"out_of_memory", 8},
    [AZ_ERR_IO] = {"io", 13},
    [AZ_ERR_INTERNAL] = {"internal", 13},
};

static const char *const status_names[] = {
    "OK",        "CANCELLED",         "UNKNOWN",         "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",      "UNAVAILABLE",     "DATA_LOSS",
    "UNAUTHENTICATED",
};
#define NSTATUS (sizeof status_names / sizeof *status_names)

const char *az_grpc_status_name(int grpc_status)
{
    if (grpc_status < 0 || (size_t)grpc_status >= NSTATUS) return "UNKNOWN";
    return status_names[grpc_status];
}

az_err az_err_from_grpc_status(int grpc_status)
{
    if (grpc_status == 0) return AZ_OK;
    /* Search the table above rather than keep an inverse that could drift from it. */
    for (int e = 1; e < AZ_ERR__COUNT; e++) {
        if (e == AZ_ERR_NOMEM || e == AZ_ERR_IO) continue; /* aliases of 8 and 13 */
        if (table[e].grpc == grpc_status) return (az_err)e;
    }
    return AZ_ERR_INTERNAL;
}

const char *az_err_name(az_err e)
{
    if ((unsigned)e >= AZ_ERR__COUNT) return "unknown";
    return table[e].name;
}

int az_err_grpc_status(az_err e)
{
    if ((unsigned)e >= AZ_ERR__COUNT) return 2; /* UNKNOWN */
    return table[e].grpc;
}

az_err az_vfail(char *msg, az_err code, const char *fmt, va_list ap)
{
    if (msg) vsnprintf(msg, AZ_MSG_MAX, fmt, ap);
    return code;
}

az_err az_fail(char *msg, az_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    az_vfail(msg, code, fmt, ap);
    va_end(ap);
    return code;
}
