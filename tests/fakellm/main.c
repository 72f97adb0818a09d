/* agentz-fakellm: the scripted fake LLM provider as a standalone server, for trying agents and
 * benchmarks by hand: every request gets the same text answer after the given delays. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakellm.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agentz-fakellm [--port N] [--delay-ms N] [--chunk-delay-ms N] [--chunk-size N]\n"
            "                      [--text TEXT]\n"
            "Serves OpenAI /v1/chat/completions and Anthropic /v1/messages on 127.0.0.1 until\n"
            "SIGTERM or SIGINT; every request is answered with TEXT (default \"ok\"), streamed in\n"
            "chunks of N characters when the request asks for a stream.\n");
}

/* A non-negative int option value; exits with a message naming the option otherwise. */
static int int_arg(const char *opt, const char *v)
{
    char *end;
    errno = 0;
    long n = v ? strtol(v, &end, 10) : -1;
    if (!v || errno || end == v || *end || n < 0 || n > 1000000000L) {
        fprintf(stderr, "agentz-fakellm: %s needs a non-negative integer, got %s\n", opt,
                v ? v : "nothing");
        exit(2);
    }
    return (int)n;
}

int main(int argc, char **argv)
{
    int port = 0;
    fakellm_reply r = {.kind = FAKELLM_TEXT};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--port") == 0) {
            port = int_arg(a, v);
            if (port > 65535) {
                fprintf(stderr, "agentz-fakellm: --port must be at most 65535\n");
                return 2;
            }
        } else if (strcmp(a, "--delay-ms") == 0) {
            r.delay_ms = int_arg(a, v);
        } else if (strcmp(a, "--chunk-delay-ms") == 0) {
            r.chunk_delay_ms = int_arg(a, v);
        } else if (strcmp(a, "--chunk-size") == 0) {
            r.chunk_size = int_arg(a, v);
        } else if (strcmp(a, "--text") == 0) {
            if (!v) {
                fprintf(stderr, "agentz-fakellm: --text needs a value\n");
                return 2;
            }
            r.text = v;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "agentz-fakellm: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    /* Block the signals before the server thread starts so that only sigwait sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    fakellm *f = fakellm_start_on(port);
    if (!f) return 1;
    fakellm_on(f, NULL, NULL, &r, 1);
    printf("fakellm listening on %s\n", fakellm_base_url(f));
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "agentz-fakellm: %s: stopping after %zu requests\n", strsignal(sig),
            fakellm_count(f, NULL));
    fakellm_stop(f);
    return 0;
}
