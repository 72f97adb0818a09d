-- The outbox append as one function (server/event/outbox.c calls it; outbox.c owns it): its
-- statements keep their plans for the session, where the same work as one ad-hoc statement is
-- parsed and planned on every call. Run as the caller (SECURITY INVOKER): row-level security
-- applies as for any statement of the caller.
--
-- Numbers the event in each scope it belongs to (run, task, agents of the workspace; always in
-- that order, so two appenders lock shared counters in the same order), inserts it, queues it
-- for the relay and notifies the relay at commit. The counter rows stay locked until the
-- transaction ends, and the event's id is drawn after them: within a scope, sequence order, id
-- order and commit order agree. Returns the event's id. The channel is AZ_OUTBOX_NOTIFY
-- (server/event/outbox.h).
CREATE FUNCTION agentz_event_append(ws uuid, run uuid, task uuid, agent uuid, agents boolean,
                                    term boolean, body bytea) RETURNS bigint
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
    PERFORM pg_notify('agentz_events', '');
    RETURN eid;
END
$$;
