-- Row-level security: a second wall behind the data layer's `WHERE workspace_id = $1`. The
-- server's pooled sessions run as agentz_app (SET ROLE after migrations, server/store/pgpool.c)
-- and see only the rows of the session's agentz.workspace_id, or every row while
-- agentz.system = 'on' (migrations, reconciler, janitor, cross-workspace lookups).

-- The role is cluster-wide: it may exist already (another database of the cluster, or created
-- by a DBA for a login role that may not create roles). Two databases migrating at once race
-- on CREATE ROLE, and the loser sees duplicate_object or unique_violation: both mean "exists".
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agentz_app') THEN
        BEGIN
            CREATE ROLE agentz_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role agentz_app does not exist and % may not create it', current_user
                    USING HINT = format('as a superuser: CREATE ROLE agentz_app NOLOGIN; GRANT agentz_app TO %I;',
                                        current_user);
        END;
    END IF;
    -- The login role must be allowed to SET ROLE agentz_app (superusers always are).
    IF NOT pg_has_role(current_user, 'agentz_app', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT agentz_app TO %I', current_user);
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION '% is not a member of role agentz_app and may not grant it', current_user
                    USING HINT = format('as a superuser: GRANT agentz_app TO %I;', current_user);
        END;
    END IF;
END
$$;

-- Grants agentz_app the rights the server needs and puts every table of the current schema that
-- has a workspace_id column under the workspace policy. Idempotent: a later migration that adds
-- a tenant table ends with `SELECT agentz_apply_rls();` (tests/unit/test_rls.c fails otherwise).
CREATE OR REPLACE FUNCTION agentz_apply_rls() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t regclass;
    n integer := 0;
    -- NULLIF: '' (no workspace) matches nothing instead of failing the uuid cast.
    rule constant text :=
        '(workspace_id = NULLIF(current_setting(''agentz.workspace_id'', true), '''')::uuid'
        ' OR current_setting(''agentz.system'', true) = ''on'')';
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO agentz_app', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO agentz_app',
                   current_schema());
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO agentz_app',
                   current_schema());
    -- Tables and sequences later migrations create get the grants without asking.
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
                   ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO agentz_app', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
                   ' GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO agentz_app', current_schema());
    -- The server reads the schema version; only migrations (as the owner) write it.
    IF to_regclass('schema_migrations') IS NOT NULL THEN
        REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM agentz_app;
    END IF;
    -- The audit log is append-only: the trigger refuses changes, and the role may not even try.
    IF to_regclass('audit_log') IS NOT NULL THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM agentz_app;
    END IF;
    FOR t IN
        SELECT c.oid::regclass
          FROM pg_class c
          JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
           AND c.relkind IN ('r', 'p')
           AND a.attname = 'workspace_id' AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        -- FORCE: the owner is subject to the policy too (a non-superuser owner would bypass it).
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS agentz_workspace ON %s', t);
        EXECUTE format('CREATE POLICY agentz_workspace ON %s USING %s WITH CHECK %s', t, rule, rule);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
REVOKE EXECUTE ON FUNCTION agentz_apply_rls() FROM PUBLIC;

SELECT agentz_apply_rls();
