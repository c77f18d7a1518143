"""In-process handoff plumbing: the stage worker thread, the local bus, duplicate suppression."""

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmoact_ros.ros.handoff import LocalBus, SeenKeys, StageWorker


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.005)
    return predicate()


def test_worker_runs_calls_in_order_on_its_own_thread():
    errors, seen, threads = [], [], set()
    worker = StageWorker('w', on_error=lambda name, exc: errors.append((name, exc)))
    try:
        for i in range(20):
            worker.submit(lambda i=i: (seen.append(i), threads.add(threading.current_thread().name)))
        assert wait_for(lambda: len(seen) == 20)
        assert seen == list(range(20)) and threads == {'w'} and not errors
        assert worker.completed == 20
    finally:
        assert worker.stop()
    assert not worker.running


def test_worker_reports_errors_and_keeps_going():
    errors, seen = [], []

    def bad(x):
        raise ValueError(f'bad input {x}')

    worker = StageWorker('w', on_error=lambda name, exc: errors.append((name, str(exc))))
    try:
        worker.submit(bad, 1)
        worker.submit(seen.append, 2)
        assert wait_for(lambda: seen == [2])
        assert errors == [('bad', 'bad input 1')]
    finally:
        worker.stop()


def test_worker_survives_a_failing_error_handler(caplog):
    """A node whose context shut down (SIGTERM) cannot publish the error it records: the worker thread
    must not die of that (it did, and the stage never finished its goal)."""
    seen = []

    def handler(name, exc):
        raise RuntimeError('publisher\'s context is invalid')

    worker = StageWorker('w', on_error=handler)
    try:
        worker.submit(lambda: 1 / 0)
        worker.submit(seen.append, 2)
        assert wait_for(lambda: seen == [2])
        assert worker.running
        assert any('the error handler failed' in r.getMessage() for r in caplog.records)
    finally:
        assert worker.stop()


def test_worker_idle_runs_on_wake_and_periodically():
    calls = []
    worker = StageWorker('w', on_error=lambda *a: None, idle=lambda: calls.append(time.monotonic()),
                         idle_period_s=0.05)
    try:
        assert wait_for(lambda: len(calls) >= 3, timeout=2.0)  # periodic, without any wake
        n = len(calls)
        start = time.monotonic()
        worker.wake()
        assert wait_for(lambda: len(calls) > n, timeout=1.0)
        assert calls[n] - start < 0.05  # a wake runs it at once, not at the next period
    finally:
        worker.stop()


def test_worker_bounds_its_queue_dropping_the_oldest():
    release, seen = threading.Event(), []
    worker = StageWorker('w', on_error=lambda *a: None, max_pending=3)
    try:
        worker.submit(release.wait)  # occupies the worker
        time.sleep(0.05)
        for i in range(6):
            worker.submit(seen.append, i)
        release.set()
        assert wait_for(lambda: len(seen) == 3)
        time.sleep(0.05)
        assert seen == [3, 4, 5] and worker.dropped == 3
    finally:
        worker.stop()


def test_worker_stop_discards_pending_and_refuses_new_calls():
    release, seen = threading.Event(), []
    worker = StageWorker('w', on_error=lambda *a: None)
    worker.submit(release.wait, 5.0)
    time.sleep(0.05)
    worker.submit(seen.append, 1)
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    time.sleep(0.05)
    release.set()
    stopper.join(5)
    worker.submit(seen.append, 2)
    time.sleep(0.05)
    assert seen == [] and not worker.running


def test_worker_rejects_bad_settings():
    with pytest.raises(ValueError):
        StageWorker('w', on_error=lambda *a: None, idle_period_s=0)
    with pytest.raises(ValueError):
        StageWorker('w', on_error=lambda *a: None, max_pending=0)


