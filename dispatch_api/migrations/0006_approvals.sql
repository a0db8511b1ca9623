-- Approvals: one row per gated agent call (a person must say yes before it runs), keyed by
-- the requesting principal and the call's request id, so a re-sent call finds its approval
-- and never makes a second one. The row binds everything needed to run the call later
-- exactly as asked: its Idempotency-Key parts, the action and its body, the requesting actor
-- and its ids, and the ticket's version (last timeline seq) at request time.

CREATE TABLE approvals (
    id                 uuid PRIMARY KEY,
    principal_id       text NOT NULL,
    request_id         text NOT NULL,
    idempotency_key    text NOT NULL,
    method             text NOT NULL,
    path               text NOT NULL,
    fingerprint        bytea NOT NULL,
    action             text NOT NULL,
    tool               text NOT NULL,
    arguments          jsonb NOT NULL,
    arguments_sha256   text NOT NULL,
    actor_type         text NOT NULL,
    actor_id           text NOT NULL,
    actor_role         text NOT NULL,
    tool_name          text,
    correlation_id     text,
    trace_id           text,
    ticket_id          uuid NOT NULL REFERENCES tickets (id),
    ticket_version     integer NOT NULL,
    ticket_state       text NOT NULL,
    ticket_priority    text,
    rule               text NOT NULL,
    rule_version       text NOT NULL,
    approvers          text[] NOT NULL,
    requested_at       timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    decided_at         timestamptz,
    decided_by_id      text,
    decided_by_role    text,
    reason             text,
    status             text NOT NULL CHECK (status IN ('pending', 'approved', 'denied',
                           'expired', 'executed', 'stale', 'withdrawn')),
    -- The bound call's answer once it ran (executed, or approved and refused by the domain).
    result_status      integer,
    result_body        bytea,
    UNIQUE (principal_id, request_id)
);
CREATE INDEX approvals_by_requested ON approvals (requested_at, id);
CREATE INDEX approvals_by_ticket ON approvals (ticket_id, requested_at, id);
-- The expiry sweep and the pending gauges read only pending rows.
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE status = 'pending';
