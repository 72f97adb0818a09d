-- Workspaces and agents. Every resource row carries workspace_id; one default workspace until
-- authentication and tenancy arrive.
CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
INSERT INTO workspaces (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'default');

CREATE TABLE agents (
    workspace_id          uuid NOT NULL REFERENCES workspaces (id),
    id                    uuid NOT NULL DEFAULT gen_random_uuid(),
    name                  text NOT NULL DEFAULT '',
    role                  text NOT NULL,
    goal                  text NOT NULL,
    backstory             text NOT NULL,
    llm_provider          text NOT NULL DEFAULT '',
    llm_model             text NOT NULL DEFAULT '',
    llm_base_url          text NOT NULL DEFAULT '',
    llm_api_key_secret    text NOT NULL DEFAULT '',
    llm_temperature       double precision,
    llm_max_tokens        integer NOT NULL DEFAULT 0 CHECK (llm_max_tokens >= 0),
    llm_timeout_us        bigint NOT NULL DEFAULT 0 CHECK (llm_timeout_us >= 0),
    tools                 text[] NOT NULL DEFAULT '{}',
    allow_delegation      boolean NOT NULL DEFAULT false,
    max_iter              integer NOT NULL DEFAULT 25 CHECK (max_iter BETWEEN 1 AND 100),
    max_rpm               integer NOT NULL DEFAULT 0 CHECK (max_rpm >= 0),
    max_execution_time_us bigint NOT NULL DEFAULT 0 CHECK (max_execution_time_us >= 0),
    memory                boolean NOT NULL DEFAULT false,
    disabled              boolean NOT NULL DEFAULT false,
    status                smallint NOT NULL DEFAULT 1,
    labels                jsonb NOT NULL DEFAULT '{}',
    revision              bigint NOT NULL DEFAULT 1,
    create_time           timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time           timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id)
);
-- Keyset pagination walks (create_time, id) within a workspace.
CREATE INDEX agents_page ON agents (workspace_id, create_time, id);
CREATE INDEX agents_labels ON agents USING gin (labels jsonb_path_ops);

-- Idempotency keys for Create* calls (AIP-155): the same request_id returns the same resource.
CREATE TABLE idempotency_keys (
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    method       text NOT NULL,
    request_id   text NOT NULL,
    request_hash text NOT NULL,
    resource_id  uuid NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, method, request_id)
);
CREATE UNIQUE INDEX agents_name ON agents (workspace_id, name) WHERE name <> '';
