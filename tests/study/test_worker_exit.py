"""A study's worker process does not outlive the study: killing the parent (even with SIGKILL) ends it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from processes import alive

PARENT = textwrap.dedent(
    """
    import multiprocessing as mp, os, sys, time

    def child(watch, parent):
        if watch:
            from centrum.study.runner import exit_with_parent
            exit_with_parent(parent, interval=0.1)
        time.sleep(60)

    if __name__ == "__main__":
        p = mp.get_context("spawn").Process(target=child, args=(sys.argv[1] == "watch", os.getpid()))
        p.start()
        print(p.pid, flush=True)
        time.sleep(60)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("watch", [True, False])
def test_worker_exits_when_the_study_is_killed(tmp_path, watch):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), "watch" if watch else "plain"], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + (60 if watch else 2)  # the child may still be importing
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        # without the watch the orphan trains on: the check that the test can fail
        assert alive(child) is not watch
    finally:
        if alive(child):
            os.kill(child, 9)
