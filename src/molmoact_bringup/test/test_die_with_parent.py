"""A child started with ``suite.die_with_parent`` (as the suite starts the simulator, in its own session) ends when
its parent is killed, SIGKILL included; without it the same child lives on (the control)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux-only')

PARENT = """
import subprocess, sys, time
from molmoact_bringup.suite import die_with_parent
kw = dict(preexec_fn=die_with_parent) if sys.argv[1] == 'linked' else {}
child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True, **kw)
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ('Z', 'X')


def _child_after_parent_killed(mode: str) -> int:
    parent = subprocess.Popen([sys.executable, '-c', PARENT, mode], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
    finally:
        parent.kill()
        parent.wait(timeout=30)
    return pid


def test_the_child_ends_when_its_parent_is_killed():
    pid = _child_after_parent_killed('linked')
    deadline = time.monotonic() + 30.0  # generous: the kernel signals at once
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_without_it_the_child_outlives_its_parent():
    pid = _child_after_parent_killed('plain')
    try:
        time.sleep(0.5)
        assert _alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
