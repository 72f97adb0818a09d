/* Shared by the fuzz targets: the libFuzzer entry point they define, and the check that turns a
 * broken invariant into a crash the fuzzer records (sanitizers catch memory errors themselves). */
#ifndef AZ_FUZZ_H
#define AZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs one input; always returns 0 (libFuzzer's contract). Defined once per target. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with what broke: a round trip that does not hold is a bug even when no sanitizer
 * fires. */
#define AZ_FUZZ_CHECK(cond, ...)                                                                   \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
