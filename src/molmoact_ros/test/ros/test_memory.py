"""glibc malloc arena cap of the model-hosting executables (ros/memory.py)."""

import subprocess
import sys
import textwrap

import pytest

from molmoact_ros.ros.memory import DEFAULT_ARENAS, arena_cap_from_env

SCRIPT = textwrap.dedent('''
    import ctypes, sys, threading
    from molmoact_ros.ros.memory import limit_malloc_arenas
    applied = limit_malloc_arenas(int(sys.argv[1]))
    libc = ctypes.CDLL('libc.so.6')
    barrier = threading.Barrier(6)
    def churn():
        barrier.wait()
        for _ in range(2000):  # small blocks, served from the thread's arena
            blocks = [ctypes.create_string_buffer(256) for _ in range(20)]
            del blocks
    threads = [threading.Thread(target=churn) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print('applied', applied, flush=True)
    libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
''')


def _arenas(cap):
    out = subprocess.run([sys.executable, '-c', SCRIPT, str(cap)], capture_output=True, text=True, timeout=120,
                         env={'PYTHONPATH': ':'.join(sys.path)})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[1] == 'True', out.stderr.count('Arena ')


def test_cap_limits_the_arenas_of_a_threaded_process():
    applied, capped = _arenas(2)
    assert applied and 1 <= capped <= 2
    applied, free = _arenas(0)  # glibc's default: threads get arenas of their own
    assert not applied and free > 2


def test_cap_from_environment():
    assert arena_cap_from_env({}) == DEFAULT_ARENAS
    assert arena_cap_from_env({'MOLMOACT_MALLOC_ARENA_MAX': '0'}) == 0
    assert arena_cap_from_env({'MOLMOACT_MALLOC_ARENA_MAX': ' 4 '}) == 4
    assert arena_cap_from_env({'MALLOC_ARENA_MAX': '8', 'MOLMOACT_MALLOC_ARENA_MAX': '2'}) == 0  # glibc's wins
    for bad in ('-1', 'two'):
        with pytest.raises(ValueError):
            arena_cap_from_env({'MOLMOACT_MALLOC_ARENA_MAX': bad})


def test_entry_points_cap_before_importing_the_model_stack():
    """The executables' entry module is light: the cap is applied before torch / rclpy are imported."""
    code = ('import sys, molmoact_ros.nodes.entry as e; '
            'print(sorted(m for m in ("torch", "transformers", "rclpy") if m in sys.modules)); '
            'print(callable(e.pipeline_main) and callable(e.perception_main))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60,
                         env={'PYTHONPATH': ':'.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split('\n')[:2] == ['[]', 'True']
