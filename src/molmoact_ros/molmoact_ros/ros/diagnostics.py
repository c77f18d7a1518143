"""``molmoact_msgs/NodeStatus`` -> ``diagnostic_msgs/DiagnosticStatus`` (for ``/diagnostics``).

Pure message logic, no node: :func:`status_to_diagnostics` converts one status report;
:class:`DiagnosticsAggregator` keeps the latest report per node and builds a ``DiagnosticArray``.

Levels (the highest applicable wins):

* ERROR: the engine is in error, or ``last_error`` happened within ``error_window_s`` of the report
  (both stamps are the node's clock, so simulation time is handled);
* WARN: the engine is loading, or ``inputs_dropped`` grew since the previous report by more than
  ``drop_warn_fraction`` of the inputs received meanwhile (default 0: any growth; perception drops
  superseded camera frames by design, so a monitor may raise the fraction for it);
* STALE (aggregator only): no report for ``stale_after_s``;
* OK otherwise (an inactive or unconfigured node is OK: its state is in the message).
"""

from __future__ import annotations

from typing import Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from molmoact_msgs.msg import NodeStatus

__all__ = ['OK', 'WARN', 'ERROR', 'STALE', 'level_of', 'ENGINE_STATE_NAMES', 'ERROR_WINDOW_S', 'status_to_diagnostics', 'DiagnosticsAggregator', 'stamp_s']

ERROR_WINDOW_S = 10.0

ENGINE_STATE_NAMES = {
    NodeStatus.ENGINE_NONE: 'none',
    NodeStatus.ENGINE_UNLOADED: 'unloaded',
    NodeStatus.ENGINE_LOADING: 'loading',
    NodeStatus.ENGINE_READY: 'ready',
    NodeStatus.ENGINE_BUSY: 'busy',
    NodeStatus.ENGINE_ERROR: 'error',
}


def _as_int(level) -> int:
    return level[0] if isinstance(level, (bytes, bytearray)) else int(level)


# DiagnosticStatus levels are ``byte`` fields (Python bytes); compared here as ints.
OK, WARN, ERROR, STALE = (_as_int(x) for x in (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                                                DiagnosticStatus.STALE))


def level_of(diag: DiagnosticStatus) -> int:
    """A DiagnosticStatus's level as an int (0 OK, 1 WARN, 2 ERROR, 3 STALE)."""
    return _as_int(diag.level)


def stamp_s(stamp) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def _level_byte(level: int) -> bytes:
    return bytes([level])


def _drops_growing(status: NodeStatus, previous: Optional[NodeStatus], fraction: float) -> int:
    """New drops since ``previous`` when they exceed ``fraction`` of the new inputs, else 0. Counters reset on
    configure, so a decrease means a new epoch: nothing is compared."""
    if previous is None or previous.node_name != status.node_name:
        return 0
    new_drops = int(status.inputs_dropped) - int(previous.inputs_dropped)
    new_inputs = int(status.inputs_received) - int(previous.inputs_received)
    if new_drops <= 0 or new_inputs < 0:
        return 0
    if new_inputs > 0 and new_drops <= fraction * new_inputs:
        return 0
    return new_drops


