/* Command-line parsing for the agentz CLI: a table-driven flag parser and the value parsers
 * (durations, numbers, labels, selectors, enums) plus update-mask building from given flags. */
#ifndef AZ_ARGS_H
#define AZ_ARGS_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

typedef enum az_flag_kind {
    AZ_FLAG_BOOL = 0, /* --x, --x=true, --x=false */
    AZ_FLAG_VALUE,    /* --x V, --x=V, -c V, -cV; the last one given wins */
    AZ_FLAG_LIST,     /* like VALUE, but every occurrence is kept */
} az_flag_kind;

typedef struct az_flag {
    const char *name;    /* long name without "--" */
    char short_name;     /* 0 = none */
    az_flag_kind kind;
    const char *metavar; /* shown in help ("ID"); NULL for bools */
    const char *help;
    const char *field;   /* field path this flag sets ("llm.model"), for update masks; or NULL */
} az_flag;

/* What the parser found for one flag. Strings point into argv. */
typedef struct az_flag_value {
    int count;          /* how many times it was given; 0 = not given */
    const char *value;  /* the last value; bools: "true" or "false" */
    const char **list;  /* AZ_FLAG_LIST: all values, in order (count entries) */
} az_flag_value;

/* A flag table and the values the parser fills for it (values has n entries, zeroed before
 * the first parse). Several sets are parsed together, e.g. global flags + a command's flags. */
typedef struct az_flag_set {
    const az_flag *flags;
    az_flag_value *values;
    size_t n;
} az_flag_set;

enum {
    AZ_ARGS_STOP_AT_POSITIONAL = 1 << 0, /* stop before the first positional argument */
};

/* Parses argv[*idx .. argc) against sets, advancing *idx. Positional arguments are appended
 * to pos (room for pos_max entries; *npos counts them); "--" makes every later argument
 * positional and "-" is positional. With AZ_ARGS_STOP_AT_POSITIONAL parsing stops at the
 * first positional, leaving *idx on it. On failure returns AZ_ERR_INVALID with msg naming
 * the flag ("unknown flag --x", "flag --role needs a value"). Values accumulate across calls;
 * list arrays are malloc'd: release them with az_args_free_values. */
az_err az_args_parse(const az_flag_set *sets, size_t nsets, int argc, char **argv, int *idx,
                     int flags, const char **pos, size_t pos_max, size_t *npos, char *msg);

/* Frees the list arrays of n values and zeroes them; accepts NULL. */
void az_args_free_values(az_flag_value *values, size_t n);

/* Writes "  -o, --output FORMAT   help" lines for a table, aligned at a fixed column. */
void az_args_print_flags(FILE *f, const az_flag *flags, size_t n);

/* The value of a bool flag: 1 for "true" (or given without a value), 0 otherwise. */
int az_args_bool(const az_flag_value *v);

/* Go-style durations: a sequence of decimal numbers with optional fraction and a unit, e.g.
 * "1h2m3.5s", "500ms", "30s", "1.5h"; units ns, us (µs), ms, s, m, h; "0" alone is allowed.
 * Negative or overflowing (> ~292 years) values are rejected. flag names the flag in msg
 * ("--llm-timeout: invalid duration \"3x\""). */
az_err az_args_duration(const char *flag, const char *s, int64_t *seconds, int32_t *nanos,
                        char *msg);

/* A window length: a duration as az_args_duration takes it ("90m", "24h", "1.5s") or whole days
 * ("7d", at most 365000) into *seconds. AZ_ERR_INVALID naming flag otherwise. */
az_err az_args_days_duration(const char *flag, const char *s, int64_t *seconds, char *msg);

/* Base-10 integer in [min, max]; msg names flag. */
az_err az_args_int32(const char *flag, const char *s, int32_t min, int32_t max, int32_t *out,
                     char *msg);

/* Base-10 integer in [min, max]; msg names flag. */
az_err az_args_int64(const char *flag, const char *s, int64_t min, int64_t max, int64_t *out,
                     char *msg);

/* A finite number (strtod syntax); msg names flag. */
az_err az_args_double(const char *flag, const char *s, double *out, char *msg);

/* Splits "key=value" (value may be empty, key may not, key has no '=' or ','): the key is
 * s[0 .. *key_len) and *value points just past the '=' inside s. */
az_err az_args_kv(const char *flag, const char *s, size_t *key_len, const char **value,
                  char *msg);

/* Validates a label selector "k=v,k2=v2" (every term as az_args_kv; no empty terms). */
az_err az_args_selector(const char *flag, const char *s, char *msg);

/* Parses an enum value given by its short lowercase name: with prefix "AGENT_STATUS_",
 * "idle", "IDLE" and "AGENT_STATUS_IDLE" all give AGENT_STATUS_IDLE's number. On failure
 * msg lists the accepted names. */
az_err az_args_enum(const char *flag, const ProtobufCEnumDescriptor *desc, const char *prefix,
                    const char *s, int *out, char *msg);

/* Collects the field paths of every given flag of set (az_flag.field, flags without a
 * field skipped), in table order, without duplicates. On AZ_OK *paths is a malloc'd array
 * of *npaths pointers into the table's strings; free the array (not the strings) with
 * free(). *paths is NULL when no such flag was given. */
az_err az_args_mask_paths(const az_flag_set *set, const char ***paths, size_t *npaths,
                          char *msg);

#endif
