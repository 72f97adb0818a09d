/* Fuzzes the CLI's YAML reader (client/yamljson) with arbitrary bytes: untyped and guided by the
 * Workflow message (what `workflows create -f` reads), then the pbjson decode the CLI runs next,
 * and the emitter: whatever parses must emit YAML that parses back to the same value. */
#include <string.h>

#include "agentz/v1/workflow.pb-c.h"
#include "core/pbjson.h"
#include "fuzz.h"
#include "yamljson.h"

/* Emitting v and parsing the text again must give v back. */
static void round_trip(const json_t *v)
{
    char msg[AZ_MSG_MAX], *text = NULL;
    az_err err = az_yaml_emit(v, &text, msg);
    if (err == AZ_ERR_NOMEM) return;
    AZ_FUZZ_CHECK(err == AZ_OK, "a parsed value does not emit: %s", msg);
    json_t *again = NULL;
    err = az_yaml_parse(text, strlen(text), "emitted.yaml", NULL, &again, msg);
    AZ_FUZZ_CHECK(err == AZ_OK, "emitted YAML does not parse: %s\n%s", msg, text);
    AZ_FUZZ_CHECK(json_equal(v, again), "round trip changed the value\n%s", text);
    json_decref(again);
    free(text);
}

/* What `workflows create -f` does after parsing: JSON text to a Workflow message. */
static void decode_workflow(const json_t *v)
{
    char *json = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!json) return;
    char msg[AZ_MSG_MAX];
    ProtobufCMessage *m = NULL;
    if (az_pbjson_decode(&agentz__v1__workflow__descriptor, json, strlen(json), NULL, &m, msg) ==
        AZ_OK)
        protobuf_c_message_free_unpacked(m, NULL);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[AZ_MSG_MAX];
    json_t *v = NULL;
    /* Aliases can expand a few bytes to AZ_YAML_MAX_VALUES values; emitting and re-parsing
     * those would make every alias input slow without testing anything new (the emitter never
     * writes aliases), so only alias-free documents make the round trip. */
    int aliases = memchr(data, '*', size) != NULL;
    if (az_yaml_parse((const char *)data, size, "fuzz.yaml", NULL, &v, msg) == AZ_OK) {
        if (!aliases) round_trip(v);
        json_decref(v);
    } else {
        AZ_FUZZ_CHECK(v == NULL, "a failed parse left a value");
    }
    v = NULL;
    if (az_yaml_parse((const char *)data, size, "fuzz.yaml", &agentz__v1__workflow__descriptor,
                      &v, msg) == AZ_OK) {
        if (!aliases) {
            round_trip(v);
            decode_workflow(v);
        }
        json_decref(v);
    }
    return 0;
}
