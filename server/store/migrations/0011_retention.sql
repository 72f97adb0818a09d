-- Data retention (server/retention/retention.c runs it from the reconciler): what deleting old
-- task attempts and audit entries needs. Events have had theirs since 0008 (events_terminal,
-- events_agents_age).

-- Attempts are pruned by their end, oldest first, in bounded batches: a range scan on this
-- index. Partial: a running attempt (end_time NULL) is never pruned.
CREATE INDEX task_attempts_end ON task_attempts (end_time) WHERE end_time IS NOT NULL;

-- The audit chain after pruning. Retention deletes a prefix of the chain (the oldest rows, never
-- the newest, which the next append links to) and records here the id, hash and time of the last
-- row it deleted. az_audit_verify starts from this anchor instead of the all-zero hash: the oldest
-- kept row must link to it, so removing kept rows, changing them or moving the anchor without the
-- rows still shows. One row at most.
CREATE TABLE audit_anchor (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id     bigint NOT NULL,
    last_hash   text NOT NULL CHECK (last_hash ~ '^[0-9a-f]{64}$'),
    last_time   timestamptz NOT NULL,
    pruned      bigint NOT NULL DEFAULT 0 CHECK (pruned >= 0), -- rows deleted so far, in total
    update_time timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The append-only guard of 0004, now also guarding the anchor: changes are refused unless
-- agentz_audit_prune (below) is running them (a DELETE of audit rows, a write of the anchor) — it sets agentz.audit_prune for its own
-- transaction and runs as the tables' owner. A session of agentz_app setting the variable
-- itself is still refused (current_user is then agentz_app, not the owner). TRUNCATE is
-- always refused.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'DELETE' OR TG_TABLE_NAME = 'audit_anchor')
       AND current_setting('agentz.audit_prune', true) = 'on'
       AND current_user = (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = TG_RELID) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_anchor_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_anchor
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_anchor_no_truncate BEFORE TRUNCATE ON audit_anchor
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Deletes the oldest audit rows whose time is before older_than — only a prefix of the chain,
-- at most max_rows rows, never the newest row — and moves the anchor to the last deleted row,
-- in one transaction holding the chain's append lock (server/audit/audit.c LOCK_KEY), so the
-- chain seen by any snapshot is the anchor plus the rows after it. Returns the rows deleted.
-- SECURITY DEFINER: agentz_app may not delete audit rows itself.
CREATE FUNCTION agentz_audit_prune(older_than timestamptz, max_rows integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    newest bigint;
    cut_id bigint;
    cut_hash text;
    cut_time timestamptz;
    n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(27431817484437876);
    SELECT max(id) INTO newest FROM audit_log;
    IF newest IS NULL THEN
        RETURN 0;
    END IF;
    -- The longest run of old rows from the start of the chain (time is the call's, so rows are
    -- only nearly in time order: stop at the first young one).
    SELECT h.id, h.hash, h.time INTO cut_id, cut_hash, cut_time
      FROM (SELECT s.id, s.hash, s.time, bool_and(s.time < older_than) OVER (ORDER BY s.id) AS old
              FROM (SELECT id, hash, time FROM audit_log WHERE id < newest ORDER BY id
                    LIMIT greatest(max_rows, 0)) s) h
     WHERE h.old
     ORDER BY h.id DESC
     LIMIT 1;
    IF cut_id IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM set_config('agentz.audit_prune', 'on', true);
    DELETE FROM audit_log WHERE id <= cut_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO audit_anchor AS a (singleton, last_id, last_hash, last_time, pruned)
    VALUES (true, cut_id, cut_hash, cut_time, n)
    ON CONFLICT (singleton) DO UPDATE
        SET last_id = EXCLUDED.last_id, last_hash = EXCLUDED.last_hash,
            last_time = EXCLUDED.last_time, pruned = a.pruned + EXCLUDED.pruned,
            update_time = clock_timestamp();
    PERFORM set_config('agentz.audit_prune', 'off', true);
    RETURN n;
END
$$;
REVOKE EXECUTE ON FUNCTION agentz_audit_prune(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentz_audit_prune(timestamptz, integer) TO agentz_app;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_anchor FROM agentz_app;
