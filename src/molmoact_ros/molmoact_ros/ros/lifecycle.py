"""Drive lifecycle nodes through their transitions with plain rclpy service calls.

This is what brings the pipeline up where launch_ros is absent (and what the one-process runner and the
tests use): configure every node, then activate every node, in order, stopping at the first failure.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from rclpy.node import Node

# Transition labels as reported by lifecycle_msgs/srv/GetAvailableTransitions (rcl_lifecycle's names),
# and the primary state a successful transition ends in.
PRIMARY_STATE_AFTER = {
    'configure': 'inactive',
    'activate': 'active',
    'deactivate': 'inactive',
    'cleanup': 'unconfigured',
    'shutdown': 'finalized',
}
TRANSITION_LABELS = tuple(PRIMARY_STATE_AFTER)


class LifecycleError(RuntimeError):
    """A lifecycle service did not answer in time, or a transition was refused or failed."""


@dataclass(frozen=True)
class TransitionResult:
    node: str
    transition: str
    success: bool
    state_after: str
    seconds: float


class LifecycleClient:
    """Client for the lifecycle services of one node (``<node>/change_state`` and friends).

    ``node`` is the rclpy node that owns the service clients. If that node is spun by an executor in
    another thread, pass ``spinning=True`` so calls wait on their futures instead of spinning it here.
    """

    def __init__(self, node: Node, target: str, *, timeout_s: float = 10.0, spinning: bool = False):
        if not target.startswith('/'):
            ns = node.get_namespace().rstrip('/')
            target = f'{ns}/{target}'
        self.target = target
        self.timeout_s = float(timeout_s)
        self._node = node
        self._spinning = spinning
        self._change = node.create_client(ChangeState, f'{target}/change_state')
        self._get = node.create_client(GetState, f'{target}/get_state')
        self._avail = node.create_client(GetAvailableTransitions, f'{target}/get_available_transitions')

    def wait_for_services(self, timeout_s: Optional[float] = None) -> None:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        for client in (self._change, self._get, self._avail):
            remaining = max(0.0, deadline - time.monotonic())
            if not client.wait_for_service(timeout_sec=remaining):
                raise LifecycleError(f'{client.srv_name} not available after '
                                     f'{self.timeout_s if timeout_s is None else timeout_s:.1f} s')

    def _call(self, client, request):
        future = client.call_async(request)
        if self._spinning:
            done = threading.Event()
            future.add_done_callback(lambda _f: done.set())
            done.wait(self.timeout_s)
        else:
            rclpy.spin_until_future_complete(self._node, future, timeout_sec=self.timeout_s)
        if not future.done():
            future.cancel()
            raise LifecycleError(f'{client.srv_name} did not answer within {self.timeout_s:.1f} s')
        if future.exception() is not None:
            raise LifecycleError(f'{client.srv_name} failed: {future.exception()}')
        return future.result()

    def get_state(self) -> Tuple[int, str]:
        """Current state as (lifecycle_msgs/State id, label)."""
        res = self._call(self._get, GetState.Request())
        return res.current_state.id, res.current_state.label

    def available_transitions(self) -> List[Tuple[int, str]]:
        """Transitions available now as (transition id, label)."""
        res = self._call(self._avail, GetAvailableTransitions.Request())
        return [(t.transition.id, t.transition.label) for t in res.available_transitions]

    def change_state(self, transition: str) -> TransitionResult:
        """Trigger the transition with this label ('configure', 'activate', 'deactivate', 'cleanup',
        'shutdown') from the current state. Raises LifecycleError if it is not available now."""
        if transition not in TRANSITION_LABELS:
            raise ValueError(f'unknown transition {transition!r}; expected one of {TRANSITION_LABELS}')
        available = self.available_transitions()
        ids = [tid for tid, label in available if label == transition]
        if not ids:
            _, state = self.get_state()
            raise LifecycleError(f'{self.target}: transition {transition!r} not available in state '
                                 f'{state!r} (available: {[label for _, label in available]})')
        start = time.monotonic()
        req = ChangeState.Request()
        req.transition = Transition(id=ids[0])
        res = self._call(self._change, req)
        seconds = time.monotonic() - start
        if res.success:
            # Known from the transition, not a second query: after shutdown the process may be gone.
            state_after = PRIMARY_STATE_AFTER[transition]
        else:
            try:
                state_after = self.get_state()[1]
            except LifecycleError:
                state_after = 'unknown'
        return TransitionResult(self.target, transition, bool(res.success), state_after, seconds)


def walk(clients: Sequence[LifecycleClient], transitions: Iterable[str]) -> List[TransitionResult]:
    """Apply each transition to every client in order (all nodes configure, then all activate, ...).

    Stops and raises LifecycleError at the first failed transition, naming the node and the state it
    was left in; the results so far are attached as ``error.results``.
    """
    results: List[TransitionResult] = []
    for transition in transitions:
        for client in clients:
            result = client.change_state(transition)
            results.append(result)
            if not result.success:
                err = LifecycleError(f'{result.node}: {transition} failed; node is now '
                                     f'{result.state_after!r}')
                err.results = results
                raise err
    return results


def bring_up(clients: Sequence[LifecycleClient]) -> List[TransitionResult]:
    """Configure all nodes, then activate all nodes, in the given order."""
    for client in clients:
        client.wait_for_services()
    return walk(clients, ('configure', 'activate'))
