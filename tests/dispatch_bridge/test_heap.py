"""A serving process puts what it holds from start-up out of the collector's reach (so a
full collection no longer walks, and stalls every call for, some 75,000 objects), and still
frees garbage cycles. Run in child processes: the test process's own collector is left be."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import orjson

from dispatch_bridge._heap import YOUNG_THRESHOLD


def _run(script: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, int] = orjson.loads(done.stdout.splitlines()[-1])
    return answer


def test_settling_leaves_the_collector_only_what_is_allocated_after_and_still_frees_cycles() -> (
    None
):
    seen = _run(
        """
        import gc, orjson
        import bridge, dispatch_api.web  # what a service holds for its lifetime
        from dispatch_bridge._heap import settle_heap

        tracked_before = len(gc.get_objects())
        settle_heap()
        tracked_after = len(gc.get_objects())
        frozen = gc.get_freeze_count()

        cycle = []
        cycle.append(cycle)  # garbage made while serving, reachable only from itself
        del cycle
        freed = gc.collect()
        print(orjson.dumps({
            "before": tracked_before, "after": tracked_after, "frozen": frozen,
            "freed": freed, "young": gc.get_threshold()[0],
        }).decode())
        """
    )
    assert seen["before"] > 20_000  # the modules alone: what each full collection walked
    assert seen["after"] < 100  # what a full collection walks once settled
    assert seen["frozen"] >= seen["before"] * 0.9
    assert seen["freed"] >= 1  # the cycle made afterwards is still collected
    assert seen["young"] == YOUNG_THRESHOLD


def test_serve_settles_the_heap_once_its_apps_have_started() -> None:
    seen = _run(
        """
        import asyncio, gc, os, signal, orjson
        from aiohttp import web
        from dispatch_bridge._serve import serve

        async def main():
            app = web.Application()
            held = []

            async def resources(app):
                held.append([{"kept": i} for i in range(5000)])  # what start-up builds
                yield

            app.cleanup_ctx.append(resources)

            def listening():
                print(orjson.dumps({
                    "frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()),
                    "young": gc.get_threshold()[0],
                }).decode(), flush=True)
                # Once serve() waits for its signal (it listens for it after this).
                asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)

            await serve([(app, "127.0.0.1", 0, lambda app: None)], listening=listening,
                        drain_timeout_s=0.1)

        asyncio.run(main())
        """
    )
    assert seen["frozen"] > 5000  # the app's start-up objects among them
    assert seen["tracked"] < 1000
    assert seen["young"] == YOUNG_THRESHOLD
