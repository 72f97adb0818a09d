/* A scripted HTTP/1.1 server on 127.0.0.1 standing in for an LLM provider in tests: it records
 * each request (method, path, headers, body) and replays canned responses, optionally in tiny
 * delayed writes or stalling mid-body. One connection at a time, Connection: close. */
#ifndef LLM_FAKE_H
#define LLM_FAKE_H

#include <pthread.h>
#include <stddef.h>

#define FAKE_MAX 8

typedef struct fake_response {
    int status;           /* HTTP status; 0 = send nothing at all and hold the connection */
    const char *headers;  /* extra header lines, each ending in "\r\n"; may be NULL */
    const char *body;     /* may be NULL */
    size_t body_len;      /* 0 = strlen(body) */
    size_t write_size;    /* max bytes per write (sizes vary below it); 0 = one write */
    int write_delay_us;   /* pause between writes */
    long stall_after;     /* > 0: after this many body bytes, hold the connection open */
} fake_response;

typedef struct fake_request {
    char method[16];
    char path[256];
    char *headers; /* raw header block, lines "Name: value\r\n" */
    char *body;
    size_t body_len;
} fake_request;

typedef struct llm_fake {
    int listen_fd;
    int port;
    char base_url[64]; /* http://127.0.0.1:PORT */
    pthread_t thread;
    volatile int stop;
    pthread_mutex_t mu;
    fake_response script[FAKE_MAX];
    size_t n_script, next;
    fake_request reqs[FAKE_MAX];
    size_t n_reqs;
} llm_fake;

/* Starts the server thread on an ephemeral port; 0 on success. */
int fake_start(llm_fake *f);
/* Queues the response for the next connection (copied; strings borrowed). */
void fake_script(llm_fake *f, const fake_response *r);
/* Stops the thread, closes sockets, frees recorded requests. */
void fake_stop(llm_fake *f);
/* The value of header name in r (case-insensitive) copied into out, or NULL when absent. */
const char *fake_header(const fake_request *r, const char *name, char *out, size_t n);
/* A port on 127.0.0.1 nothing listens on. */
int fake_closed_port(void);

#endif
