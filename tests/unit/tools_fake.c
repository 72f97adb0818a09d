/* A real HTTP/1.1 server on a thread, for testing http_fetch: listens on a given loopback address
 * and port 0, answers one connection at a time (Connection: close) from a route table. #included
 * by test_tools.c. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct fake {
    int fd;
    int port;
    char ip[INET_ADDRSTRLEN];
    pthread_t thread;
    int stop;                 /* atomic */
    int hits;                 /* atomic: requests read */
    char redirect_target[256]; /* Location of /away; set before use */
    char last_path[256];
    char last_ua[128];
} fake;

#define FAKE_HUGE (5 * 1024 * 1024)

static int fake_send(int c, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = send(c, s, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        s += w, n -= (size_t)w;
    }
    return 0;
}

static int fake_reply(int c, int status, const char *ctype, const char *extra, const char *body,
                      size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: "
                     "close\r\n\r\n",
                     status, ctype, len, extra ? extra : "");
    if (fake_send(c, head, (size_t)n) < 0) return -1;
    return fake_send(c, body, len);
}

static void route_html(fake *f, int c, const char *arg)
{
    static const char page[] =
        "<!DOCTYPE html>\n<html><head><title>Fish &amp; Chips</title>\n"
        "<style>body { color: red; }</style>\n"
        "<script type=\"text/javascript\">var x = \"<p>not text</p>\"; alert(1);</script>\n"
        "</head><body>\n<!-- a comment -->\n<h1>Menu</h1>\n"
        "<p>Cod &lt;fried&gt; &quot;fresh&quot; &#39;daily&#39;,&nbsp;only&#160;&#x20AC;5</p>\n"
        "<p>Caf&eacute;   and\n\n  tea <b>hot</b><i>ly</i></p>\n"
        "<a href=\"x\" title=\"a > b\">link</a><SCRIPT>hidden()</SCRIPT>\n"
        "</body></html>\n";
    fake_reply(c, 200, "text/html; charset=utf-8", NULL, page, sizeof page - 1);
}

static void route_json(fake *f, int c, const char *arg)
{
    static const char body[] = "{\"a\": 1, \"b\": [true, null], \"s\": \"<b>x</b>\"}";
    fake_reply(c, 200, "application/json", NULL, body, sizeof body - 1);
}

static void route_long(fake *f, int c, const char *arg)
{
    size_t n = 50000;
    char *body = malloc(n);
    if (!body) return;
    for (size_t i = 0; i < n; i++) body[i] = (char)('a' + i % 26);
    fake_reply(c, 200, "text/plain", NULL, body, n);
    free(body);
}

/* 5 MiB, streamed without Content-Length so only the reader's cap can stop it. */
static void route_huge(fake *f, int c, const char *arg)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
    if (fake_send(c, head, sizeof head - 1) < 0) return;
    char chunk[16384];
    memset(chunk, 'z', sizeof chunk);
    for (size_t sent = 0; sent < FAKE_HUGE; sent += sizeof chunk) {
        if (fake_send(c, chunk, sizeof chunk) < 0) return;
    }
}

/* The same size announced up front. */
static void route_huge_cl(fake *f, int c, const char *arg)
{
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                        "Content-Length: %d\r\nConnection: close\r\n\r\n", FAKE_HUGE);
    fake_send(c, head, (size_t)n);
}

/* /redir/N redirects to /redir/N-1; /redir/0 is the landing page. */
static void route_redir(fake *f, int c, const char *arg)
{
    int n = atoi(arg);
    if (n <= 0) {
        fake_reply(c, 200, "text/plain", NULL, "landed", 6);
        return;
    }
    char loc[64];
    snprintf(loc, sizeof loc, "Location: /redir/%d\r\n", n - 1);
    fake_reply(c, 302, "text/plain", loc, "", 0);
}

static void route_away(fake *f, int c, const char *arg)
{
    char loc[300];
    snprintf(loc, sizeof loc, "Location: %s\r\n", f->redirect_target);
    fake_reply(c, 302, "text/plain", loc, "", 0);
}

