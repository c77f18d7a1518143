"""The start-up heap freeze: what it exempts from garbage collection and what it still collects."""

import gc
import weakref

import pytest

from molmoact_ros.ros.gc_tuning import ENV, freeze_enabled, freeze_startup_heap


class _Cycle:
    def __init__(self):
        self.me = self


@pytest.fixture
def thawed():
    gc.unfreeze()
    yield
    gc.unfreeze()


def _tracked(obj) -> bool:
    """Whether ``obj`` is in a generation the collector scans (frozen objects are in none of them)."""
    return any(o is obj for o in gc.get_objects())


@pytest.mark.parametrize('value,enabled', [(None, True), ('1', True), ('yes', True), ('0', False),
                                           ('false', False), (' OFF ', False), ('no', False)])
def test_freeze_enabled_reads_the_environment(value, enabled):
    environ = {} if value is None else {ENV: value}
    assert freeze_enabled(environ) is enabled


def test_objects_alive_at_the_freeze_are_no_longer_scanned(thawed):
    survivor = _Cycle()
    garbage = _Cycle()
    ref = weakref.ref(garbage)
    del garbage
    assert _tracked(survivor)
    frozen = freeze_startup_heap({})
    # What it returns is the permanent generation's size at the freeze; other threads of the test process (left
    # by earlier tests) may free frozen objects right after, so the count can only have shrunk since.
    assert frozen > 0 and 0 < gc.get_freeze_count() <= frozen
    assert not _tracked(survivor)
    # the garbage present at the call was collected first, not frozen
    assert ref() is None
    gc.unfreeze()
    assert _tracked(survivor)


def test_cycles_created_after_the_freeze_are_still_collected(thawed):
    freeze_startup_heap({})
    before = gc.get_freeze_count()
    later = _Cycle()
    assert _tracked(later)
    ref = weakref.ref(later)
    del later
    assert ref() is not None  # a cycle: reference counting alone does not free it
    gc.collect()
    assert ref() is None
    assert gc.get_freeze_count() == before


def test_disabled_freezes_nothing(thawed):
    survivor = _Cycle()
    assert freeze_startup_heap({ENV: '0'}) == 0
    assert gc.get_freeze_count() == 0 and _tracked(survivor)