def status_to_diagnostics(status_msg: NodeStatus, hardware_id: str = 'molmoact', *,
                          previous: Optional[NodeStatus] = None, error_window_s: float = ERROR_WINDOW_S,
                          drop_warn_fraction: float = 0.0) -> DiagnosticStatus:
    """One node's status report as a DiagnosticStatus (name = the node's fully qualified name).

    ``previous``: the node's previous report, to detect growing drops. ``error_window_s``: how long a
    recorded error keeps the level at ERROR (measured on the node's clock: report stamp - error stamp).
    """
    s = status_msg
    engine = ENGINE_STATE_NAMES.get(s.engine_state, f'unknown ({s.engine_state})')
    lifecycle = s.lifecycle_label or f'state {s.lifecycle_state}'
    level, reasons = OK, []

    if s.engine_state == NodeStatus.ENGINE_ERROR:
        level = ERROR
        reasons.append('engine error' + (f': {s.last_error}' if s.last_error else ''))
    elif s.last_error and stamp_s(s.last_error_stamp) > 0.0:
        age = stamp_s(s.header.stamp) - stamp_s(s.last_error_stamp)
        if age <= error_window_s:
            level = ERROR
            reasons.append(f'error {max(age, 0.0):.1f} s ago: {s.last_error}')
    if s.engine_state == NodeStatus.ENGINE_LOADING:
        level = max(level, WARN)
        reasons.append('engine loading')
    dropped = _drops_growing(s, previous, drop_warn_fraction)
    if dropped:
        level = max(level, WARN)
        reasons.append(f'{dropped} input(s) dropped since the last report')

    out = DiagnosticStatus()
    out.level = _level_byte(level)
    out.name = s.node_name
    out.hardware_id = hardware_id
    summary = f'{lifecycle}, engine {engine}'
    out.message = summary + ('; ' + '; '.join(reasons) if reasons else '')
    values = [
        ('lifecycle state', lifecycle),
        ('engine state', engine),
        ('execution enabled', 'true' if s.execution_enabled else 'false'),
        ('latency s', f'{s.last_latency_s:.3f}'),
        ('inputs received', str(s.inputs_received)),
        ('inputs dropped', str(s.inputs_dropped)),
        ('requests completed', str(s.requests_completed)),
        ('errors', str(s.errors)),
        ('current request', s.current_request_id),
        ('last error', s.last_error),
    ]
    out.values = [KeyValue(key=k, value=v) for k, v in values]
    return out


class DiagnosticsAggregator:
    """The latest status per node -> one DiagnosticArray (sorted by node name).

    ``stale_after_s``: with ``now_s`` given to :meth:`array`, a node whose last report (received time, on the
    caller's clock) is older than this is reported STALE.
    """

    def __init__(self, hardware_id: str = 'molmoact', *, error_window_s: float = ERROR_WINDOW_S,
                 drop_warn_fraction: float = 0.0, stale_after_s: float = 5.0):
        self.hardware_id = hardware_id
        self.error_window_s = error_window_s
        self.drop_warn_fraction = drop_warn_fraction
        self.stale_after_s = stale_after_s
        self._latest: Dict[str, DiagnosticStatus] = {}
        self._status: Dict[str, NodeStatus] = {}
        self._received_s: Dict[str, float] = {}

    def update(self, status_msg: NodeStatus, received_s: Optional[float] = None) -> DiagnosticStatus:
        """Record a node's report (compared with its previous one) and return its DiagnosticStatus."""
        name = status_msg.node_name
        diag = status_to_diagnostics(status_msg, self.hardware_id, previous=self._status.get(name),
                                     error_window_s=self.error_window_s,
                                     drop_warn_fraction=self.drop_warn_fraction)
        self._status[name] = status_msg
        self._latest[name] = diag
        self._received_s[name] = stamp_s(status_msg.header.stamp) if received_s is None else float(received_s)
        return diag

    def forget(self, node_name: str) -> None:
        for table in (self._latest, self._status, self._received_s):
            table.pop(node_name, None)

    @property
    def node_names(self):
        return sorted(self._latest)

    def status(self, node_name: str) -> Optional[DiagnosticStatus]:
        return self._latest.get(node_name)

    def array(self, stamp=None, now_s: Optional[float] = None) -> DiagnosticArray:
        """A DiagnosticArray of every node's latest status; ``stamp`` (builtin_interfaces/Time) for the header."""
        msg = DiagnosticArray()
        if stamp is not None:
            msg.header.stamp = stamp
        for name in self.node_names:
            diag = self._latest[name]
            if now_s is not None and now_s - self._received_s[name] > self.stale_after_s:
                stale = DiagnosticStatus(name=diag.name, hardware_id=diag.hardware_id, values=list(diag.values),
                                         message=f'no status for {now_s - self._received_s[name]:.1f} s '
                                                 f'(last: {diag.message})')
                stale.level = _level_byte(STALE)
                diag = stale
            msg.status.append(diag)
        return msg
