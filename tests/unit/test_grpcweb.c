/* CUnit suite for server/gateway/grpcweb: decoding the one request message of a grpc-web call
 * (binary and grpc-web-text: base64 chunks with padding in the middle, whitespace, empty,
 * truncated and oversized frames, two messages, a client trailer frame, the compressed flag,
 * invalid base64), the frame layout byte by byte, the trailer frame (grpc-status, escaped
 * grpc-message, metadata, -bin values, reserved and illegal entries skipped) and the
 * grpc-message percent-escaping with its truncation rule. */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/grpcweb.h"

/* ---- helpers ---- */

/* Standard padded base64 (RFC 4648 section 4), written here so the text mode is checked
 * against an encoder that is not the module's. out holds 4 * ceil(n / 3) + 1 bytes. */
static size_t b64(const uint8_t *in, size_t n, char *out)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = A[v >> 18 & 63];
        out[o++] = A[v >> 12 & 63];
        out[o++] = i + 1 < n ? A[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? A[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static az_err req(const void *body, size_t len, int text, uint8_t **msg, size_t *msg_len,
                  char *errmsg)
{
    *msg = (uint8_t *)1;
    *msg_len = 12345;
    errmsg[0] = '\0';
    return az_grpcweb_request(body, len, text, msg, msg_len, errmsg);
}

/* Expects body to decode to want (want_len bytes). */
static void check_req(const void *body, size_t len, int text, const void *want, size_t want_len)
{
    uint8_t *msg;
    size_t n;
    char err[AZ_MSG_MAX];
    az_err e = req(body, len, text, &msg, &n, err);
    if (e) fprintf(stderr, "\n  request failed: %s\n", err);
    CU_ASSERT_EQUAL(e, AZ_OK);
    CU_ASSERT_EQUAL(n, want_len);
    if (want_len) {
        CU_ASSERT_PTR_NOT_NULL(msg);
        if (msg && n == want_len) CU_ASSERT(memcmp(msg, want, want_len) == 0);
    } else {
        CU_ASSERT_PTR_NULL(msg);
    }
    if (msg != (uint8_t *)1) free(msg);
}

/* Expects body to be refused with want, *msg NULL and a message set. */
static void check_req_err(const void *body, size_t len, int text, az_err want)
{
    uint8_t *msg;
    size_t n;
    char err[AZ_MSG_MAX];
    az_err e = req(body, len, text, &msg, &n, err);
    if (e != want)
        fprintf(stderr, "\n  body [%.*s]: want err %d, got %d (%s)\n", text ? (int)len : 0,
                text ? (const char *)body : "", (int)want, (int)e, err);
    CU_ASSERT_EQUAL(e, want);
    CU_ASSERT_PTR_NULL(msg);
    CU_ASSERT(err[0] != '\0');
    if (msg && msg != (uint8_t *)1) free(msg);
}

static void check_req_str(const char *body, int text, const void *want, size_t want_len)
{
    check_req(body, strlen(body), text, want, want_len);
}

static void check_req_str_err(const char *body, int text, az_err want)
{
    check_req_err(body, strlen(body), text, want);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Builds the binary trailer frame and returns its header block (NUL-terminated, malloc'ed),
 * after checking the frame's flag and length and that the text form is its base64. */
static char *trailer_block(int status, const char *message, const az_upmd *md, size_t nmd)
{
    uint8_t *out = NULL, *tout = NULL;
    size_t len = 0, tlen = 0;
    CU_ASSERT_EQUAL_FATAL(az_grpcweb_trailers(status, message, md, nmd, 0, &out, &len), AZ_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_FATAL(len >= 5);
    CU_ASSERT_EQUAL(out[0], AZ_GRPCWEB_FLAG_TRAILER);
    CU_ASSERT_EQUAL(be32(out + 1), len - 5);
    char *block = malloc(len - 5 + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(block);
    memcpy(block, out + 5, len - 5);
    block[len - 5] = '\0';
    CU_ASSERT_EQUAL(strlen(block), len - 5); /* no NUL inside */

    CU_ASSERT_EQUAL_FATAL(az_grpcweb_trailers(status, message, md, nmd, 1, &tout, &tlen), AZ_OK);
    char *want = malloc((len + 2) / 3 * 4 + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    size_t wl = b64(out, len, want);
    CU_ASSERT_EQUAL(tlen, wl);
    if (tout && tlen == wl) CU_ASSERT(memcmp(tout, want, wl) == 0);
    free(want);
    free(tout);
    free(out);
    return block;
}

static void check_block(const char *got, const char *want)
{
    if (strcmp(got, want) != 0) fprintf(stderr, "\n  got: [%s]\n want: [%s]\n", got, want);
    CU_ASSERT_STRING_EQUAL(got, want);
}

/* Every line of a trailer block is "key: value\r\n" with a legal lowercase gRPC key and a
 * printable value. */
static void check_block_lines(const char *block)
{
    const char *p = block;
    while (*p) {
        const char *eol = strstr(p, "\r\n");
        CU_ASSERT_PTR_NOT_NULL(eol);
        if (!eol) break;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon) fprintf(stderr, "\n  no key in line [%.*s]\n", (int)(eol - p), p);
        CU_ASSERT_PTR_NOT_NULL(colon);
        if (!colon) {
            p = eol + 2;
            continue;
        }
        CU_ASSERT(colon > p);
        for (const char *k = p; k < colon; k++) {
            int legal = (*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '-' ||
                        *k == '_' || *k == '.';
            if (!legal) fprintf(stderr, "\n  illegal key in line [%.*s]\n", (int)(eol - p), p);
            CU_ASSERT(legal);
            if (!legal) break;
        }
        CU_ASSERT_EQUAL(colon[1], ' ');
        for (const char *v = colon + 1; v < eol; v++) CU_ASSERT(*v >= 0x20 && *v < 0x7f);
        p = eol + 2;
    }
}

/* ---- requests: binary ---- */

static void test_request_binary(void)
{
    const uint8_t one[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
    check_req(one, sizeof one, 0, "abc", 3);
    /* a message holding zero bytes and 0x80 */
    const uint8_t bin[] = {0, 0, 0, 0, 4, 0x00, 0x80, 0xff, 0x0a};
    check_req(bin, sizeof bin, 0, "\x00\x80\xff\x0a", 4);
    /* the empty message: AZ_OK, *msg NULL, length 0 */
    const uint8_t empty[] = {0, 0, 0, 0, 0};
    check_req(empty, sizeof empty, 0, NULL, 0);
}

static void test_request_big_endian_length(void)
{
    /* 0x00010203 bytes: every length byte counts, big-endian */
    size_t n = 0x00010203;
    uint8_t *body = malloc(5 + n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    body[0] = 0;
    body[1] = 0x00;
    body[2] = 0x01;
    body[3] = 0x02;
    body[4] = 0x03;
    for (size_t i = 0; i < n; i++) body[5 + i] = (uint8_t)(i * 7 + 1);
    check_req(body, 5 + n, 0, body + 5, n);
    /* the same body one byte short is a truncated frame */
    check_req_err(body, 5 + n - 1, 0, AZ_ERR_INVALID);
    free(body);
}

static void test_request_binary_errors(void)
{
    /* no frame at all */
    check_req_err("", 0, 0, AZ_ERR_INVALID);
    const uint8_t four[] = {0, 0, 0, 0};
    check_req_err(four, sizeof four, 0, AZ_ERR_INVALID);
    /* truncated: says 5, has 2 */
    const uint8_t trunc[] = {0, 0, 0, 0, 5, 'a', 'b'};
    check_req_err(trunc, sizeof trunc, 0, AZ_ERR_INVALID);
    /* a length far past the end (no overflow in the check) */
    const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff, 'a'};
    check_req_err(huge, sizeof huge, 0, AZ_ERR_INVALID);
    const uint8_t huge2[] = {0, 0xff, 0xff, 0xff, 0xfb};
    check_req_err(huge2, sizeof huge2, 0, AZ_ERR_INVALID);
    /* two messages (client streaming) */
    const uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
    check_req_err(two, sizeof two, 0, AZ_ERR_INVALID);
    /* trailing bytes that are not even a frame */
    const uint8_t extra[] = {0, 0, 0, 0, 1, 'a', 'z'};
    check_req_err(extra, sizeof extra, 0, AZ_ERR_INVALID);
    /* a message followed by a trailer frame */
    const uint8_t msg_trailer[] = {0, 0, 0, 0, 1, 'a', 0x80, 0, 0, 0, 0};
    check_req_err(msg_trailer, sizeof msg_trailer, 0, AZ_ERR_INVALID);
    /* a trailer frame from the client */
    const uint8_t trailer[] = {0x80, 0, 0, 0, 0};
    check_req_err(trailer, sizeof trailer, 0, AZ_ERR_INVALID);
    const uint8_t trailer2[] = {0x80, 0, 0, 0, 3, 'a', ':', 'b'};
    check_req_err(trailer2, sizeof trailer2, 0, AZ_ERR_INVALID);
    /* compressed: no grpc-encoding is accepted */
    const uint8_t comp[] = {0x01, 0, 0, 0, 3, 'a', 'b', 'c'};
    check_req_err(comp, sizeof comp, 0, AZ_ERR_UNIMPLEMENTED);
    const uint8_t comp_empty[] = {0x01, 0, 0, 0, 0};
    check_req_err(comp_empty, sizeof comp_empty, 0, AZ_ERR_UNIMPLEMENTED);
}

/* ---- requests: grpc-web-text ---- */

static void test_request_text(void)
{
    /* base64 of 00 00000003 "abc" */
    check_req_str("AAAAAANhYmM=", 1, "abc", 3);
    /* the same frame as three padded chunks back to back */
    check_req_str("AAAAAA==A2E=YmM=", 1, "abc", 3);
    /* two chunks: the 5-byte prefix, then the message */
    check_req_str("AAAAAAM=YWJj", 1, "abc", 3);
    /* whitespace between quads and at the ends */
    check_req_str("AAAA\r\nAANh YmM=\n", 1, "abc", 3);
    check_req_str("\n AAAAAA==\r\n A2E=\n\nYmM=\r\n", 1, "abc", 3);
    /* the empty message */
    check_req_str("AAAAAAA=", 1, NULL, 0);
    /* the text flag really decodes: read as binary, the same bytes start with 'A' (0x41), a
     * frame with the compressed bit */
    check_req_str_err("AAAAAANhYmM=", 0, AZ_ERR_UNIMPLEMENTED);
}

static void test_request_text_round_trip(void)
{
    /* every message length mod 3, and a large one, through az_grpcweb_frame's text form */
    size_t lens[] = {1, 2, 3, 4, 5, 100, 4099};
    for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
        uint8_t *data = malloc(lens[k]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(data);
        for (size_t i = 0; i < lens[k]; i++) data[i] = (uint8_t)(i * 31 + k);
        uint8_t *t = NULL;
        size_t tl = 0;
        CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(0, data, lens[k], 1, &t, &tl), AZ_OK);
        check_req(t, tl, 1, data, lens[k]);
        free(t);
        free(data);
    }
}

static void test_request_text_errors(void)
{
    check_req_str_err("", 1, AZ_ERR_INVALID);            /* no frame */
    check_req_str_err("  \r\n", 1, AZ_ERR_INVALID);      /* only whitespace */
    check_req_str_err("AAAAAANhYmM", 1, AZ_ERR_INVALID); /* not a whole quad */
    check_req_str_err("AAAA*ANhYmM=", 1, AZ_ERR_INVALID); /* outside the alphabet */
    check_req_str_err("AAAAAANh-mM=", 1, AZ_ERR_INVALID); /* base64url is not base64 */
    check_req_str_err("AAAAAANhY=M=", 1, AZ_ERR_INVALID); /* padding before data */
    check_req_str_err("AAAAAANh=mM=", 1, AZ_ERR_INVALID);
    check_req_str_err("AAAAAAE=A===", 1, AZ_ERR_INVALID); /* one base64 digit: 6 bits */
    check_req_str_err("AAAAAAE=====", 1, AZ_ERR_INVALID); /* a quad of padding */
    check_req_str_err("AAAAAANhYmM=A", 1, AZ_ERR_INVALID); /* a stray character after */
    /* valid base64 of invalid frames */
    check_req_str_err("AAAAAAVhYg==", 1, AZ_ERR_INVALID);             /* truncated */
    check_req_str_err("AAAAAANhYmMAAAAAA2FiYw==", 1, AZ_ERR_INVALID); /* two messages */
    check_req_str_err("gAAAAAA=", 1, AZ_ERR_INVALID);                 /* a trailer frame */
    check_req_str_err("AQAAAANhYmM=", 1, AZ_ERR_UNIMPLEMENTED);       /* compressed */
    check_req_str_err("AAAA", 1, AZ_ERR_INVALID);                     /* 3 bytes: no frame */
}

/* ---- frames ---- */

static void test_frame_binary(void)
{
    uint8_t *out = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(0x00, (const uint8_t *)"abc", 3, 0, &out, &n), AZ_OK);
    const uint8_t want[] = {0x00, 0x00, 0x00, 0x00, 0x03, 'a', 'b', 'c'};
    CU_ASSERT_EQUAL(n, sizeof want);
    if (n == sizeof want) CU_ASSERT(memcmp(out, want, n) == 0);
    free(out);

    /* the flag byte is written as given; the length is big-endian */
    uint8_t data[258];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(255 - i);
    CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(AZ_GRPCWEB_FLAG_TRAILER, data, sizeof data, 0, &out, &n),
                          AZ_OK);
    CU_ASSERT_EQUAL(n, 5 + sizeof data);
    CU_ASSERT_EQUAL(out[0], 0x80);
    CU_ASSERT_EQUAL(out[1], 0x00);
    CU_ASSERT_EQUAL(out[2], 0x00);
    CU_ASSERT_EQUAL(out[3], 0x01);
    CU_ASSERT_EQUAL(out[4], 0x02);
    CU_ASSERT(memcmp(out + 5, data, sizeof data) == 0);
    free(out);

    /* a 0x01020304-byte length uses all four bytes */
    size_t big = 0x01020304;
    uint8_t *bd = calloc(1, big);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bd);
    bd[big - 1] = 0x5a;
    CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(0, bd, big, 0, &out, &n), AZ_OK);
    CU_ASSERT_EQUAL(n, 5 + big);
    CU_ASSERT_EQUAL(out[1], 0x01);
    CU_ASSERT_EQUAL(out[2], 0x02);
    CU_ASSERT_EQUAL(out[3], 0x03);
    CU_ASSERT_EQUAL(out[4], 0x04);
    CU_ASSERT_EQUAL(out[5 + big - 1], 0x5a);
    free(out);
    free(bd);

    /* an empty frame */
    CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(0, NULL, 0, 0, &out, &n), AZ_OK);
    const uint8_t zero[] = {0, 0, 0, 0, 0};
    CU_ASSERT_EQUAL(n, 5);
    if (n == 5) CU_ASSERT(memcmp(out, zero, 5) == 0);
    free(out);
}

static void test_frame_text(void)
{
    uint8_t *out = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(0, (const uint8_t *)"abc", 3, 1, &out, &n), AZ_OK);
    CU_ASSERT_EQUAL(n, 12);
    if (n == 12) CU_ASSERT(memcmp(out, "AAAAAANhYmM=", 12) == 0);
    free(out);

    CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(0x80, NULL, 0, 1, &out, &n), AZ_OK);
    CU_ASSERT_EQUAL(n, 8);
    if (n == 8) CU_ASSERT(memcmp(out, "gAAAAAA=", 8) == 0);
    free(out);

    /* text = base64 of the binary frame, for every length mod 3 */
    for (size_t len = 0; len < 40; len++) {
        uint8_t data[40], *bin = NULL, *txt = NULL;
        size_t bl = 0, tl = 0;
        for (size_t i = 0; i < len; i++) data[i] = (uint8_t)(i * 37 + len);
        CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(0x00, data, len, 0, &bin, &bl), AZ_OK);
        CU_ASSERT_EQUAL_FATAL(az_grpcweb_frame(0x00, data, len, 1, &txt, &tl), AZ_OK);
        char want[80];
        size_t wl = b64(bin, bl, want);
        CU_ASSERT_EQUAL(tl, wl);
        if (tl == wl) CU_ASSERT(memcmp(txt, want, wl) == 0);
        free(bin);
        free(txt);
    }
}

