-- Agent long-term memory (server/agent/memory.c owns agent_memory) and the count of running tasks
-- behind an agent's live status (server/agent/agent.c).

-- How many tasks of the agent run now: status is BUSY while it is above 0. Kept by
-- az_agent_task_started / az_agent_task_ended, one UPDATE each.
ALTER TABLE agents ADD COLUMN running_tasks integer NOT NULL DEFAULT 0 CHECK (running_tasks >= 0);

CREATE TABLE agent_memory (
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    id           uuid NOT NULL,
    agent_id     uuid NOT NULL,
    task_id      uuid NOT NULL,
    run_id       uuid,
    -- "Task: <description>\nResult: <output>", at most AZ_MEMORY_SUMMARY_MAX bytes.
    summary      text NOT NULL,
    -- Keyword recall ranks these lexemes against the words of the new task ('simple': no
    -- stemming, no stop words, any language).
    keywords     tsvector GENERATED ALWAYS AS (to_tsvector('simple', summary)) STORED,
    -- The summary's embedding when an embeddings endpoint was configured and answered.
    embedding    real[],
    create_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id),
    -- An agent's memory goes with it.
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents (workspace_id, id) ON DELETE CASCADE
);
-- Recall, listing (newest first, keyset) and pruning all walk one agent's entries by recency.
CREATE INDEX agent_memory_recent ON agent_memory (workspace_id, agent_id, create_time DESC, id DESC);

SELECT agentz_apply_rls();
