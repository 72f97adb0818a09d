-- Webhook deliveries (server/event/webhook.c owns the table): one row per URL of a task's or
-- run's terminal event, queued in the transaction that made it terminal and POSTed by the
-- delivery thread of an api process after commit, retried with backoff until delivered or
-- AZ_WEBHOOK_MAX_ATTEMPTS attempts failed.
CREATE TABLE webhook_deliveries (
    workspace_id     uuid NOT NULL REFERENCES workspaces (id),
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    -- The outbox row of the terminal event. No foreign key: event retention may prune the
    -- event while the delivery record stays.
    event_id         bigint NOT NULL,
    task_id          uuid,
    run_id           uuid,
    -- "task.succeeded", "run.failed", ...: the body's "type" and the X-Agentz-Event header.
    event_type       text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 64),
    url              text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Attempts started so far: counted when a delivery is claimed, so a process that dies
    -- mid-POST still uses one up and a delivery cannot loop forever.
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the next attempt is due. A claim moves it past the POST's timeout: that is the
    -- claim's lease, so no other process sends the delivery while one is sending it, and a
    -- crashed sender's delivery becomes due again when the lease runs out.
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_at       timestamptz,
    last_http_status integer,
    last_error       text,
    create_time      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at     timestamptz,
    PRIMARY KEY (workspace_id, id),
    CHECK (task_id IS NOT NULL OR run_id IS NOT NULL),
    -- The same event is never queued twice for one URL (a repeated URL, a replayed enqueue).
    UNIQUE (workspace_id, event_id, url)
);
-- The delivery thread's claim: due pending deliveries across workspaces, oldest due first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- Looking up the deliveries of a task or run.
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (workspace_id, task_id) WHERE task_id IS NOT NULL;
CREATE INDEX webhook_deliveries_run ON webhook_deliveries (workspace_id, run_id) WHERE run_id IS NOT NULL;
-- Pruning finished deliveries by age.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (create_time) WHERE status <> 'pending';

SELECT agentz_apply_rls();
