-- The transactional outbox (server/event/outbox.c owns events, event_seqs and event_queue).
-- Every state change of a task, run or agent inserts its event in the same transaction as the
-- change; the relay (server/event/relay.c) publishes committed events to Redis.

-- One row per stored event, written once and never updated (so it stays small and cheap to
-- insert). payload is a packed agentz.v1.Event without sequence and time: the sequence depends
-- on the scope a watcher reads (run_seq, task_seq or agents_seq) and the time is create_time.
-- No foreign keys: the log outlives nothing it describes and must not slow the transitions.
CREATE TABLE events (
    id           bigserial PRIMARY KEY,   -- global order of insertion
    workspace_id uuid NOT NULL,
    run_id       uuid,
    task_id      uuid,
    agent_id     uuid,
    -- The event's number in each scope it belongs to (NULL when it does not belong to it).
    run_seq      bigint,
    task_seq     bigint,
    agents_seq   bigint,
    -- A task or run reached succeeded, failed or cancelled: retention prunes a run (or a
    -- standalone task) whole, once its newest event is terminal and old enough.
    terminal     boolean NOT NULL DEFAULT false,
    payload      bytea NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (run_seq IS NULL OR run_id IS NOT NULL),
    CHECK (task_seq IS NULL OR task_id IS NOT NULL)
);
-- Replay of one scope after a sequence (WatchRun, WatchTask, WatchAgents). UNIQUE: a second
-- event with one number would be a bug in the numbering, better refused than streamed.
CREATE UNIQUE INDEX events_run ON events (workspace_id, run_id, run_seq) WHERE run_seq IS NOT NULL;
CREATE UNIQUE INDEX events_task ON events (workspace_id, task_id, task_seq) WHERE task_seq IS NOT NULL;
CREATE UNIQUE INDEX events_agents ON events (workspace_id, agents_seq) WHERE agents_seq IS NOT NULL;
-- Retention: terminal events by age, and agent events (no run, no task) by age.
CREATE INDEX events_terminal ON events (create_time) WHERE terminal;
CREATE INDEX events_agents_age ON events (create_time) WHERE run_id IS NULL AND task_id IS NULL;

-- The last number given out per scope (1 run, 2 task, 3 agents of the workspace: scope_id is
-- then the workspace id). The append upserts the row and holds its lock until commit, so within
-- a scope commit order is sequence order and a rolled-back append leaves no gap. Rows are kept
-- after their events are pruned: a resumed run continues its numbering instead of restarting.
CREATE TABLE event_seqs (
    workspace_id uuid NOT NULL,
    scope        smallint NOT NULL CHECK (scope BETWEEN 1 AND 3),
    scope_id     uuid NOT NULL,
    last_seq     bigint NOT NULL CHECK (last_seq > 0),
    PRIMARY KEY (workspace_id, scope, scope_id)
);

-- Events not yet published to Redis: inserted with the event, deleted by the relay once
-- published. A separate table instead of a published_at column on events: an UPDATE of events
-- would rewrite every index entry of the row (a column in a partial-index predicate disables
-- HOT updates), this costs one small insert and one delete. Holds only ids (no tenant data).
CREATE TABLE event_queue (
    id bigint PRIMARY KEY
);

SELECT agentz_apply_rls();
