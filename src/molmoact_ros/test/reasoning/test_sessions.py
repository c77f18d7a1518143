"""Live-request store: count, age and memory bounds hold under any sequence of operations."""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, strategies as st

from molmoact_ros.reasoning.sessions import Session, SessionError, SessionLimits, SessionStore, cache_bytes


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_cache(n_bytes: int):
    """An object shaped like a transformers DynamicCache holding n_bytes of float32 tensors."""
    n = n_bytes // 8
    layer = SimpleNamespace(keys=torch.zeros(n), values=torch.zeros(n))
    return SimpleNamespace(layers=[layer])


def test_cache_bytes_counts_keys_and_values():
    assert cache_bytes(fake_cache(800)) == 800
    assert cache_bytes(None) == 0


def test_count_bound_evicts_least_recently_used():
    evicted = []
    store = SessionStore(SessionLimits(max_sessions=2), on_evict=lambda s, r: evicted.append((s.request_id, r)))
    for rid in 'abc':
        store.add(Session(rid, 'x', [1]))
        if rid == 'b':
            store.get('a')  # a becomes most recently used
    assert store.ids() == ['a', 'c'] and evicted == [('b', 'count')]
    with pytest.raises(SessionError, match="request 'b' is not live"):
        store.get('b')


def test_age_bound_expires_on_access():
    clock = Clock()
    store = SessionStore(SessionLimits(max_age_s=10), clock=clock)
    store.add(Session('a', 'x', [1]))
    clock.now = 10.5
    with pytest.raises(SessionError):
        store.get('a')
    assert len(store) == 0 and store.evictions == 1


def test_memory_bound_keeps_the_current_request():
    store = SessionStore(SessionLimits(max_cache_bytes=1000))
    store.add(Session('a', 'x', [1], cache=fake_cache(600)))
    store.add(Session('b', 'x', [1], cache=fake_cache(600)))
    assert store.ids() == ['b']
    big = store.add(Session('c', 'x', [1], cache=fake_cache(4000)))  # alone over budget: kept
    assert store.ids() == ['c'] and big.memory_bytes() == 4000
    assert store.release('c') and not store.release('c')


ops = st.lists(st.tuples(st.sampled_from(['add', 'get', 'release', 'tick']), st.integers(0, 5),
                         st.integers(0, 700)), max_size=60)


@given(ops)
def test_bounds_hold_under_any_sequence(sequence):
    clock = Clock()
    limits = SessionLimits(max_sessions=3, max_age_s=5.0, max_cache_bytes=1500)
    store = SessionStore(limits, clock=clock)
    for op, key, size in sequence:
        rid = f'r{key}'
        if op == 'add':
            store.add(Session(rid, 'x', [1], cache=fake_cache(size)))
        elif op == 'get':
            try:
                store.get(rid)
            except SessionError:
                pass
        elif op == 'release':
            store.release(rid)
        else:
            clock.now += size / 100.0
        assert len(store) <= limits.max_sessions
        if op in ('add', 'get') and len(store) > 1:
            assert store.memory_bytes() <= limits.max_cache_bytes
        if op == 'get':
            assert all(clock.now - store._sessions[r].created_s <= limits.max_age_s for r in store.ids())
