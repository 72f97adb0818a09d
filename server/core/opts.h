/* Table-driven settings: one row per setting ({flag, env, kind, field, default, limits, help,
 * check}) drives defaults, environment variables, command-line flags, validation and --help, so
 * they cannot disagree. agentzd and agentz-gateway share the engine and the gateway's table. */
#ifndef AZ_OPTS_H
#define AZ_OPTS_H

#include <stddef.h>
#include <stdio.h>

#include "err.h"

typedef enum az_opt_kind {
    AZ_OPT_STR = 0, /* char *, strdup'ed; "" = unset (NULL) */
    AZ_OPT_INT,     /* int */
    AZ_OPT_MS,      /* int milliseconds from "1500ms", "10s", "2m", "1h", "7d" or a bare number */
    AZ_OPT_SECONDS, /* int seconds, from the same durations */
    AZ_OPT_BYTES,   /* int bytes from "512", "64k", "4m" (KiB, MiB) */
    AZ_OPT_FLAG,    /* int set to 1 by --flag; no environment variable */
} az_opt_kind;

/* Checks a string value; origin ("--listen", "AGENTZ_GRPC_LISTEN", "default") names it. */
typedef az_err (*az_opt_check_fn)(const char *origin, const char *value, char *msg);

typedef struct az_opt {
    const char *flag; /* without "--" and without the table's prefix */
    const char *env;  /* NULL = flag only */
    az_opt_kind kind;
    size_t off;       /* offsetof the field in the table's struct */
    const char *def;  /* NULL = no default */
    long min, max;    /* for the numeric kinds */
    const char *help;
    az_opt_check_fn check;
} az_opt;

/* One table over one struct; prefix is prepended to every flag ("gateway-" turns --listen into
 * --gateway-listen), so two tables can share a command line. */
typedef struct az_opt_table {
    const az_opt *opts;
    size_t n;
    void *base;
    const char *prefix;
} az_opt_table;

/* Fills the fields every table lists (each set to 0/NULL first: strings a previous load left
 * must have been released with az_opts_free) from defaults, then the environment, then argv[1..]
 * (flags win; "--flag value" or "--flag=value"). On AZ_ERR_INVALID msg is one line naming the
 * flag or variable and its problem; the structs are then unspecified but freeable with
 * az_opts_free. AZ_ERR_NOMEM when a string cannot be copied. */
az_err az_opts_load(const az_opt_table *tables, size_t ntables, int argc, char **argv, char *msg);

/* Frees the strings of every table's struct and sets them to NULL. */
void az_opts_free(const az_opt_table *tables, size_t ntables);

/* Writes one "--flag VALUE  help / env VAR, default D" entry per setting. */
void az_opts_usage(const az_opt_table *tables, size_t ntables, FILE *out);

/* Parses a duration like AZ_OPT_MS into milliseconds; 0, or -1 when malformed or negative. */
int az_opts_parse_ms(const char *s, long *out);

#endif