/* ---- trailers ---- */

static void test_trailers_status_message(void)
{
    char *b = trailer_block(5, "agent \"x\" not found: 100%\n", NULL, 0);
    check_block(b, "grpc-status: 5\r\ngrpc-message: agent \"x\" not found: 100%25%0A\r\n");
    free(b);

    b = trailer_block(13, "caf\xc3\xa9\tdone", NULL, 0);
    check_block(b, "grpc-status: 13\r\ngrpc-message: caf%C3%A9%09done\r\n");
    free(b);

    /* OK with no message: the status line, and at most an empty grpc-message */
    b = trailer_block(0, "", NULL, 0);
    CU_ASSERT(strcmp(b, "grpc-status: 0\r\n") == 0 ||
              strcmp(b, "grpc-status: 0\r\ngrpc-message: \r\n") == 0);
    free(b);

    b = trailer_block(16, "no\r\ninjected: 1", NULL, 0);
    check_block(b, "grpc-status: 16\r\ngrpc-message: no%0D%0Ainjected: 1\r\n");
    check_block_lines(b);
    free(b);
}

static void test_trailers_metadata(void)
{
    const az_upmd md[] = {
        {"x-request-id", "req-1", 5},
        {"trace-bin", "\x00\x01\xff", 3},            /* base64 */
        {"grpc-status", "99", 2},                    /* reserved: the real one is written */
        {"grpc-message", "fake", 4},
        {"content-type", "text/html", 9},
        {"content-length", "5", 1},
        {"transfer-encoding", "chunked", 7},
        {"connection", "close", 5},
        {"x-bad-value", "a\nb", 3},                  /* not printable: skipped */
        {"x-ctl", "\x01", 1},
        {"x-utf8", "caf\xc3\xa9", 5},
        {"x-len", "abcdef", 3},                      /* value_len bytes only */
        {"multi-bin", "\xde\xad\xbe\xef\x00\x10", 6},
        {"x-empty", "", 0},
        {"retry-after", "7", 1},
    };
    char *b = trailer_block(8, "slow down", md, sizeof md / sizeof *md);
    check_block(b, "grpc-status: 8\r\n"
                   "grpc-message: slow down\r\n"
                   "x-request-id: req-1\r\n"
                   "trace-bin: AAH/\r\n"
                   "x-len: abc\r\n"
                   "multi-bin: 3q2+7wAQ\r\n"
                   "x-empty: \r\n"
                   "retry-after: 7\r\n");
    check_block_lines(b);
    free(b);

    /* a -bin value may hold anything, including what would be refused as text */
    const az_upmd bin[] = {{"x-raw-bin", "a\r\nb", 4}};
    b = trailer_block(0, "", bin, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(b, "x-raw-bin: YQ0KYg==\r\n"));
    check_block_lines(b);
    free(b);
}

