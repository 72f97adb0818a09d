/* The grpc-web wire format (application/grpc-web and grpc-web-text): decoding the request's
 * single message frame, encoding message and trailer frames, the grpc-message escaping. */
#ifndef AZ_GRPCWEB_H
#define AZ_GRPCWEB_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "upstream.h"

#define AZ_GRPCWEB_FLAG_TRAILER 0x80
#define AZ_GRPCWEB_FLAG_COMPRESSED 0x01

/* Extracts the one request message of a unary or server-streaming call from body (len bytes;
 * base64 when text, which may be several padded chunks back to back). On AZ_OK *msg (NULL
 * when the message is empty) and *msg_len are set; *msg is freed with free(). On error *msg is
 * NULL and errmsg says why: AZ_ERR_INVALID (no frame, a truncated frame, more than one
 * message, invalid base64, a trailer frame from the client), AZ_ERR_UNIMPLEMENTED (a
 * compressed frame: no grpc-encoding is accepted), AZ_ERR_NOMEM. */
az_err az_grpcweb_request(const uint8_t *body, size_t len, int text, uint8_t **msg,
                          size_t *msg_len, char *errmsg);

/* Encodes one frame (flags, then a 4-byte big-endian length, then data), base64 encoded when
 * text. On AZ_OK *out (*out_len bytes) is freed with free(); AZ_ERR_NOMEM otherwise. */
az_err az_grpcweb_frame(uint8_t flags, const uint8_t *data, size_t len, int text, uint8_t **out,
                        size_t *out_len);

/* Encodes the trailer frame: "grpc-status: N\r\ngrpc-message: <escaped>\r\n" and then every
 * md[i] as "key: value\r\n" (keys lowercase; -bin values base64; reserved and illegal ones
 * skipped), as az_grpcweb_frame with AZ_GRPCWEB_FLAG_TRAILER. */
az_err az_grpcweb_trailers(int status, const char *message, const az_upmd *md, size_t nmd,
                           int text, uint8_t **out, size_t *out_len);

/* Percent-encodes message for a grpc-message header or trailer (bytes outside 0x20..0x7e and
 * '%' become %XX, as the gRPC spec says). Writes at most out_size bytes including the NUL,
 * truncating at a character boundary; returns the length written. */
size_t az_grpcweb_escape(const char *message, char *out, size_t out_size);

#endif
