-- Security: API keys (server/auth/apikey.c), workspaces of external organizations
-- (server/auth/workspace.c), encrypted secrets (server/secret/secret.c) and the append-only,
-- hash-chained audit log (server/audit/audit.c). docs/security.md describes each.

-- A Clerk organization (or "user:<sub>" for a personal workspace) maps to one workspace for good.
ALTER TABLE workspaces ADD COLUMN external_id text UNIQUE;

-- Keys are stored only as the hex SHA-256 of the whole key text; prefix is the 8 characters
-- after "agz_", shown so people can recognise a key.
CREATE TABLE api_keys (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id),
    id            uuid NOT NULL,
    name          text NOT NULL,
    role          smallint NOT NULL CHECK (role BETWEEN 1 AND 4),
    prefix        text NOT NULL,
    hash          text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    expire_time   timestamptz,
    last_use_time timestamptz,
    revoke_time   timestamptz,
    create_time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id)
);
-- Every authenticated call looks its key up by hash.
CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash);
CREATE INDEX api_keys_page ON api_keys (workspace_id, create_time, id);

-- Secret values encrypted with AES-256-GCM under the master key key_id (first 8 hex digits of
-- the key's SHA-256); AAD = workspace_id, name and key_id. id names the current version, so an
-- idempotent CreateSecret can find what it wrote.
CREATE TABLE secrets (
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,128}$'),
    id           uuid NOT NULL,
    version      bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    key_id       text NOT NULL CHECK (key_id ~ '^[0-9a-f]{8}$'),
    nonce        bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext   bytea NOT NULL,
    tag          bytea NOT NULL CHECK (length(tag) = 16),
    create_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, name)
);
CREATE INDEX secrets_key_id ON secrets (key_id);

-- One row per mutating call and per denied call. hash = SHA-256(prev_hash || the row's canonical
-- encoding) makes a chain: editing or deleting a row breaks every later link. Appends take an
-- advisory lock so the chain stays linear. workspace_id is NULL when the caller never got one
-- (authentication failed); no foreign key, so entries outlive their workspace.
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    time         timestamptz NOT NULL,
    principal    text NOT NULL,
    workspace_id uuid,
    method       text NOT NULL,
    target_id    text NOT NULL DEFAULT '',
    outcome      text NOT NULL,
    peer         text NOT NULL DEFAULT '',
    request_id   text NOT NULL DEFAULT '',
    prev_hash    text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash         text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, id);

-- REVOKE UPDATE, DELETE does not bind the table's owner (the role agentzd connects as), so a
-- trigger refuses them for everyone. Disabling it takes ALTER TABLE: deliberate, and the hash
-- chain still shows what changed.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
