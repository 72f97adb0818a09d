/* The Anthropic Messages API wire format (POST {base}/v1/messages, streamed). */
#ifndef AZ_ANTHROPIC_H
#define AZ_ANTHROPIC_H

#include "llm/provider.h"

/* The provider table entry llm.c dispatches to; static data. */
extern const az_llm_provider az_llm_anthropic;

#endif
