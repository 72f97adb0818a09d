/* Fuzzes the proto3 JSON decoder (server/core/pbjson) with arbitrary bytes as the messages users
 * hand the CLI with -f and the API layers decode: every input is decoded as each type of the
 * table, and whatever decodes must survive an encode/decode round trip unchanged. */
#include <string.h>

#include "agentz/v1/agent.pb-c.h"
#include "agentz/v1/task.pb-c.h"
#include "agentz/v1/workflow.pb-c.h"
#include "core/err.h"
#include "core/pbjson.h"
#include "fuzz.h"

/* The types JSON reaches the code as: -f files of the CLI and the requests built from them. */
static const ProtobufCMessageDescriptor *const types[] = {
    &agentz__v1__workflow__descriptor,
    &agentz__v1__create_agent_request__descriptor,
    &agentz__v1__agent__descriptor,
    &agentz__v1__task__descriptor,
    &agentz__v1__template__descriptor,
    &agentz__v1__start_run_request__descriptor,
};

/* Encoding a decoded message and decoding that again must give the same encoding. */
static void round_trip(const ProtobufCMessage *m, int flags)
{
    char msg[AZ_MSG_MAX], *first = NULL, *second = NULL;
    ProtobufCMessage *again = NULL;
    az_err err = az_pbjson_encode(m, flags, &first, msg);
    if (err == AZ_ERR_NOMEM) return;
    AZ_FUZZ_CHECK(err == AZ_OK, "%s: a decoded message does not encode: %s",
                  m->descriptor->name, msg);
    err = az_pbjson_decode(m->descriptor, first, strlen(first), NULL, &again, msg);
    AZ_FUZZ_CHECK(err == AZ_OK, "%s: its own encoding does not decode: %s\nencoding: %s",
                  m->descriptor->name, msg, first);
    err = az_pbjson_encode(again, flags, &second, msg);
    AZ_FUZZ_CHECK(err == AZ_OK, "%s: re-encoding failed: %s", m->descriptor->name, msg);
    AZ_FUZZ_CHECK(strcmp(first, second) == 0, "%s: round trip changed the message\n%s\n%s",
                  m->descriptor->name, first, second);
    free(first);
    free(second);
    protobuf_c_message_free_unpacked(again, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char msg[AZ_MSG_MAX];
        ProtobufCMessage *m = NULL;
        if (az_pbjson_decode(types[i], (const char *)data, size, NULL, &m, msg) != AZ_OK) {
            AZ_FUZZ_CHECK(m == NULL, "%s: failed decode left a message", types[i]->name);
            continue;
        }
        round_trip(m, 0);
        round_trip(m, AZ_PBJSON_EMIT_DEFAULTS | AZ_PBJSON_PROTO_NAMES);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
