"""molmoact_ros.ros.diagnostics: NodeStatus -> DiagnosticStatus levels, key-values, aggregation."""

from builtin_interfaces.msg import Time
from molmoact_msgs.msg import NodeStatus

from molmoact_ros.ros.diagnostics import (ERROR, OK, STALE, WARN, DiagnosticsAggregator, level_of,
                                          status_to_diagnostics)


def _status(name='/perception', t=100.0, engine=NodeStatus.ENGINE_READY, received=0, dropped=0, error='',
            error_t=None, **fields):
    msg = NodeStatus(node_name=name, lifecycle_state=3, lifecycle_label='active', engine_state=engine,
                     inputs_received=received, inputs_dropped=dropped, last_error=error, **fields)
    msg.header.stamp = Time(sec=int(t), nanosec=int(round((t % 1) * 1e9)))
    if error_t is not None:
        msg.last_error_stamp = Time(sec=int(error_t), nanosec=int(round((error_t % 1) * 1e9)))
    return msg


def _values(diag):
    return {kv.key: kv.value for kv in diag.values}


def test_ok_and_key_values():
    diag = status_to_diagnostics(_status(received=7, dropped=2, requests_completed=5, errors=0, last_latency_s=0.4567,
                                         current_request_id='r1'), hardware_id='arm')
    assert level_of(diag) == OK and diag.name == '/perception' and diag.hardware_id == 'arm'
    assert diag.message == 'active, engine ready'
    assert _values(diag) == {'lifecycle state': 'active', 'engine state': 'ready', 'execution enabled': 'false',
                             'latency s': '0.457', 'inputs received': '7', 'inputs dropped': '2',
                             'requests completed': '5', 'errors': '0', 'current request': 'r1', 'last error': ''}
    assert isinstance(diag.level, bytes)


def test_engine_loading_warns_and_engine_error_errors():
    assert level_of(status_to_diagnostics(_status(engine=NodeStatus.ENGINE_LOADING))) == WARN
    diag = status_to_diagnostics(_status(engine=NodeStatus.ENGINE_ERROR, error='engine failed to load: OOM',
                                         error_t=10.0))  # old error, but the engine is still in error
    assert level_of(diag) == ERROR and 'engine error' in diag.message and 'OOM' in diag.message
    assert _values(diag)['engine state'] == 'error'


def test_recent_error_window():
    recent = status_to_diagnostics(_status(t=100.0, error='bad image', error_t=95.5, errors=1))
    assert level_of(recent) == ERROR and 'bad image' in recent.message and '4.5 s ago' in recent.message
    old = status_to_diagnostics(_status(t=100.0, error='bad image', error_t=80.0, errors=1))
    assert level_of(old) == OK and _values(old)['last error'] == 'bad image'
    assert level_of(status_to_diagnostics(_status(t=100.0, error='x', error_t=80.0), error_window_s=30.0)) == ERROR
    assert level_of(status_to_diagnostics(_status(error='x'))) == OK  # no stamp: not "recent"


def test_drops_growing_warns():
    first = _status(received=10, dropped=1)
    grown = _status(received=20, dropped=4)
    assert level_of(status_to_diagnostics(first)) == OK
    diag = status_to_diagnostics(grown, previous=first)
    assert level_of(diag) == WARN and '3 input(s) dropped' in diag.message
    assert level_of(status_to_diagnostics(grown, previous=first, drop_warn_fraction=0.5)) == OK  # 3/10 <= 0.5
    assert level_of(status_to_diagnostics(_status(received=20, dropped=1), previous=first)) == OK
    # counters reset on configure: no comparison across epochs
    assert level_of(status_to_diagnostics(_status(received=2, dropped=0), previous=first)) == OK
    assert level_of(status_to_diagnostics(grown, previous=_status(name='/other', received=10))) == OK


def test_error_outranks_warn():
    diag = status_to_diagnostics(_status(engine=NodeStatus.ENGINE_LOADING, error='boom', error_t=99.0))
    assert level_of(diag) == ERROR and 'engine loading' in diag.message and 'boom' in diag.message


def test_aggregator_latest_per_node_drops_and_stale():
    agg = DiagnosticsAggregator(stale_after_s=5.0)
    agg.update(_status(name='/trace_planner', t=100.0))
    agg.update(_status(name='/perception', t=100.0, received=10, dropped=0))
    assert level_of(agg.update(_status(name='/perception', t=101.0, received=20, dropped=5))) == WARN
    array = agg.array(stamp=Time(sec=101))
    assert [s.name for s in array.status] == ['/perception', '/trace_planner']
    assert [level_of(s) for s in array.status] == [WARN, OK] and array.header.stamp.sec == 101
    assert _values(array.status[0])['inputs dropped'] == '5'
    stale = agg.array(now_s=105.5)
    assert [level_of(s) for s in stale.status] == [WARN, STALE] and 'no status for 5.5 s' in stale.status[1].message
    agg.forget('/trace_planner')
    assert agg.node_names == ['/perception'] and agg.status('/trace_planner') is None
