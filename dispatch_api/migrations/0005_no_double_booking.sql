-- One technician, one place at a time: no two active assignments (SCHEDULED, DISPATCHED,
-- ON_SITE) of the same technician may have overlapping windows. PostgreSQL enforces it, so
-- two schedulers racing for the same technician cannot both win (a read-then-write check
-- could let both through). Windows are half-open: one visit may start when another ends.
-- A P1 dispatched by the emergency bypass has no window and is not covered.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Rows written before this rule may overlap. Each active assignment that overlaps an
-- earlier-created one of the same technician is put ON_HOLD (cause provider, the state it
-- held kept for resume) with a `held` timeline event saying why, so a dispatcher sees and
-- reschedules it; nothing is deleted. (Conservative: a ticket overlapping only one that is
-- itself put on hold is held too.)
CREATE TEMPORARY TABLE double_booked ON COMMIT DROP AS
SELECT t.id, t.state
FROM tickets t
WHERE t.state IN ('SCHEDULED', 'DISPATCHED', 'ON_SITE')
  AND t.technician_id IS NOT NULL AND t.window_start IS NOT NULL AND t.window_end IS NOT NULL
  AND EXISTS (
      SELECT 1 FROM tickets o
      WHERE o.technician_id = t.technician_id
        AND o.id <> t.id
        AND o.state IN ('SCHEDULED', 'DISPATCHED', 'ON_SITE')
        AND o.window_start IS NOT NULL AND o.window_end IS NOT NULL
        AND tstzrange(o.window_start, o.window_end) && tstzrange(t.window_start, t.window_end)
        AND (o.created_at, o.id) < (t.created_at, t.id)
  );

UPDATE tickets t
SET state = 'ON_HOLD', state_before_hold = d.state, hold_cause = 'provider',
    provider_hold_since = now(), updated_at = now(), state_entered_at = now(),
    last_seq = t.last_seq + 1
FROM double_booked d
WHERE t.id = d.id;

INSERT INTO timeline_events (ticket_id, seq, at, type, from_state, to_state, reason,
                             actor_type, actor_id, role, details)
SELECT t.id, t.last_seq, now(), 'held', d.state, 'ON_HOLD',
       'double booking found when the no-overlap rule was introduced; reschedule it',
       'system', 'migration-0005', 'system',
       jsonb_build_object('cause', 'provider', 'technician_id', t.technician_id)
FROM double_booked d JOIN tickets t ON t.id = d.id;

ALTER TABLE tickets ADD CONSTRAINT tickets_no_double_booking EXCLUDE USING gist (
    technician_id WITH =,
    tstzrange(window_start, window_end) WITH &&
) WHERE (state IN ('SCHEDULED', 'DISPATCHED', 'ON_SITE') AND window_start IS NOT NULL);
