/* grpc-web framing. The request side accepts exactly one message (the gateway proxies unary and
 * server-streaming methods only); the response side writes one frame per message and the
 * trailers as the last frame, so trailers survive HTTP/1.1 and browsers' fetch. */
#include "grpcweb.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int b64_digit(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Decodes base64 that may be several padded chunks back to back ("AAAA" "AA==" "AAAA"), as
 * grpc-web-text clients may send it. Returns the decoded length, or -1 on invalid input. */
static long long b64_chunks(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t o = 0, i = 0;
    while (i < len) {
        /* Whitespace may separate chunks. */
        if (in[i] == '\r' || in[i] == '\n' || in[i] == ' ') {
            i++;
            continue;
        }
        if (len - i < 4) return -1;
        uint8_t quad[4];
        memcpy(quad, in + i, 4);
        /* Padding only at the end of a group, never more than two: EVP_DecodeBlock alone
         * takes "A===" or "Y=M=" and makes bytes up. */
        if (!b64_digit(quad[0]) || !b64_digit(quad[1]) || (!b64_digit(quad[2]) && quad[2] != '=') ||
            (!b64_digit(quad[3]) && quad[3] != '=') || (quad[2] == '=' && quad[3] != '='))
            return -1;
        int n = EVP_DecodeBlock(out + o, quad, 4);
        if (n != 3) return -1;
        int pad = (quad[3] == '=') + (quad[2] == '=');
        o += (size_t)(3 - pad);
        i += 4;
    }
    return (long long)o;
}

az_err az_grpcweb_request(const uint8_t *body, size_t len, int text, uint8_t **msg,
                          size_t *msg_len, char *errmsg)
{
    *msg = NULL;
    *msg_len = 0;
    uint8_t *decoded = NULL;
    if (text) {
        decoded = malloc(len / 4 * 3 + 3);
        if (!decoded) return az_fail(errmsg, AZ_ERR_NOMEM, "out of memory");
        long long n = b64_chunks(body, len, decoded);
        if (n < 0) {
            free(decoded);
            return az_fail(errmsg, AZ_ERR_INVALID, "grpc-web-text body is not valid base64");
        }
        body = decoded;
        len = (size_t)n;
    }
    az_err err = AZ_OK;
    if (len < 5) {
        err = az_fail(errmsg, AZ_ERR_INVALID, "grpc-web body holds no message frame (%zu bytes)", len);
        goto done;
    }
    uint8_t flags = body[0];
    size_t flen = (size_t)body[1] << 24 | (size_t)body[2] << 16 | (size_t)body[3] << 8 | body[4];
    if (flags & AZ_GRPCWEB_FLAG_TRAILER) {
        err = az_fail(errmsg, AZ_ERR_INVALID, "grpc-web request starts with a trailer frame");
        goto done;
    }
    if (flags & AZ_GRPCWEB_FLAG_COMPRESSED) {
        err = az_fail(errmsg, AZ_ERR_UNIMPLEMENTED, "compressed grpc-web messages are not supported");
        goto done;
    }
    if (flen > len - 5) {
        err = az_fail(errmsg, AZ_ERR_INVALID, "grpc-web frame says %zu bytes but %zu follow", flen,
                      len - 5);
        goto done;
    }
    if (len - 5 - flen != 0) {
        err = az_fail(errmsg, AZ_ERR_INVALID,
                      "grpc-web request has data after its message (client streaming is not supported)");
        goto done;
    }
    if (flen) {
        if (!(*msg = malloc(flen))) {
            err = az_fail(errmsg, AZ_ERR_NOMEM, "out of memory");
            goto done;
        }
        memcpy(*msg, body + 5, flen);
    }
    *msg_len = flen;
done:
    free(decoded);
    return err;
}