def test_deferred_call_runs_on_the_same_thread_after_the_item_and_before_the_next():
    """Run to completion: a handoff deferred by a work item runs on that worker's thread right after the item
    returns, ahead of items queued meanwhile, with the receiving worker's error handling; the receiving
    worker's own thread is not involved."""
    a_errors, b_errors, order = [], [], []
    a = StageWorker('a', on_error=lambda name, exc: a_errors.append(name))
    b = StageWorker('b', on_error=lambda name, exc: b_errors.append((name, str(exc))))
    gate = threading.Event()

    def receive(x):
        order.append((f'receive {x}', threading.current_thread().name))
        if x == 'bad':
            raise ValueError('malformed')

    def item(x):
        assert StageWorker.current() is a
        a.defer(b.run_here, receive, x)
        order.append((f'item {x}', threading.current_thread().name))
        gate.wait(5.0)

    try:
        assert StageWorker.current() is None  # not a worker thread
        a.submit(item, 1)
        assert wait_for(lambda: len(order) == 1)
        a.submit(lambda: order.append(('next', threading.current_thread().name)))  # queued meanwhile
        a.submit(item, 'bad')
        gate.set()
        assert wait_for(lambda: len(order) == 5)
        assert order == [('item 1', 'a'), ('receive 1', 'a'), ('next', 'a'), ('item bad', 'a'),
                         ('receive bad', 'a')]
        assert b_errors == [('receive', 'malformed')] and a_errors == []  # reported by the receiver
        assert b.completed == 2 and a.completed == 3
    finally:
        a.stop()
        b.stop()


def test_deferred_calls_after_idle_and_their_limits():
    seen = []
    holder = {}

    def idle():
        if not seen:
            holder['w'].defer(seen.append, threading.current_thread().name)

    worker = StageWorker('idle', on_error=lambda name, exc: None, idle=idle, idle_period_s=0.05)
    holder['w'] = worker
    other = StageWorker('other', on_error=lambda name, exc: None)
    try:
        assert wait_for(lambda: seen == ['idle'])
        with pytest.raises(RuntimeError, match='own thread'):
            worker.defer(print)  # from the test's thread
        assert other.stop()
        other.run_here(seen.append, 'after stop')  # a stopped receiver runs nothing
        assert seen == ['idle']
    finally:
        worker.stop()


def test_bus_delivers_by_scope_and_resolved_topic():
    bus = LocalBus()
    a, b, other = [], [], []
    ta = bus.subscribe(1, '/arm/perception_tokens', a.append)
    bus.subscribe(1, '/arm/perception_tokens', b.append)
    bus.subscribe(2, '/arm/perception_tokens', other.append)  # another context
    bus.subscribe(1, '/other/perception_tokens', other.append)  # another namespace
    assert bus.deliver(1, '/arm/perception_tokens', 'm1') == 2
    assert a == ['m1'] and b == ['m1'] and other == []
    bus.unsubscribe(ta)
    assert bus.deliver(1, '/arm/perception_tokens', 'm2') == 1 and a == ['m1'] and b == ['m1', 'm2']
    assert bus.subscribers(1, '/arm/perception_tokens') == 1
    assert bus.deliver(1, '/nobody', 'm') == 0


def test_bus_message_is_shared_not_copied():
    bus = LocalBus()
    got = []
    bus.subscribe(0, '/t', got.append)
    msg = object()
    bus.deliver(0, '/t', msg)
    assert got[0] is msg


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 20), max_size=200), st.integers(1, 30))
def test_seen_keys_first_is_true_once_per_key_within_capacity(keys, capacity):
    seen = SeenKeys(capacity)
    window, duplicates = [], 0  # the model: the last `capacity` distinct keys
    for key in keys:
        expected = key not in window
        assert seen.first(key) is expected
        if expected:
            window.append(key)
            del window[:-capacity]
        else:
            duplicates += 1
    assert seen.duplicates == duplicates


def test_seen_keys_two_threads_race_one_winner():
    for _ in range(50):
        seen = SeenKeys()
        wins, barrier = [], threading.Barrier(2)

        def arrive():
            barrier.wait()
            wins.append(seen.first(('req', 0, 0)))

        threads = [threading.Thread(target=arrive) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False, True]
