"""dispatch-api: the slim system of record behind the bridge.

domain/    pure rules: states, transitions, evidence, permissions (no I/O)
store/     PostgreSQL through asyncpg: migrations, tickets, idempotency keys
service/   use cases: one transaction per mutation, idempotent per principal
web/       aiohttp: routes, auth, problem+json, request validation
"""
