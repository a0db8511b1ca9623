-- SLA timers: due times per ticket, the customer-hold pause credit, breaches claimed once.

ALTER TABLE tickets
    ADD COLUMN response_due_at        timestamptz,
    ADD COLUMN resolution_due_at      timestamptz,
    -- Set while a customer-caused hold stops the clock; its time is credited on resume.
    ADD COLUMN sla_paused_since       timestamptz,
    ADD COLUMN sla_paused_s           double precision NOT NULL DEFAULT 0,
    ADD COLUMN provider_hold_since    timestamptz,
    ADD COLUMN provider_hold_s        double precision NOT NULL DEFAULT 0,
    ADD COLUMN responded_at           timestamptz,
    ADD COLUMN resolved_at            timestamptz,
    ADD COLUMN response_breached_at   timestamptz,
    ADD COLUMN resolution_breached_at timestamptz;

-- The sweeper's scans: open targets by due time (partial, so they stay small).
CREATE INDEX tickets_response_open ON tickets (response_due_at)
    WHERE responded_at IS NULL AND response_breached_at IS NULL
      AND state NOT IN ('COMPLETED', 'CANCELLED');
CREATE INDEX tickets_resolution_open ON tickets (resolution_due_at)
    WHERE resolved_at IS NULL AND resolution_breached_at IS NULL
      AND state NOT IN ('COMPLETED', 'CANCELLED');
