-- Task leases (server/task/task.c): a running task is held by one worker until
-- lease_expires_at; the worker's heartbeat extends it, and the reconciler reaps tasks whose lease
-- expired (their worker died) so they run again elsewhere. Both columns are meaningful only
-- while status = 3 (running); claim sets them, reaping and hand-back clear them.
ALTER TABLE tasks
    ADD COLUMN lease_owner      text,
    ADD COLUMN lease_expires_at timestamptz;

-- The reaper: running tasks by lease expiry, across workspaces.
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE status = 3;
-- A worker's heartbeat and its in-flight check: the running tasks it holds.
CREATE INDEX tasks_lease_owner ON tasks (lease_owner, id) WHERE status = 3;

-- Tasks running before this migration (none should be: there were no workers) expire at once.
UPDATE tasks SET lease_expires_at = clock_timestamp() WHERE status = 3;
