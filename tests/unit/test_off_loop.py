"""Blocking reads off the event loop (keys files, certificates) in daemon threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from herald.runtime.off_loop import in_daemon_thread

REPO = Path(__file__).resolve().parents[2]


async def test_the_result_or_the_exception_comes_back() -> None:
    assert await in_daemon_thread(lambda: 6 * 7) == 42

    def broken() -> int:
        raise ValueError("no such file")

    with pytest.raises(ValueError, match="no such file"):
        await in_daemon_thread(broken)


def test_a_read_that_never_returns_does_not_hold_up_the_exit() -> None:
    """With asyncio.to_thread, the loop's close waited for the stuck thread: a keys
    file on a hung mount kept a stopping service from exiting."""
    script = textwrap.dedent(
        """
        import asyncio, threading, uvloop
        from herald.runtime.off_loop import in_daemon_thread

        async def main() -> None:
            stuck = threading.Event()
            try:
                await asyncio.wait_for(in_daemon_thread(stuck.wait), 0.2)
            except TimeoutError:
                print("gave up waiting")

        uvloop.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'gen'}"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gave up waiting"