static void test_trailers_illegal_keys(void)
{
    /* keys gRPC would not accept never reach the block, and cannot add lines of their own */
    const az_upmd md[] = {
        {"x-ok", "1", 1},
        {"bad key", "v", 1},
        {"x\r\ninjected", "v", 1},
        {"a:b", "v", 1},
        {"", "v", 1},
        {"X-Upper", "v", 1},
        {"x-ok2", "2", 1},
    };
    char *b = trailer_block(0, "", md, sizeof md / sizeof *md);
    CU_ASSERT_PTR_NOT_NULL(strstr(b, "x-ok: 1\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b, "x-ok2: 2\r\n"));
    CU_ASSERT_PTR_NULL(strstr(b, "bad key"));
    CU_ASSERT_PTR_NULL(strstr(b, "injected"));
    CU_ASSERT_PTR_NULL(strstr(b, "a:b"));
    CU_ASSERT_PTR_NULL(strstr(b, "X-Upper")); /* keys are lowercase in the block */
    const char *up = strstr(b, "x-upper");
    if (up) CU_ASSERT(strncmp(up, "x-upper: v\r\n", 12) == 0);
    if (strstr(b, "injected") || strstr(b, "bad key") || strstr(b, "X-Upper"))
        fprintf(stderr, "\n  trailer block: [%s]\n", b);
    check_block_lines(b);
    free(b);
}

/* ---- escaping ---- */

static void check_esc(const char *in, size_t size, const char *want)
{
    char out[256];
    memset(out, '#', sizeof out);
    size_t n = az_grpcweb_escape(in, out, size);
    if (strcmp(out, want) != 0) fprintf(stderr, "\n  escape got [%s] want [%s]\n", out, want);
    CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_EQUAL(n, strlen(want));
    CU_ASSERT(n < size);
    CU_ASSERT_EQUAL(out[size], '#'); /* nothing past out_size */
}

static void test_escape(void)
{
    check_esc("plain text: OK ~!", 128, "plain text: OK ~!");
    check_esc("", 128, "");
    check_esc("100%", 128, "100%25");
    check_esc("%%", 128, "%25%25");
    check_esc("a\nb\tc\rd", 128, "a%0Ab%09c%0Dd");
    check_esc("\x01\x1f \x7e\x7f\x80\xff", 128, "%01%1F ~%7F%80%FF");
    check_esc("caf\xc3\xa9", 128, "caf%C3%A9");
    /* every printable byte but '%' is kept */
    char all[96], want[128];
    size_t k = 0, w = 0;
    for (int ch = 0x20; ch <= 0x7e; ch++) {
        all[k++] = (char)ch;
        if (ch == '%') w += (size_t)sprintf(want + w, "%%25");
        else want[w++] = (char)ch;
    }
    all[k] = '\0';
    want[w] = '\0';
    check_esc(all, 200, want);
}

static void test_escape_truncation(void)
{
    /* out_size counts the NUL */
    check_esc("abcdef", 4, "abc");
    check_esc("abcdef", 7, "abcdef");
    check_esc("abcdef", 6, "abcde");
    /* an escape is never split: it fits whole or not at all */
    check_esc("ab%cd", 6, "ab%25");
    check_esc("ab%cd", 5, "ab");
    check_esc("ab%cd", 4, "ab");
    check_esc("ab\ncd", 3, "ab");
    check_esc("\n\n", 7, "%0A%0A");
    check_esc("\n\n", 6, "%0A");
    check_esc("\n\n", 4, "%0A");
    check_esc("\n\n", 3, "");
    check_esc("x", 1, "");
    /* out_size 0 writes nothing */
    char out[4] = "###";
    CU_ASSERT_EQUAL(az_grpcweb_escape("abc", out, 0), 0);
    CU_ASSERT_EQUAL(out[0], '#');
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("grpcweb", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "binary request", test_request_binary);
    CU_add_test(s, "big-endian length", test_request_big_endian_length);
    CU_add_test(s, "binary request errors", test_request_binary_errors);
    CU_add_test(s, "text request", test_request_text);
    CU_add_test(s, "text round trip", test_request_text_round_trip);
    CU_add_test(s, "text request errors", test_request_text_errors);
    CU_add_test(s, "binary frame layout", test_frame_binary);
    CU_add_test(s, "text frame", test_frame_text);
    CU_add_test(s, "trailers: status and message", test_trailers_status_message);
    CU_add_test(s, "trailers: metadata", test_trailers_metadata);
    CU_add_test(s, "trailers: illegal keys", test_trailers_illegal_keys);
    CU_add_test(s, "escape", test_escape);
    CU_add_test(s, "escape truncation", test_escape_truncation);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
