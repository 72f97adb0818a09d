-- Workflows and their immutable versions, workflow runs, and workspace templates. Owned by the
-- workflow service (server/workflow/). No foreign key ties runs to workflows: deleting a workflow
-- deletes its versions, but its runs (and their tasks) stay readable.
CREATE TABLE workflows (
    workspace_id   uuid NOT NULL REFERENCES workspaces (id),
    id             uuid NOT NULL,
    name           text NOT NULL,
    description    text NOT NULL DEFAULT '',
    latest_version integer NOT NULL DEFAULT 1 CHECK (latest_version >= 1),
    labels         jsonb NOT NULL DEFAULT '{}',
    revision       bigint NOT NULL DEFAULT 1, -- the etag; +1 per update
    create_time    timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX workflows_name ON workflows (workspace_id, name);
-- ListWorkflows walks (create_time, id) newest first within a workspace.
CREATE INDEX workflows_page ON workflows (workspace_id, create_time, id);
CREATE INDEX workflows_labels ON workflows USING gin (labels jsonb_path_ops);

-- spec is the packed agentz.v1.Workflow of that version (output-only fields cleared); never
-- updated, so runs pinned to a version always see what they started with.
CREATE TABLE workflow_versions (
    workspace_id uuid NOT NULL,
    workflow_id  uuid NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    spec         bytea NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, workflow_id, version),
    FOREIGN KEY (workspace_id, workflow_id) REFERENCES workflows (workspace_id, id) ON DELETE CASCADE
);

-- One execution of one workflow version. step_ids (workflow order), output_steps (whose outputs
-- make the run's output), process and failure_policy are copied from the version at StartRun so
-- a run never needs its (possibly deleted) workflow to be read, synced, cancelled or resumed.
-- status is agentz.v1.RunStatus.
CREATE TABLE workflow_runs (
    workspace_id      uuid NOT NULL REFERENCES workspaces (id),
    id                uuid NOT NULL,
    workflow_id       uuid NOT NULL,
    workflow_version  integer NOT NULL,
    process           smallint NOT NULL,
    failure_policy    smallint NOT NULL,
    step_ids          text[] NOT NULL,
    output_steps      text[] NOT NULL,
    status            smallint NOT NULL DEFAULT 1 CHECK (status BETWEEN 1 AND 5),
    inputs            jsonb NOT NULL DEFAULT '{}',
    output_raw        text,
    error_type        text NOT NULL DEFAULT '',
    error_message     text NOT NULL DEFAULT '',
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    create_time       timestamptz NOT NULL DEFAULT clock_timestamp(),
    start_time        timestamptz,
    end_time          timestamptz,
    update_time       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id)
);
-- ListRuns newest first: all runs, by workflow, by status, by workflow and status. The
-- (workspace_id, workflow_id, create_time) prefix also serves GetWorkflowAnalytics' window and
-- DeleteWorkflow's check for unfinished runs.
CREATE INDEX workflow_runs_page ON workflow_runs (workspace_id, create_time DESC, id DESC);
CREATE INDEX workflow_runs_workflow ON workflow_runs (workspace_id, workflow_id, create_time DESC, id DESC);
CREATE INDEX workflow_runs_status ON workflow_runs (workspace_id, status, create_time DESC, id DESC);
CREATE INDEX workflow_runs_workflow_status
    ON workflow_runs (workspace_id, workflow_id, status, create_time DESC, id DESC);

-- Templates saved by a workspace (built-ins live in the binary). spec is a packed
-- agentz.v1.Template whose steps name agents by agent name.
CREATE TABLE templates (
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    id           uuid NOT NULL,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    spec         bytea NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX templates_name ON templates (workspace_id, name);
CREATE INDEX templates_page ON templates (workspace_id, create_time DESC, id DESC);
