/* The scripted HTTP/1.1 provider stand-in of llm_fake.h: real sockets, so libcurl, timeouts
 * and chunk boundaries behave as they do against a real provider. */
#include "llm_fake.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int listen_on(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 16) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int fake_closed_port(void)
{
    int port = 0, fd = listen_on(&port);
    if (fd >= 0) close(fd);
    return port;
}

/* Waits until fd is readable or f->stop; 1 readable, 0 stopped. */
static int wait_readable(llm_fake *f, int fd)
{
    while (!f->stop) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 50);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return 0;
    }
    return 0;
}

/* Reads one request (headers, then Content-Length bytes of body); 0 on success. */
static int read_request(llm_fake *f, int fd, fake_request *rq)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    char *hdr_end = NULL;
    size_t want = 0;
    for (;;) {
        if (hdr_end) {
            size_t have = len - (size_t)(hdr_end + 4 - buf);
            if (have >= want) break;
        }
        if (!wait_readable(f, fd)) goto fail;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0) goto fail;
        len += (size_t)n;
        buf[len] = '\0';
        if (!hdr_end && (hdr_end = strstr(buf, "\r\n\r\n"))) {
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            want = cl && cl < hdr_end ? strtoul(cl + 17, NULL, 10) : 0;
        }
    }
    char *line_end = strstr(buf, "\r\n");
    *line_end = '\0';
    sscanf(buf, "%15s %255s", rq->method, rq->path);
    rq->headers = strndup(line_end + 2, (size_t)(hdr_end + 2 - (line_end + 2)));
    rq->body_len = want;
    rq->body = malloc(want + 1);
    memcpy(rq->body, hdr_end + 4, want);
    rq->body[want] = '\0';
    free(buf);
    return 0;
fail:
    free(buf);
    return -1;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Holds the connection until the client goes away or the test ends. */
static void hold(llm_fake *f, int fd)
{
    char b[256];
    while (wait_readable(f, fd))
        if (read(fd, b, sizeof b) <= 0) return;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    default: return "Status";
    }
}

static void respond(llm_fake *f, int fd, const fake_response *r)
{
    if (r->status == 0) {
        hold(f, fd);
        return;
    }
    char head[1024];
    snprintf(head, sizeof head,
             "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nConnection: close\r\n%s\r\n", r->status,
             reason(r->status), r->status == 200 ? "text/event-stream" : "application/json",
             r->headers ? r->headers : "");
    if (write_all(fd, head, strlen(head))) return;
    const char *body = r->body ? r->body : "";
    size_t len = r->body_len ? r->body_len : strlen(body);
    size_t limit = r->stall_after > 0 && (size_t)r->stall_after < len ? (size_t)r->stall_after : len;
    size_t off = 0;
    for (unsigned i = 0; off < limit; i++) {
        /* Varying sizes put boundaries everywhere: inside "data:", CRLF, UTF-8 sequences. */
        size_t n = r->write_size ? 1 + (i * 7u) % r->write_size : limit - off;
        if (n > limit - off) n = limit - off;
        if (write_all(fd, body + off, n)) return;
        off += n;
        if (r->write_delay_us) usleep((useconds_t)r->write_delay_us);
        if (f->stop) return;
    }
    if (limit < len) hold(f, fd);
}

static void *serve(void *arg)
{
    llm_fake *f = arg;
    while (wait_readable(f, f->listen_fd)) {
        int fd = accept(f->listen_fd, NULL, NULL);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fake_request rq = {0};
        if (read_request(f, fd, &rq) == 0) {
            fake_response r = {.status = 500, .body = "{\"error\":{\"message\":\"no script\"}}"};
            pthread_mutex_lock(&f->mu);
            if (f->next < f->n_script) r = f->script[f->next++];
            if (f->n_reqs < FAKE_MAX) f->reqs[f->n_reqs++] = rq;
            else free(rq.headers), free(rq.body);
            pthread_mutex_unlock(&f->mu);
            respond(f, fd, &r);
        }
        close(fd);
    }
    return NULL;
}

int fake_start(llm_fake *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->listen_fd = listen_on(&f->port);
    if (f->listen_fd < 0) return -1;
    snprintf(f->base_url, sizeof f->base_url, "http://127.0.0.1:%d", f->port);
    return pthread_create(&f->thread, NULL, serve, f);
}

void fake_script(llm_fake *f, const fake_response *r)
{
    pthread_mutex_lock(&f->mu);
    if (f->n_script < FAKE_MAX) f->script[f->n_script++] = *r;
    pthread_mutex_unlock(&f->mu);
}

void fake_stop(llm_fake *f)
{
    f->stop = 1;
    pthread_join(f->thread, NULL);
    close(f->listen_fd);
    for (size_t i = 0; i < f->n_reqs; i++) {
        free(f->reqs[i].headers);
        free(f->reqs[i].body);
    }
    pthread_mutex_destroy(&f->mu);
}

const char *fake_header(const fake_request *r, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *l = r->headers; l && *l;) {
        const char *e = strstr(l, "\r\n");
        if (!e) break;
        if ((size_t)(e - l) > nl && strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            const char *v = l + nl + 1;
            while (*v == ' ') v++;
            snprintf(out, n, "%.*s", (int)(e - v), v);
            return out;
        }
        l = e + 2;
    }
    return NULL;
}
