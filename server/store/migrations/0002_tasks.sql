-- Tasks and their attempts (server/task/task.c owns both tables). PostgreSQL is the source of
-- truth for every task's state; the Redis stream only carries "this task is ready" hints.
CREATE TABLE tasks (
    workspace_id         uuid NOT NULL REFERENCES workspaces (id),
    id                   uuid NOT NULL,
    description          text NOT NULL,
    expected_output      text NOT NULL DEFAULT '',
    -- No foreign key: agents may be deleted while their finished tasks stay for history; the
    -- API checks the agent exists when the task is created.
    agent_id             uuid,
    workflow_id          uuid,
    run_id               uuid,
    step_id              text NOT NULL DEFAULT '',
    depends_on           uuid[] NOT NULL DEFAULT '{}',
    context              text[] NOT NULL DEFAULT '{}',
    output_schema        jsonb,
    -- The retry policy as given; NULL durations mean "unset" (defaults apply).
    retry_policy_set     boolean NOT NULL DEFAULT false,
    initial_backoff_us   bigint CHECK (initial_backoff_us >= 0),
    backoff_coefficient  double precision NOT NULL DEFAULT 0
                         CHECK (backoff_coefficient = 0 OR backoff_coefficient >= 1),
    maximum_backoff_us   bigint CHECK (maximum_backoff_us >= 0),
    max_attempts         integer NOT NULL DEFAULT 0 CHECK (max_attempts >= 0),
    non_retryable_errors text[] NOT NULL DEFAULT '{}',
    timeout_us           bigint NOT NULL DEFAULT 0 CHECK (timeout_us >= 0),
    -- agentz.v1.TaskStatus: 1 pending, 2 queued, 3 running, 4 backoff, 5 succeeded, 6 failed,
    -- 7 cancelled.
    status               smallint NOT NULL CHECK (status BETWEEN 1 AND 7),
    attempt              integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- attempt when RetryTask/ResumeRun last restarted the task: the retry policy counts the
    -- attempts after it, and its timeout runs from series_start_time.
    retry_base           integer NOT NULL DEFAULT 0 CHECK (retry_base >= 0),
    series_start_time    timestamptz,
    output_raw           text,
    output_json          jsonb,
    error_type           text,
    error_message        text,
    error_retryable      boolean,
    -- The task whose failure or cancellation cancelled this one (RetryTask of that task
    -- restores this one); NULL when cancelled directly.
    cause_id             uuid,
    prompt_tokens        bigint NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens    bigint NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    total_tokens         bigint NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    cost_usd             double precision NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    progress             double precision NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    webhook_urls         text[] NOT NULL DEFAULT '{}',
    labels               jsonb NOT NULL DEFAULT '{}',
    revision             bigint NOT NULL DEFAULT 1,
    create_time          timestamptz NOT NULL DEFAULT clock_timestamp(),
    start_time           timestamptz,
    end_time             timestamptz,
    next_attempt_time    timestamptz,
    queued_at            timestamptz,
    published_at         timestamptz,
    PRIMARY KEY (workspace_id, id),
    CHECK (status <> 4 OR next_attempt_time IS NOT NULL)
);
-- ListTasks: keyset pagination newest first, alone and with each filter.
CREATE INDEX tasks_page ON tasks (workspace_id, create_time DESC, id DESC);
CREATE INDEX tasks_by_status ON tasks (workspace_id, status, create_time DESC, id DESC);
CREATE INDEX tasks_by_agent ON tasks (workspace_id, agent_id, create_time DESC, id DESC)
    WHERE agent_id IS NOT NULL;
CREATE INDEX tasks_by_run ON tasks (workspace_id, run_id, create_time, id) WHERE run_id IS NOT NULL;
-- Finding the dependents of a task (depends_on @> ARRAY[id]).
CREATE INDEX tasks_depends_on ON tasks USING gin (depends_on);
-- Finding the tasks a failed or cancelled task took down with it.
CREATE INDEX tasks_cause ON tasks (workspace_id, cause_id) WHERE cause_id IS NOT NULL;
-- The reconciler: backoff tasks due to wake, queued tasks not published for a while.
CREATE INDEX tasks_wake ON tasks (status, next_attempt_time);
CREATE INDEX tasks_stale ON tasks (status, published_at);
-- GetTaskStats reads a time window of a workspace: covering, so a million tasks are an
-- index-only scan instead of heap fetches.
CREATE INDEX tasks_stats ON tasks (workspace_id, create_time)
    INCLUDE (status, agent_id, attempt, start_time, end_time, prompt_tokens, completion_tokens,
             total_tokens, cost_usd);
-- Per-step analytics of workflows.
CREATE INDEX tasks_by_step ON tasks (workspace_id, workflow_id, step_id, create_time)
    WHERE workflow_id IS NOT NULL;

CREATE TABLE task_attempts (
    workspace_id      uuid NOT NULL,
    task_id           uuid NOT NULL,
    attempt           integer NOT NULL CHECK (attempt >= 1),
    status            smallint NOT NULL CHECK (status IN (3, 5, 6, 7)),
    start_time        timestamptz NOT NULL DEFAULT clock_timestamp(),
    end_time          timestamptz,
    error_type        text,
    error_message     text,
    error_retryable   boolean,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    worker            text NOT NULL DEFAULT '',
    PRIMARY KEY (workspace_id, task_id, attempt),
    FOREIGN KEY (workspace_id, task_id) REFERENCES tasks (workspace_id, id) ON DELETE CASCADE,
    CHECK ((status = 3) = (end_time IS NULL))
);
