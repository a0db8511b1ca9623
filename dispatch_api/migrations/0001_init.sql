-- dispatch-api: tickets, their append-only timeline, evidence, principals, idempotency keys.

CREATE TABLE principals (
    id              text PRIMARY KEY,
    token_sha256    bytea NOT NULL UNIQUE,
    role            text NOT NULL CHECK (role IN ('dispatcher', 'technician', 'supervisor', 'gateway')),
    -- A trusted gateway may assert the acting agent or human in X-Actor-* headers.
    trusted_gateway boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz
);

CREATE TABLE incident_templates (
    name         text PRIMARY KEY,
    title        text NOT NULL,
    requirements jsonb NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tickets (
    id                uuid PRIMARY KEY,
    state             text NOT NULL CHECK (state IN ('NEW', 'READY_TO_SCHEDULE', 'SCHEDULED',
                          'DISPATCHED', 'ON_SITE', 'ON_HOLD', 'COMPLETED', 'CANCELLED')),
    priority          text CHECK (priority IN ('P1', 'P2', 'P3', 'P4')),
    customer_name     text,
    contact_phone     text,
    contact_email     text,
    site_address      text,
    incident_type     text,
    description       text,
    technician_id     text,
    window_start      timestamptz,
    window_end        timestamptz,
    state_before_hold text,
    hold_cause        text CHECK (hold_cause IN ('customer', 'provider')),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    state_entered_at  timestamptz NOT NULL,
    -- Sequence number of the ticket's newest timeline event; the row lock serialises appends.
    last_seq          integer NOT NULL
);
CREATE INDEX tickets_by_created ON tickets (created_at, id);
CREATE INDEX tickets_by_state ON tickets (state, created_at, id);
CREATE INDEX tickets_by_technician ON tickets (technician_id, created_at, id);

CREATE TABLE timeline_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id      uuid NOT NULL REFERENCES tickets (id),
    seq            integer NOT NULL,
    at             timestamptz NOT NULL,
    type           text NOT NULL,
    from_state     text,
    to_state       text,
    reason         text,
    actor_type     text NOT NULL,
    actor_id       text NOT NULL,
    role           text NOT NULL,
    tool_name      text,
    request_id     text,
    correlation_id text,
    trace_id       text,
    details        jsonb NOT NULL DEFAULT '{}',
    UNIQUE (ticket_id, seq)
);

CREATE FUNCTION timeline_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'timeline_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER timeline_no_update_or_delete BEFORE UPDATE OR DELETE ON timeline_events
    FOR EACH ROW EXECUTE FUNCTION timeline_is_append_only();
CREATE TRIGGER timeline_no_truncate BEFORE TRUNCATE ON timeline_events
    FOR EACH STATEMENT EXECUTE FUNCTION timeline_is_append_only();

CREATE TABLE evidence (
    id               uuid PRIMARY KEY,
    ticket_id        uuid NOT NULL REFERENCES tickets (id),
    kind             text NOT NULL CHECK (kind IN ('photo', 'signature', 'document', 'note')),
    tag              text,
    content_type     text NOT NULL,
    size_bytes       bigint NOT NULL CHECK (size_bytes >= 0),
    sha256           text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    uri              text,
    content          bytea,
    description      text,
    captured_by_type text NOT NULL,
    captured_by_id   text NOT NULL,
    captured_by_role text NOT NULL,
    captured_at      timestamptz NOT NULL,
    request_id       text,
    CHECK ((uri IS NULL) <> (content IS NULL))
);
CREATE INDEX evidence_by_ticket ON evidence (ticket_id, captured_at, id);

-- One row per (principal, key): claimed and answered in the same transaction as the
-- mutation, so a key is never visible half-done and a crash leaves nothing stuck.
CREATE TABLE idempotency_keys (
    principal_id  text NOT NULL,
    key           text NOT NULL,
    fingerprint   bytea NOT NULL,
    method        text NOT NULL,
    path          text NOT NULL,
    status_code   integer,
    response_body bytea,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (principal_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
