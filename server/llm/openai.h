/* The OpenAI chat-completions wire format (POST {base}/chat/completions, streamed), spoken by
 * OpenAI, Ollama, vLLM, llama.cpp server, LM Studio, OpenRouter and Groq. */
#ifndef AZ_OPENAI_H
#define AZ_OPENAI_H

#include "llm/provider.h"

/* The provider table entry llm.c dispatches to; static data. */
extern const az_llm_provider az_llm_openai;

#endif
