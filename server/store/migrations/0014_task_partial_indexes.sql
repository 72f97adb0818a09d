-- Indexes of tasks that only the rows in one state need are partial (server/task/task.c owns
-- tasks). None of the updates of tasks is heap-only (its volatile columns are indexed), so
-- every transition used to insert an entry into each of these three for every task, whatever
-- its state; a partial index gets an entry only for a row version inside its predicate
-- (docs/performance.md, the profile of issue 12).
-- The reconciler's wake-up of tasks whose backoff ended (az_task_wake, per workspace).
DROP INDEX IF EXISTS tasks_wake;
CREATE INDEX tasks_wake ON tasks (workspace_id, next_attempt_time) WHERE status = 4;
-- Re-publication of tasks queued too long ago (az_task_stale_queued: NULLS FIRST, per
-- workspace), the queue-depth gauge, and the reconciler's active workspaces.
DROP INDEX IF EXISTS tasks_stale;
CREATE INDEX tasks_stale ON tasks (workspace_id, published_at NULLS FIRST) WHERE status = 2;
-- Dependents of a task (the queries say depends_on <> '{}' so that this index can serve them):
-- most tasks have none, and a GIN entry per update of each was the dearest of the three.
DROP INDEX IF EXISTS tasks_depends_on;
CREATE INDEX tasks_depends_on ON tasks USING gin (depends_on) WHERE depends_on <> '{}';
