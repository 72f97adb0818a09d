/* Aligned text tables for terminal output, shrinking the widest columns (cells end in "…")
 * so a row fits the terminal width. */
#ifndef AZ_TABLE_H
#define AZ_TABLE_H

#include <stddef.h>
#include <stdio.h>

#include "core/err.h"

typedef struct az_table az_table;

/* Creates a table with ncols columns named by headers (copied). NULL when out of memory.
 * Free with az_table_free. */
az_table *az_table_new(size_t ncols, const char *const *headers);

/* Frees the table and its copied cells; accepts NULL. */
void az_table_free(az_table *t);

/* Appends a row of ncols cells (copied; NULL = ""); control characters become spaces so a
 * row stays on one line. AZ_ERR_NOMEM on allocation failure (the table is unchanged). */
az_err az_table_add(az_table *t, const char *const *cells, char *msg);

/* Marks column col as never shrunk (ids must stay whole to be copied). */
void az_table_keep(az_table *t, size_t col);

/* Number of rows added so far. */
size_t az_table_rows(const az_table *t);

/* Prints header and rows, columns separated by three spaces. When width > 0 the widest
 * columns are shrunk (never below their header or 6 columns) and their cells truncated
 * with "…" until a row fits in width display columns. */
void az_table_print(const az_table *t, FILE *f, int width);

/* The width to print for: $COLUMNS when it is a number, else the terminal's width when f is a
 * terminal, else 80; never less than 80. */
int az_table_width(FILE *f);

/* Display columns of UTF-8 text, counting one per code point (no wide-character tables). */
size_t az_table_text_width(const char *s);

/* Copies s into buf (size bytes) cut to at most width display columns, ending in "…" when
 * cut; never splits a UTF-8 sequence. Returns buf. */
char *az_table_truncate(const char *s, size_t width, char *buf, size_t size);

#endif
