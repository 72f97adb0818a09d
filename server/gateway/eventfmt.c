/* Formats stream messages for SSE, NDJSON and WebSocket. Every format carries the message's
 * proto3 JSON (pbjson), so a browser sees the same fields as a REST response. */
#include "eventfmt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentz/v1/event.pb-c.h"
#include "core/pbjson.h"
#include "transcode.h"

static az_err wrap(const char *prefix, const char *json, const char *suffix, char **out,
                   size_t *out_len)
{
    size_t n = strlen(prefix) + strlen(json) + strlen(suffix);
    char *s = malloc(n + 1);
    if (!s) return AZ_ERR_NOMEM;
    snprintf(s, n + 1, "%s%s%s", prefix, json, suffix);
    *out = s;
    *out_len = n;
    return AZ_OK;
}

az_err az_eventfmt_message(az_eventfmt f, const ProtobufCMessageDescriptor *desc,
                           const uint8_t *data, size_t len, char **out, size_t *out_len,
                           int64_t *sequence, char *msg)
{
    *out = NULL;
    *out_len = 0;
    if (sequence) *sequence = 0;
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
    if (!m) return az_fail(msg, AZ_ERR_INTERNAL, "the server sent a message that is not a %s", desc->name);
    char *json = NULL;
    az_err err = AZ_OK;
    const Agentz__V1__Event *ev = desc == &agentz__v1__event__descriptor ? (const void *)m : NULL;
    if (ev && sequence) *sequence = ev->sequence;
    if (f == AZ_EVENTFMT_SSE && ev && ev->payload_case == AGENTZ__V1__EVENT__PAYLOAD_HEARTBEAT) {
        /* A comment keeps the connection warm without waking EventSource listeners. */
        char line[96];
        long long secs = ev->time ? (long long)ev->time->seconds : 0;
        snprintf(line, sizeof line, ": heartbeat %lld\n\n", secs);
        err = wrap(line, "", "", out, out_len);
        goto done;
    }
    if ((err = az_pbjson_encode(m, 0, &json, msg)) != AZ_OK) goto done;
    switch (f) {
    case AZ_EVENTFMT_SSE: {
        char id[48] = "";
        if (ev && ev->sequence > 0) snprintf(id, sizeof id, "id: %" PRId64 "\n", ev->sequence);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%sdata: ", id);
        err = wrap(prefix, json, "\n\n", out, out_len);
        break;
    }
    case AZ_EVENTFMT_NDJSON: err = wrap("{\"result\":", json, "}\n", out, out_len); break;
    case AZ_EVENTFMT_WS: err = wrap("", json, "", out, out_len); break;
    }
    if (err == AZ_ERR_NOMEM) az_fail(msg, err, "out of memory");
done:
    free(json);
    protobuf_c_message_free_unpacked(m, NULL);
    return err;
}

az_err az_eventfmt_end(az_eventfmt f, int status, const char *message, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (status == 0 && f != AZ_EVENTFMT_SSE) return AZ_OK;
    char *json = NULL;
    size_t jlen = 0;
    az_err err = az_transcode_status_json(status, message, &json, &jlen);
    if (err) return err;
    switch (f) {
    case AZ_EVENTFMT_SSE: err = wrap("event: end\ndata: ", json, "\n\n", out, out_len); break;
    case AZ_EVENTFMT_NDJSON: err = wrap("{\"error\":", json, "}\n", out, out_len); break;
    case AZ_EVENTFMT_WS: err = wrap("{\"error\":", json, "}", out, out_len); break;
    }
    free(json);
    return err;
}
