-- The labels of agents as rows (server/agent/agent.c owns agent_labels), for the same reason as
-- task_deps (0015): agents is under row-level security, and jsonb containment (labels @>
-- '{"k":"v"}') is not leakproof, so the GIN index on labels could never serve a label selector:
-- ListAgents with one scanned the workspace's agents twice (the page and its total_size), 21 ms
-- at 25,000 agents (docs/performance.md, the third pass of issue 12). Equality on text is
-- leakproof: a selector is now a look-up of its "key=value" pairs in a B-tree. Keys cannot hold
-- '=' (az_text_label_key_ok), so a pair reads one way only. agents.labels stays the source of
-- truth; the trigger keeps these rows equal to it in the same transaction.
CREATE TABLE agent_labels (
    workspace_id uuid NOT NULL,
    pair         text NOT NULL,
    agent_id     uuid NOT NULL,
    PRIMARY KEY (workspace_id, pair, agent_id),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents (workspace_id, id) ON DELETE CASCADE
);
-- The foreign key's own index (the cascade, and replacing the labels of one agent).
CREATE INDEX agent_labels_agent ON agent_labels (workspace_id, agent_id);

CREATE OR REPLACE FUNCTION agentz_agent_labels_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM agent_labels WHERE workspace_id = OLD.workspace_id AND agent_id = OLD.id;
    END IF;
    INSERT INTO agent_labels (workspace_id, pair, agent_id)
    SELECT NEW.workspace_id, l.key || '=' || l.value, NEW.id FROM jsonb_each_text(NEW.labels) AS l;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_labels_insert AFTER INSERT ON agents
    FOR EACH ROW WHEN (NEW.labels <> '{}') EXECUTE FUNCTION agentz_agent_labels_sync();
CREATE TRIGGER agents_labels_update AFTER UPDATE OF labels ON agents
    FOR EACH ROW WHEN (OLD.labels IS DISTINCT FROM NEW.labels)
    EXECUTE FUNCTION agentz_agent_labels_sync();

-- The labels of the agents that exist already (migrations run with agentz.system = 'on').
INSERT INTO agent_labels (workspace_id, pair, agent_id)
SELECT a.workspace_id, l.key || '=' || l.value, a.id FROM agents a, jsonb_each_text(a.labels) AS l
 WHERE a.labels <> '{}';

-- Unusable under the policy, and every write of labels paid for its entries.
DROP INDEX IF EXISTS agents_labels;

SELECT agentz_apply_rls();
