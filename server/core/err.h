/* The one error enum every AGENTZ module returns, and its mapping to gRPC status codes. */
#ifndef AZ_ERR_H
#define AZ_ERR_H

#include <stdarg.h>

typedef enum az_err {
    AZ_OK = 0,
    AZ_ERR_INVALID,         /* bad input: INVALID_ARGUMENT */
    AZ_ERR_NOT_FOUND,       /* NOT_FOUND */
    AZ_ERR_EXISTS,          /* ALREADY_EXISTS */
    AZ_ERR_ABORTED,         /* etag mismatch, lost race: ABORTED */
    AZ_ERR_PRECONDITION,    /* illegal state transition: FAILED_PRECONDITION */
    AZ_ERR_OUT_OF_RANGE,    /* OUT_OF_RANGE */
    AZ_ERR_EXHAUSTED,       /* limits, slow consumers, rate limits: RESOURCE_EXHAUSTED */
    AZ_ERR_UNAUTHENTICATED, /* UNAUTHENTICATED */
    AZ_ERR_PERMISSION,      /* PERMISSION_DENIED */
    AZ_ERR_UNAVAILABLE,     /* a dependency is down, shutting down: UNAVAILABLE */
    AZ_ERR_DEADLINE,        /* DEADLINE_EXCEEDED */
    AZ_ERR_CANCELLED,       /* CANCELLED */
    AZ_ERR_UNIMPLEMENTED,   /* UNIMPLEMENTED */
    AZ_ERR_NOMEM,           /* allocation failed: RESOURCE_EXHAUSTED */
    AZ_ERR_IO,              /* system call or file failure: INTERNAL */
    AZ_ERR_INTERNAL,        /* a bug or unexpected state: INTERNAL */
    AZ_ERR__COUNT
} az_err;

/* Size of every error-message buffer passed as `char *msg` in AGENTZ APIs. */
#define AZ_MSG_MAX 512

/* Short stable name ("invalid", "not_found", ...); never NULL. */
const char *az_err_name(az_err e);

/* The grpc_status_code (as int, so callers need not include grpc) for e. */
int az_err_grpc_status(az_err e);

/* "OK", "NOT_FOUND", ... for a raw grpc_status_code; "UNKNOWN" out of range. Never NULL. */
const char *az_grpc_status_name(int grpc_status);

/* The az_err for a raw grpc_status_code: the inverse of az_err_grpc_status, with UNKNOWN and
 * DATA_LOSS (no az_err of their own) as AZ_ERR_INTERNAL. */
az_err az_err_from_grpc_status(int grpc_status);

/* Formats a message into msg (AZ_MSG_MAX bytes; NULL allowed) and returns code.
 * Lets callers write `return az_fail(msg, AZ_ERR_INVALID, "agent.role is required");`. */
az_err az_fail(char *msg, az_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
az_err az_vfail(char *msg, az_err code, const char *fmt, va_list ap);

#endif
