-- Technicians as records: who can be scheduled, for which incident types, and when.
--
-- `id` follows the principal/actor id pattern, so a technician principal's id can equal its
-- technician id (that is how a technician is allowed to read its own record).
-- `skills` holds incident template names (`water_leak`, ...). `hours` is optional working
-- hours, an object {"days": [1..7 ISO weekdays], "start": "HH:MM", "end": "HH:MM",
-- "tz": IANA zone, default "UTC"}, validated by the API's schema; NULL means unknown.
--
-- No foreign key from tickets.technician_id: tickets scheduled before this migration name
-- technicians that exist nowhere, and the scheduling rules check the technician in the
-- service (under the ticket lock, with an error the agent can act on) rather than through a
-- constraint violation. Technicians are deactivated, never deleted, so ids stay meaningful.
CREATE TABLE technicians (
    id         text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:@+=-]{1,128}$'),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    skills     text[] NOT NULL DEFAULT '{}',
    active     boolean NOT NULL DEFAULT true,
    region     text,
    hours      jsonb CHECK (hours IS NULL OR jsonb_typeof(hours) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- "Active technicians with skill X" (the queue's matching count, schedule checks, listings
-- filtered by skill): `skills @> ARRAY[X]` on a GIN index over the active ones only.
CREATE INDEX technicians_active_skills ON technicians USING gin (skills) WHERE active;
