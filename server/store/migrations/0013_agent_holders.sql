-- An agent's live status counts processes, not tasks (server/agent/agent.c owns agent_holders).
-- Every task used to update its agent's row twice (running_tasks + 1, then - 1), each update
-- committed with a WAL flush while holding the row lock, so all tasks of one agent queued on
-- that one lock (docs/performance.md, the profile of issue 12). Now a process holds an agent
-- while it runs at least one of its tasks: one row here per (agent, worker), written when the
-- worker's own count leaves or reaches zero, and running_tasks counts these rows. The reaper
-- removes the hold of a worker whose leases expired (it died), so a dead worker does not leave
-- its agents BUSY.
CREATE TABLE agent_holders (
    workspace_id uuid NOT NULL,
    agent_id     uuid NOT NULL,
    -- The worker id, as in tasks.lease_owner.
    holder       text NOT NULL CHECK (length(holder) BETWEEN 1 AND 200),
    since        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, agent_id, holder),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON COLUMN agents.running_tasks IS
    'processes (agent_holders rows) running at least one task of the agent; BUSY while above 0';

-- Counts kept under the old meaning (tasks) cannot be turned into holders: start from zero.
-- An agent busy during the upgrade shows IDLE until its next task starts.
UPDATE agents SET running_tasks = 0, status = CASE WHEN status = 2 THEN 1 ELSE status END
 WHERE running_tasks <> 0 OR status = 2;

SELECT agentz_apply_rls();
