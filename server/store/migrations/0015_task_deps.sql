-- The dependency edges of tasks as rows (server/task/task.c owns task_deps). Finding the
-- dependents of a finished task used `depends_on @> ARRAY[id]` through a GIN index, but tasks is
-- under row-level security and the array containment operator is not leakproof, so PostgreSQL
-- may not evaluate it before the workspace policy: the index was never used and every completion
-- scanned every task of the workspace (1.2 ms per task at 3,000 tasks, growing with the table;
-- docs/performance.md, the third pass of issue 12). Equality on uuid is leakproof, so a B-tree
-- on (workspace_id, dep_id) serves the same lookup under the policy.
-- tasks.depends_on stays the source of truth (the API returns it, in order); this table is kept
-- equal to it by the trigger below, in the same transaction as the write of the task.
CREATE TABLE task_deps (
    workspace_id uuid NOT NULL,
    -- The task depended on ...
    dep_id       uuid NOT NULL,
    -- ... and the task that waits for it.
    task_id      uuid NOT NULL,
    PRIMARY KEY (workspace_id, dep_id, task_id),
    FOREIGN KEY (workspace_id, task_id) REFERENCES tasks (workspace_id, id) ON DELETE CASCADE
);
-- The foreign key's own index (the cascade, and replacing the edges of one task).
CREATE INDEX task_deps_task ON task_deps (workspace_id, task_id);

CREATE OR REPLACE FUNCTION agentz_task_deps_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM task_deps WHERE workspace_id = OLD.workspace_id AND task_id = OLD.id;
    END IF;
    -- DISTINCT: a list naming one task twice is one edge.
    INSERT INTO task_deps (workspace_id, dep_id, task_id)
    SELECT DISTINCT NEW.workspace_id, d, NEW.id FROM unnest(NEW.depends_on) AS d;
    RETURN NULL;
END
$$;

-- Most tasks have no dependencies: the WHEN clauses keep the trigger from even being called.
CREATE TRIGGER tasks_deps_insert AFTER INSERT ON tasks
    FOR EACH ROW WHEN (NEW.depends_on <> '{}') EXECUTE FUNCTION agentz_task_deps_sync();
CREATE TRIGGER tasks_deps_update AFTER UPDATE OF depends_on ON tasks
    FOR EACH ROW WHEN (OLD.depends_on IS DISTINCT FROM NEW.depends_on)
    EXECUTE FUNCTION agentz_task_deps_sync();

-- The edges of the tasks that exist already (migrations run with agentz.system = 'on').
INSERT INTO task_deps (workspace_id, dep_id, task_id)
SELECT DISTINCT t.workspace_id, d, t.id FROM tasks t, unnest(t.depends_on) AS d
 WHERE t.depends_on <> '{}';

-- Nothing reads depends_on through an index any more, and every update of a task with
-- dependencies paid for an entry in it.
DROP INDEX IF EXISTS tasks_depends_on;

SELECT agentz_apply_rls();
