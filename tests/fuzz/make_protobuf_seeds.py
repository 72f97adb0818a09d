#!/usr/bin/python3
"""Writes the binary seeds of fuzz_protobuf (tests/fuzz/corpus/fuzz_protobuf/*.pb) from the
committed descriptor set gen/agentz.desc, so they follow the protos. Run with Debian's python3
(python3-protobuf) after changing a request message: /usr/bin/python3 tests/fuzz/make_protobuf_seeds.py
"""
import os

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus", "fuzz_protobuf")
AGENT = "3b1f1a52-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

# (file name, message type, proto3 JSON): valid requests and ones the validators must refuse.
SEEDS = [
    ("create_agent", "agentz.v1.CreateAgentRequest",
     {"agent": {"name": "writer", "role": "Writer of {topic}", "goal": "Write", "backstory": "B",
                "llm": {"provider": "openai", "model": "gpt-4o", "temperature": 0.5},
                "tools": ["calculator"], "labels": {"team": "x"}, "maxIter": 25,
                "maxExecutionTime": "90s"}, "requestId": "r-1"}),
    ("create_agent_invalid", "agentz.v1.CreateAgentRequest",
     {"agent": {"role": "", "tools": ["rm_rf"], "maxIter": 101,
                "llm": {"temperature": 2.5}, "maxExecutionTime": "-1s"}}),
    ("update_agent_mask", "agentz.v1.UpdateAgentRequest",
     {"agent": {"id": AGENT, "goal": "new", "llm": {"model": "m"}},
      "updateMask": "goal,llm.model,id,noSuchField,*"}),
    ("list_agents", "agentz.v1.ListAgentsRequest",
     {"pageSize": 2, "pageToken": "eyJ0IjoxfQ", "labelSelector": "a=b,c=,=d,e"}),
    ("create_task", "agentz.v1.CreateTaskRequest",
     {"task": {"agentId": AGENT, "description": "Summarize {x}", "expectedOutput": "A summary",
               "outputSchema": {"type": "object", "n": [1, {"k": None}]}, "dependsOn": ["t0"],
               "retryPolicy": {"maxAttempts": 3, "initialBackoff": "1s",
                               "backoffCoefficient": 0.5, "maximumBackoff": "0.5s"},
               "timeout": "3600s"}}),
    ("create_workflow", "agentz.v1.CreateWorkflowRequest",
     {"workflow": {"name": "wf", "process": "PROCESS_SEQUENTIAL",
                   "inputs": [{"name": "topic", "required": True}],
                   "steps": [{"id": "a", "agentId": AGENT, "description": "Do {topic}"},
                             {"id": "b", "agentId": AGENT, "description": "Then {nope}",
                              "dependsOn": ["a", "b", "c"], "contextFrom": ["a"]}],
                   "webhookUrls": ["http://[::1", "https://example.com/h"]}}),
    ("create_workflow_cycle", "agentz.v1.CreateWorkflowRequest",
     {"workflow": {"name": "cycle", "steps": [
         {"id": "a", "agentId": AGENT, "description": "x", "dependsOn": ["b"]},
         {"id": "b", "agentId": AGENT, "description": "y", "dependsOn": ["a"]}]}}),
    ("update_workflow", "agentz.v1.UpdateWorkflowRequest",
     {"workflow": {"id": "w", "name": "n", "steps": []}, "updateMask": "steps,name,bogus"}),
    ("start_run", "agentz.v1.StartRunRequest",
     {"workflowId": "w", "inputs": {"topic": "AI", "extra": "x"}, "requestId": "r"}),
    ("start_run_missing", "agentz.v1.StartRunRequest", {"workflowId": "w", "inputs": {"style": "long"}}),
    ("list_runs_token", "agentz.v1.ListRunsRequest", {"pageSize": 1000, "pageToken": "!!not base64!!"}),
    ("health_check", "grpc.health.v1.HealthCheckRequest", {"service": "agentz.v1.AgentService"}),
    ("reflection_list", "grpc.reflection.v1.ServerReflectionRequest", {"listServices": "*"}),
    ("reflection_symbol", "grpc.reflection.v1.ServerReflectionRequest",
     {"fileContainingSymbol": "agentz.v1.AgentService.CreateAgent"}),
    ("reflection_file", "grpc.reflection.v1.ServerReflectionRequest",
     {"fileByFilename": "agentz/v1/workflow.proto"}),
    ("reflection_extension", "grpc.reflection.v1.ServerReflectionRequest",
     {"fileContainingExtension": {"containingType": "google.protobuf.MethodOptions",
                                  "extensionNumber": 72295728}}),
    ("reflection_all_extensions", "grpc.reflection.v1.ServerReflectionRequest",
     {"allExtensionNumbersOfType": "google.protobuf.MethodOptions"}),
    ("reflection_unknown", "grpc.reflection.v1.ServerReflectionRequest",
     {"fileContainingSymbol": ".."}),
]

# Hand-made wire bytes: truncated varints, lengths past the end, wrong wire types, groups.
RAW = [
    ("truncated_varint", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
    ("length_past_end", b"\x0a\x7f\x0a\x02ab"),
    ("wrong_wire_type", b"\x0d\x00\x00\x00\x00\x12\x00"),
    ("group", b"\x0b\x10\x01\x0c"),
    ("huge_length", b"\x0a\xff\xff\xff\xff\x0f"),
    ("field_zero", b"\x00\x00"),
    ("empty", b""),
]


def main():
    fds = descriptor_pb2.FileDescriptorSet()
    with open(os.path.join(ROOT, "gen", "agentz.desc"), "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    os.makedirs(OUT, exist_ok=True)
    for name, type_name, value in SEEDS:
        cls = message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName(type_name))
        msg = json_format.ParseDict(value, cls())
        with open(os.path.join(OUT, name + ".pb"), "wb") as f:
            f.write(msg.SerializeToString())
    for name, data in RAW:
        with open(os.path.join(OUT, name + ".pb"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
