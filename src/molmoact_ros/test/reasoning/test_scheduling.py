"""The engine's stage-priority lock: waiting stages acquire it acting first, then planning, then perceiving."""

import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from molmoact_ros.reasoning.scheduling import ACT, PERCEIVE, PLAN, PriorityRLock


def _wait_until(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.001)
    return predicate()


def test_reentrant_and_exclusive():
    lock = PriorityRLock()
    with lock.hold(PLAN):
        with lock.hold(ACT):  # the holder re-acquires at any priority
            with lock:
                assert lock.held
    assert not lock.held
    order = []
    with lock:
        t = threading.Thread(target=lambda: (lock.acquire(ACT), order.append('other'), lock.release()))
        t.start()
        time.sleep(0.05)
        order.append('holder')  # the other thread waits while this one holds the lock
    t.join(5)
    assert order == ['holder', 'other']


def test_release_by_a_thread_that_does_not_hold_it_is_an_error():
    lock = PriorityRLock()
    with pytest.raises(RuntimeError):
        lock.release()
    lock.acquire()
    t_error = []
    t = threading.Thread(target=lambda: t_error.append(pytest.raises(RuntimeError, lock.release)))
    t.start()
    t.join(5)
    lock.release()
    assert t_error


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([PERCEIVE, PLAN, ACT]), min_size=2, max_size=8))
def test_waiters_acquire_highest_priority_first(priorities):
    """Threads that queue while the lock is held get it in order of priority (descending)."""
    lock = PriorityRLock()
    got = []
    lock.acquire()
    threads = []
    for i, p in enumerate(priorities):
        def waiter(i=i, p=p):
            lock.acquire(p)
            got.append(p)
            lock.release()
        t = threading.Thread(target=waiter)
        t.start()
        threads.append(t)
        assert _wait_until(lambda n=i + 1: sum(lock.waiting(q) for q in (PERCEIVE, PLAN, ACT)) == n)
    lock.release()
    for t in threads:
        t.join(5)
    assert got == sorted(priorities, reverse=True)


def test_a_busy_perception_loop_does_not_starve_planning_and_acting():
    """The pipeline's pattern: perception re-acquires at once after each frame; planning and acting of the
    previous request still run before the next perceive."""
    lock = PriorityRLock()
    log, stop = [], threading.Event()

    def perception():
        n = 0
        while not stop.is_set() and n < 50:
            with lock.hold(PERCEIVE):
                log.append('perceive')
                time.sleep(0.002)
                if n == 3:
                    planner_wants.set()
            n += 1

    planner_wants = threading.Event()

    def downstream():
        planner_wants.wait(5)
        with lock.hold(PLAN):
            log.append('plan')
        with lock.hold(ACT):
            log.append('act')
        stop.set()

    threads = [threading.Thread(target=perception), threading.Thread(target=downstream)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert 'plan' in log and 'act' in log
    # at most one more perceive gets in between the request for planning and the plan (the one already
    # running), and acting follows planning with at most one perceive in between (taken while no one waited)
    first_plan = log.index('plan')
    assert log[:first_plan].count('perceive') <= 5
    assert log.index('act') - first_plan <= 2
