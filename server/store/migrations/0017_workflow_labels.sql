-- The labels of workflows as rows (server/workflow/workflow.c owns workflow_labels), as
-- agent_labels (0016) for agents: under row-level security jsonb containment cannot use the GIN
-- index on workflows.labels, so ListWorkflows with a label selector walked every workflow of the
-- workspace newest first until it had a page (docs/performance.md, the third pass of issue 12).
CREATE TABLE workflow_labels (
    workspace_id uuid NOT NULL,
    pair         text NOT NULL,
    workflow_id  uuid NOT NULL,
    PRIMARY KEY (workspace_id, pair, workflow_id),
    FOREIGN KEY (workspace_id, workflow_id) REFERENCES workflows (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX workflow_labels_workflow ON workflow_labels (workspace_id, workflow_id);

CREATE OR REPLACE FUNCTION agentz_workflow_labels_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM workflow_labels WHERE workspace_id = OLD.workspace_id AND workflow_id = OLD.id;
    END IF;
    INSERT INTO workflow_labels (workspace_id, pair, workflow_id)
    SELECT NEW.workspace_id, l.key || '=' || l.value, NEW.id FROM jsonb_each_text(NEW.labels) AS l;
    RETURN NULL;
END
$$;

CREATE TRIGGER workflows_labels_insert AFTER INSERT ON workflows
    FOR EACH ROW WHEN (NEW.labels <> '{}') EXECUTE FUNCTION agentz_workflow_labels_sync();
CREATE TRIGGER workflows_labels_update AFTER UPDATE OF labels ON workflows
    FOR EACH ROW WHEN (OLD.labels IS DISTINCT FROM NEW.labels)
    EXECUTE FUNCTION agentz_workflow_labels_sync();

INSERT INTO workflow_labels (workspace_id, pair, workflow_id)
SELECT w.workspace_id, l.key || '=' || l.value, w.id FROM workflows w, jsonb_each_text(w.labels) AS l
 WHERE w.labels <> '{}';

DROP INDEX IF EXISTS workflows_labels;

SELECT agentz_apply_rls();
