"""A child started with ``suite.die_with_parent`` (as the suite starts the simulator, in its own session) ends when
its parent is killed, SIGKILL included; without it the same child lives on (the control).

No clock: both processes block in ``signal.pause()``, and the child's death is seen as end-of-file on a pipe whose
write end only the child holds once the parent is dead (a dead process's descriptors are closed, zombie or not)."""

import os
import select
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux-only')

PARENT = """
import signal, subprocess, sys
from molmoact_bringup.suite import die_with_parent
mode, fd = sys.argv[1], int(sys.argv[2])
kw = dict(preexec_fn=die_with_parent) if mode == 'linked' else {}
child = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'], start_new_session=True,
                         pass_fds=(fd,), **kw)
print(child.pid, flush=True)
signal.pause()
"""
EVENT_BOUND_S = 30.0  # generous: the kernel signals the child at once


def _child_of_a_killed_parent(mode: str):
    """(child pid, read end of the pipe only the child still writes to) after its parent was SIGKILLed."""
    r, w = os.pipe()
    parent = subprocess.Popen([sys.executable, '-c', PARENT, mode, str(w)], stdout=subprocess.PIPE, text=True,
                              pass_fds=(w,))
    os.close(w)
    try:
        pid = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait(timeout=EVENT_BOUND_S)
    return pid, r


def _ended(r: int, bound_s: float) -> bool:
    """True once the pipe reads end-of-file (every writer gone) within ``bound_s``."""
    ready, _, _ = select.select([r], [], [], bound_s)
    return bool(ready) and os.read(r, 1) == b''


def test_the_child_ends_when_its_parent_is_killed():
    _, r = _child_of_a_killed_parent('linked')
    try:
        assert _ended(r, EVENT_BOUND_S)
    finally:
        os.close(r)


def test_without_it_the_child_outlives_its_parent():
    pid, r = _child_of_a_killed_parent('plain')
    try:
        assert not _ended(r, 0.0)          # alive now that its parent is gone ...
        os.kill(pid, signal.SIGKILL)
        assert _ended(r, EVENT_BOUND_S)    # ... and the pipe does tell a dead child
    finally:
        os.close(r)
