"""Fill a dispatch-api database with N tickets and about 10 timeline events each.

Rows are generated inside PostgreSQL (generate_series), in batches, so a million tickets
and ten million events take minutes, not hours. The mix of states, priorities and ages is
what a busy tenant looks like: mostly completed history, a live queue on top.

    python bench/generate.py DATABASE_URL [--tickets 1000000] [--events-per-ticket 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg

TICKETS = """
INSERT INTO tickets (id, state, priority, customer_name, contact_phone, site_address,
    incident_type, technician_id, window_start, window_end, created_at, updated_at,
    state_entered_at, last_seq, response_due_at, resolution_due_at, responded_at, resolved_at)
SELECT gen_random_uuid(),
       (ARRAY['COMPLETED','COMPLETED','COMPLETED','COMPLETED','COMPLETED','COMPLETED',
              'CANCELLED','READY_TO_SCHEDULE','SCHEDULED','ON_SITE'])[1 + (g % 10)],
       (ARRAY['P1','P2','P3','P4'])[1 + (g % 4)],
       'Customer ' || g, '+4420790' || (g % 100000), g || ' Generated Street',
       (ARRAY['water_leak','no_heat','lockout','electrical_hazard'])[1 + (g % 4)],
       'tech-' || (g % 500),
       -- One-hour visits two hours apart: each technician's (g / 500)-th slot, never two
       -- at once (the exclusion constraint of migration 0005 holds).
       w.start, w.start + interval '1 hour',
       c.created_at, c.created_at, c.created_at + interval '10 minutes', $3,
       c.created_at + interval '4 hours', c.created_at + interval '24 hours',
       CASE WHEN g % 10 < 6 THEN c.created_at + interval '2 hours' END,
       CASE WHEN g % 10 < 6 THEN c.created_at + interval '5 hours' END
FROM generate_series($1::bigint, $2::bigint) AS g,
     -- history is months old; the live queue (the last three of ten) is from the last two days
     LATERAL (SELECT now() - make_interval(secs => CASE WHEN g % 10 >= 7
                  THEN (g % 172800) ELSE 172800 + (g % 8000000) END) AS created_at) AS c,
     LATERAL (SELECT timestamptz '2027-01-01 00:00Z' + (g / 500) * interval '2 hours'
                  AS start) AS w
"""

#: The 500 technicians the tickets name, each skilled for every generated incident type.
TECHNICIANS = """
INSERT INTO technicians (id, name, skills)
SELECT 'tech-' || i, 'Technician ' || i,
       ARRAY['water_leak','no_heat','lockout','electrical_hazard']
FROM generate_series(0, 499) AS i
ON CONFLICT (id) DO NOTHING
"""

EVENTS = """
INSERT INTO timeline_events (ticket_id, seq, at, type, from_state, to_state, reason,
    actor_type, actor_id, role, tool_name, request_id, correlation_id, trace_id, details)
SELECT t.id, s, t.created_at + make_interval(secs => s * 60),
       (ARRAY['created','updated','scheduled','dispatched','arrived','evidence_attached',
              'evidence_attached','evidence_attached','completion_rejected','completed'])[s],
       'ON_SITE', 'ON_SITE', NULL, 'agent', 'agent-' || (s % 7), 'technician',
       'tech.complete', gen_random_uuid()::text, gen_random_uuid()::text,
       md5(t.id::text || s), jsonb_build_object('seq', s)
FROM (SELECT id, created_at FROM tickets ORDER BY id LIMIT $1 OFFSET $2) AS t,
     generate_series(1, $3) AS s
"""


async def generate(dsn: str, tickets: int, per_ticket: int, batch: int = 100_000) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(TECHNICIANS)
        started = time.perf_counter()
        for first in range(1, tickets + 1, batch):
            last = min(first + batch - 1, tickets)
            await conn.execute(TICKETS, first, last, per_ticket)
        print(f"{tickets} tickets in {time.perf_counter() - started:.1f}s", flush=True)
        # Triggers forbid UPDATE/DELETE only; inserting history in bulk is what they allow.
        started = time.perf_counter()
        for offset in range(0, tickets, batch):
            await conn.execute(EVENTS, batch, offset, per_ticket)
        print(f"{tickets * per_ticket} events in {time.perf_counter() - started:.1f}s", flush=True)
        await conn.execute("ANALYZE tickets; ANALYZE timeline_events; ANALYZE technicians")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--events-per-ticket", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(generate(args.database_url, args.tickets, args.events_per_ticket))


if __name__ == "__main__":
    main()
