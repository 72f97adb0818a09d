/* The LLM price table: USD per million input and output tokens per model, with built-in
 * defaults for well-known models, overridable from AGENTZ_LLM_PRICES and a JSON file. */
#ifndef AZ_PRICE_H
#define AZ_PRICE_H

#include <stdint.h>

#include "core/err.h"

typedef struct az_llm_prices az_llm_prices;

/* A table holding the built-in defaults. On AZ_OK *out is the caller's (az_llm_prices_free). */
az_err az_llm_prices_new(az_llm_prices **out, char *msg);

/* An empty table. */
az_err az_llm_prices_new_empty(az_llm_prices **out, char *msg);

void az_llm_prices_free(az_llm_prices *p); /* accepts NULL */

/* Adds or replaces model's price (both >= 0, finite). AZ_ERR_INVALID names the bad value. */
az_err az_llm_prices_set(az_llm_prices *p, const char *model, double in_per_m, double out_per_m,
                         char *msg);

/* Applies "model=in:out,model2=in:out" (spaces around items allowed; empty spec = nothing).
 * AZ_ERR_INVALID names the bad item; on failure items before it stay applied. */
az_err az_llm_prices_parse(az_llm_prices *p, const char *spec, char *msg);

/* Applies a JSON file {"model": {"input": 2.5, "output": 10}, ...} (an [in, out] array is also
 * accepted). AZ_ERR_IO when unreadable, AZ_ERR_INVALID naming the bad entry. */
az_err az_llm_prices_load_file(az_llm_prices *p, const char *path, char *msg);

/* Defaults, then the file AGENTZ_LLM_PRICES_FILE, then AGENTZ_LLM_PRICES. On AZ_OK *out is the
 * caller's; errors as the functions above, naming the variable. */
az_err az_llm_prices_from_env(az_llm_prices **out, char *msg);

/* The process-wide table: az_llm_prices_from_env on first use (thread-safe); when that fails
 * the error is logged once and the built-in defaults are used. Never NULL; never freed. */
const az_llm_prices *az_llm_prices_default(void);

/* Looks model up: exact name, else the longest entry that is a prefix followed by '-' or '.'
 * ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini"), each also tried on the part after the last
 * '/' ("openai/gpt-4o" -> "gpt-4o"). 1 and the prices when found, else 0. */
int az_llm_prices_lookup(const az_llm_prices *p, const char *model, double *in_per_m,
                         double *out_per_m);

/* Price in USD of the given tokens; 0 when the model is unknown. */
double az_llm_prices_cost(const az_llm_prices *p, const char *model, int64_t prompt_tokens,
                          int64_t completion_tokens);

#endif
