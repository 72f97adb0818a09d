-- agentz_event_append without its pg_notify. A notifying transaction takes PostgreSQL's
-- database-wide notification lock at commit and holds it until its commit record is flushed, so
-- every transaction that appended an event committed one after another: no group commit, and
-- a ceiling of one WAL flush per event-writing transaction. The notification now goes out right
-- after the COMMIT, in the same round trip, as a transaction of its own that writes nothing
-- else and needs no flush (az_pg_after_commit in server/store/pgpool.c, sent by
-- server/event/outbox.c). Same signature, same numbering and queueing as 0010.
CREATE OR REPLACE FUNCTION agentz_event_append(ws uuid, run uuid, task uuid, agent uuid,
                                               agents boolean, term boolean, body bytea)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    rs bigint;
    ts bigint;
    ag bigint;
    eid bigint;
BEGIN
    IF run IS NOT NULL THEN
        INSERT INTO event_seqs AS q (workspace_id, scope, scope_id, last_seq) VALUES (ws, 1, run, 1)
        ON CONFLICT (workspace_id, scope, scope_id) DO UPDATE SET last_seq = q.last_seq + 1
        RETURNING q.last_seq INTO rs;
    END IF;
    IF task IS NOT NULL THEN
        INSERT INTO event_seqs AS q (workspace_id, scope, scope_id, last_seq) VALUES (ws, 2, task, 1)
        ON CONFLICT (workspace_id, scope, scope_id) DO UPDATE SET last_seq = q.last_seq + 1
        RETURNING q.last_seq INTO ts;
    END IF;
    IF agents THEN
        INSERT INTO event_seqs AS q (workspace_id, scope, scope_id, last_seq) VALUES (ws, 3, ws, 1)
        ON CONFLICT (workspace_id, scope, scope_id) DO UPDATE SET last_seq = q.last_seq + 1
        RETURNING q.last_seq INTO ag;
    END IF;
    INSERT INTO events (workspace_id, run_id, task_id, agent_id, run_seq, task_seq, agents_seq,
                        terminal, payload)
    VALUES (ws, run, task, agent, rs, ts, ag, term, body)
    RETURNING id INTO eid;
    INSERT INTO event_queue (id) VALUES (eid);
    RETURN eid;
END
$$;