/* Never answers: waits until the client gives up (or the server stops). */
static void route_stall(fake *f, int c, const char *arg)
{
    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            char b[256];
            if (recv(c, b, sizeof b, 0) <= 0) return;
        }
    }
}

static void route_png(fake *f, int c, const char *arg)
{
    static const char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    fake_reply(c, 200, "image/png", NULL, png, sizeof png - 1);
}

static void route_latin1(fake *f, int c, const char *arg)
{
    fake_reply(c, 200, "text/plain; charset=ISO-8859-1", NULL, "caf\xe9", 4);
}

static void route_badutf8(fake *f, int c, const char *arg)
{
    static const char body[] = "ok\xff\xfe end\x01\x1b[0m";
    fake_reply(c, 200, "text/plain", NULL, body, sizeof body - 1);
}

static void route_ftp(fake *f, int c, const char *arg)
{
    fake_reply(c, 302, "text/plain", "Location: ftp://127.0.0.1/file\r\n", "", 0);
}

static void route_notfound_html(fake *f, int c, const char *arg)
{
    static const char page[] = "<html><title>Nope</title><p>missing</p></html>";
    fake_reply(c, 404, "text/html", NULL, page, sizeof page - 1);
}

static const struct fake_route {
    const char *prefix;
    void (*fn)(fake *f, int c, const char *arg);
} fake_routes[] = {
    {"/html", route_html},       {"/json", route_json},     {"/long", route_long},
    {"/huge-cl", route_huge_cl}, {"/huge", route_huge},     {"/redir/", route_redir},
    {"/away", route_away},       {"/stall", route_stall},   {"/png", route_png},
    {"/latin1", route_latin1},   {"/badutf8", route_badutf8}, {"/ftp", route_ftp},
    {"/missing", route_notfound_html},
};

static void fake_serve(fake *f, int c)
{
    char req[8192] = "";
    size_t len = 0;
    while (len < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0) return;
        ssize_t r = recv(c, req + len, sizeof req - 1 - len, 0);
        if (r <= 0) return;
        len += (size_t)r;
        req[len] = '\0';
    }
    char path[256] = "";
    if (sscanf(req, "GET %255s HTTP/1.", path) != 1) return;
    snprintf(f->last_path, sizeof f->last_path, "%s", path);
    const char *ua = strcasestr(req, "\r\nUser-Agent: ");
    if (ua) {
        ua += 14;
        size_t n = strcspn(ua, "\r\n");
        snprintf(f->last_ua, sizeof f->last_ua, "%.*s", (int)(n < 127 ? n : 127), ua);
    }
    __atomic_add_fetch(&f->hits, 1, __ATOMIC_ACQ_REL);
    for (size_t i = 0; i < sizeof fake_routes / sizeof *fake_routes; i++) {
        size_t pl = strlen(fake_routes[i].prefix);
        if (strncmp(path, fake_routes[i].prefix, pl) == 0) {
            fake_routes[i].fn(f, c, path + pl);
            return;
        }
    }
    fake_reply(c, 404, "text/plain", NULL, "not found", 9);
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p = {.fd = f->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept(f->fd, NULL, NULL);
        if (c < 0) continue;
        fake_serve(f, c);
        close(c);
    }
    return NULL;
}

/* Starts a server on ip:0; f->port receives the port. 0 on success. */
static int fake_start(fake *f, const char *ip)
{
    memset(f, 0, sizeof *f);
    snprintf(f->ip, sizeof f->ip, "%s", ip);
    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->fd < 0) return -1;
    int one = 1;
    setsockopt(f->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1 || bind(f->fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(f->fd, 16) < 0 || getsockname(f->fd, (struct sockaddr *)&a, &alen) < 0) {
        close(f->fd);
        return -1;
    }
    f->port = ntohs(a.sin_port);
    if (pthread_create(&f->thread, NULL, fake_main, f) != 0) {
        close(f->fd);
        return -1;
    }
    return 0;
}

static void fake_stop(fake *f)
{
    __atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
    pthread_join(f->thread, NULL);
    close(f->fd);
}

static int fake_hits(fake *f)
{
    return __atomic_load_n(&f->hits, __ATOMIC_ACQUIRE);
}
