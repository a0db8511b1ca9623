"""Compose bootstrap: create the dispatch-api principals the stack needs, with given tokens.

`dispatch-bridge create-principal` mints a random token and prints it, which a compose stack
cannot hand to the bridge replicas. This one-shot job runs after `migrate` in the same image
and upserts, through the product's own store code (tokens stored as sha256):

- `bridge`: role `gateway`, trusted to assert the acting agent, token DISPATCH_GATEWAY_TOKEN;
- `ops`: role `supervisor`, for operators calling dispatch-api directly, token
  DISPATCH_API_TOKEN (optional; skipped when unset).

Re-running it is harmless: an upsert sets the same token again.
"""

from __future__ import annotations

import asyncio
import os
import sys

from dispatch_api.domain import Role
from dispatch_api.store import connect, principals


async def bootstrap(dsn: str, gateway_token: str, ops_token: str | None) -> list[str]:
    conn = await connect(dsn)
    try:
        await principals.upsert(conn, "bridge", Role.GATEWAY, gateway_token, trusted_gateway=True)
        created = ["bridge (gateway)"]
        if ops_token:
            await principals.upsert(conn, "ops", Role.SUPERVISOR, ops_token)
            created.append("ops (supervisor)")
    finally:
        await conn.close()
    return created


def main() -> int:
    dsn = os.environ.get("DISPATCH_DATABASE_URL", "")
    gateway_token = os.environ.get("DISPATCH_GATEWAY_TOKEN", "")
    if not dsn or not gateway_token:
        print("bootstrap: set DISPATCH_DATABASE_URL and DISPATCH_GATEWAY_TOKEN", file=sys.stderr)
        return 2
    if len(gateway_token) < 32:
        print("bootstrap: DISPATCH_GATEWAY_TOKEN must be at least 32 characters", file=sys.stderr)
        return 2
    created = asyncio.run(bootstrap(dsn, gateway_token, os.environ.get("DISPATCH_API_TOKEN")))
    print(f"bootstrap: principals ready: {', '.join(created)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