az_err az_grpcweb_frame(uint8_t flags, const uint8_t *data, size_t len, int text, uint8_t **out,
                        size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (len > 0xffffffffu) return az_fail(NULL, AZ_ERR_INVALID, "frame too large");
    size_t raw = 5 + len;
    uint8_t *frame = malloc(raw);
    if (!frame) return AZ_ERR_NOMEM;
    frame[0] = flags;
    frame[1] = (uint8_t)(len >> 24);
    frame[2] = (uint8_t)(len >> 16);
    frame[3] = (uint8_t)(len >> 8);
    frame[4] = (uint8_t)len;
    if (len) memcpy(frame + 5, data, len);
    if (!text) {
        *out = frame;
        *out_len = raw;
        return AZ_OK;
    }
    uint8_t *enc = malloc((raw + 2) / 3 * 4 + 1);
    if (!enc) {
        free(frame);
        return AZ_ERR_NOMEM;
    }
    int n = EVP_EncodeBlock(enc, frame, (int)raw);
    free(frame);
    *out = enc;
    *out_len = (size_t)n;
    return AZ_OK;
}

size_t az_grpcweb_escape(const char *message, char *out, size_t out_size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (!out_size) return 0;
    for (const unsigned char *p = (const unsigned char *)(message ? message : ""); *p; p++) {
        int plain = *p >= 0x20 && *p <= 0x7e && *p != '%';
        size_t need = plain ? 1 : 3;
        if (o + need >= out_size) break;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return o;
}

/* Trailer keys the gateway writes itself or that only make sense per hop. */
static int reserved(const char *key)
{
    static const char *const names[] = {"grpc-status", "grpc-message", "content-type",
                                        "content-length", "transfer-encoding", "connection"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(key, names[i]) == 0) return 1;
    return 0;
}

/* gRPC metadata keys are [0-9a-z_.-]; anything else (a space, a colon, CR/LF) would forge
 * trailer lines. */
static int legal_key(const char *k)
{
    for (; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '_' || *k == '.' || *k == '-'))
            return 0;
    return 1;
}

az_err az_grpcweb_trailers(int status, const char *message, const az_upmd *md, size_t nmd,
                           int text, uint8_t **out, size_t *out_len)
{
    char esc[AZ_MSG_MAX * 3 + 1];
    az_grpcweb_escape(message, esc, sizeof esc);
    size_t cap = 64 + strlen(esc);
    for (size_t i = 0; i < nmd; i++) cap += strlen(md[i].key) + 4 + (md[i].value_len + 2) / 3 * 4 + 4;
    char *block = malloc(cap);
    if (!block) return AZ_ERR_NOMEM;
    size_t n = (size_t)snprintf(block, cap, "grpc-status: %d\r\n", status);
    if (*esc) n += (size_t)snprintf(block + n, cap - n, "grpc-message: %s\r\n", esc);
    for (size_t i = 0; i < nmd; i++) {
        const char *k = md[i].key;
        size_t kl = strlen(k);
        if (!kl || reserved(k) || !legal_key(k)) continue;
        int bin = kl > 4 && strcmp(k + kl - 4, "-bin") == 0;
        if (!bin) {
            int ok = 1;
            for (size_t j = 0; j < md[i].value_len && ok; j++)
                ok = (unsigned char)md[i].value[j] >= 0x20 && (unsigned char)md[i].value[j] < 0x7f;
            if (!ok) continue;
            n += (size_t)snprintf(block + n, cap - n, "%s: %.*s\r\n", k, (int)md[i].value_len,
                                  md[i].value);
        } else {
            n += (size_t)snprintf(block + n, cap - n, "%s: ", k);
            n += (size_t)EVP_EncodeBlock((unsigned char *)block + n,
                                         (const unsigned char *)md[i].value, (int)md[i].value_len);
            n += (size_t)snprintf(block + n, cap - n, "\r\n");
        }
    }
    az_err err = az_grpcweb_frame(AZ_GRPCWEB_FLAG_TRAILER, (const uint8_t *)block, n, text, out, out_len);
    free(block);
    return err;
}
