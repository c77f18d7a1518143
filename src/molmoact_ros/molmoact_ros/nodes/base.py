"""Base class of the suite's lifecycle nodes.

What every node of the pipeline shares, following the ros2/demos ``lifecycle_py`` pattern:

* parameters declared from :class:`~molmoact_ros.ros.params.ParamSpec` tables (description + range);
* a latched ``~/status`` (``molmoact_msgs/NodeStatus``) published on every transition, on every error
  and every ``status_period_s``, in every state until shutdown (so a failed configure is visible);
* input gating: rclpy manages only lifecycle *publishers*; subscriptions and timers keep firing while a
  node is inactive, so callbacks must check :attr:`is_active` (or use :meth:`gate`);
* errors recorded with :meth:`record_error` (counted, logged once, shown on the status) instead of
  exceptions escaping into the executor: bad input never kills a node;
* ownership of what configure creates (:meth:`lifecycle_publisher`, :meth:`subscription`, :meth:`service`,
  :meth:`timer`, :meth:`own`): destroyed in reverse order by cleanup, shutdown and a failed configure
  (:meth:`release_resources`), after which :meth:`_reset` forgets the per-configure state;
* the failure path of every transition: :meth:`fail_transition` releases what was made, returns the node to
  unconfigured, records the reason and returns FAILURE.

Subclasses override the ``on_*`` transitions and call ``super()`` first on configure/activate and last
on deactivate/cleanup/shutdown.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Callable, Sequence, Tuple

from diagnostic_msgs.msg import DiagnosticArray, KeyValue
from lifecycle_msgs.msg import State
from molmoact_msgs.msg import NodeStatus
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from molmoact_ros.cores.quoting import bound
from molmoact_ros.ros.diagnostics import status_to_diagnostics
from molmoact_ros.ros.params import ParamSpec, declare_parameters
from molmoact_ros.ros.topics import DIAGNOSTICS, LATCHED, STATUS

BASE_PARAMETERS = (
    ParamSpec('status_period_s', 1.0,
              'Seconds between periodic ~/status reports (published in every lifecycle state until shutdown).',
              min_value=0.05, max_value=60.0),
)

# Latched so that a monitor (or a test) that subscribes late still receives the current status.
STATUS_QOS = LATCHED


class LiveParameters(Mapping):
    """Read-only mapping of the node's current parameter values (reflects later sets)."""

    def __init__(self, node):
        self._node = node

    def __getitem__(self, name):
        if not self._node.has_parameter(name):
            raise KeyError(name)
        return self._node.get_parameter(name).value

    def __iter__(self):
        return iter(self._node._parameters)

    def __len__(self):
        return len(self._node._parameters)


class MolmoActLifecycleNode(LifecycleNode):
    """Lifecycle node with typed parameters, a ``~/status`` topic and input gating."""

    engine_state = NodeStatus.ENGINE_NONE
    #: Share of new inputs dropped between two reports above which /diagnostics warns (0: any drop).
    drop_warn_fraction = 0.0

    def __init__(self, node_name: str, *, parameters: Sequence[ParamSpec] = (), **kwargs):
        # Attributes used by transition callbacks exist before the base class can call them.
        self._status_pub = None
        self._status_timer = None
        self._diagnostics_pub = None
        self._previous_status = None
        self._active = False
        self._owned = []  # (entity, destroy) made in configure, destroyed in reverse by release_resources
        self._state_id = State.PRIMARY_STATE_UNCONFIGURED
        self._state_label = 'unconfigured'
        self.reset_counters()
        self.current_request_id = ''
        self.last_latency_s = 0.0
        self.last_error = ''
        self.last_error_stamp = None
        super().__init__(node_name, **kwargs)
        declare_parameters(self, (*BASE_PARAMETERS, *parameters))
        self.params = LiveParameters(self)
        # ~/status is a plain publisher, not a lifecycle one: it reports in every state.
        self._status_pub = self.create_publisher(NodeStatus, STATUS, STATUS_QOS)
        # The standard diagnostics topic (absolute by convention; the diagnostic aggregator reads it).
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self._status_timer = self.create_timer(float(self.params['status_period_s']), self.publish_status)
        self.publish_status()

    # -- state ----------------------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        """True between a successful activate and the next deactivate/cleanup/shutdown."""
        return self._active

    @property
    def lifecycle_label(self) -> str:
        return self._state_label

    def reset_counters(self) -> None:
        self.inputs_received = 0
        self.inputs_dropped = 0
        self.requests_completed = 0
        self.errors = 0

    def execution_enabled(self) -> bool:
        """Whether this node may command the arm now. Only command sinks override this."""
        return False

    def gate(self, callback: Callable, *, count_inputs: bool = True, while_inactive: bool = False) -> Callable:
        """Wrap a subscription/timer callback: drop calls unless active, and turn any exception into
        a recorded error so the node keeps running. With ``count_inputs`` (subscriptions) calls are
        counted as inputs received / dropped on ~/status; timers pass ``count_inputs=False``.
        ``while_inactive`` keeps inputs that configure the work rather than trigger it (an instruction,
        camera calibration): a latched instruction arrives as soon as configure subscribes, before
        activate, and must not be lost."""

        @functools.wraps(callback)
        def gated(*args, **kwargs):
            if count_inputs:
                self.inputs_received += 1
            if not self._active and not while_inactive:
                if count_inputs:
                    self.inputs_dropped += 1
                return None
            try:
                return callback(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a bad input must not kill the node
                self.record_error(f'{callback.__name__}: {type(exc).__name__}: {exc}')
                return None

        return gated

    def record_error(self, message: str) -> None:
        """Count and log an error and show it on ~/status. The node keeps running.

        The text is bounded (:func:`~molmoact_ros.cores.quoting.bound`): an error that echoes its input
        (a 100 KB request id) must not become a 100 KB line re-published on ~/status every period. Quote
        input in error texts with :func:`~molmoact_ros.cores.quoting.quote`."""
        message = bound(message)
        self.errors += 1
        self.last_error = message
        self.last_error_stamp = self.get_clock().now().to_msg()
        self.get_logger().error(message)
        self.publish_status()

    # -- status ---------------------------------------------------------------------------------
    def build_status(self) -> NodeStatus:
        msg = NodeStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.node_name = self.get_fully_qualified_name()
        msg.lifecycle_state = self._state_id
        msg.lifecycle_label = self._state_label
        msg.engine_state = self.engine_state
        msg.execution_enabled = bool(self._active and self.execution_enabled())
        msg.inputs_received = self.inputs_received
        msg.inputs_dropped = self.inputs_dropped
        msg.requests_completed = self.requests_completed
        msg.errors = self.errors
        msg.current_request_id = self.current_request_id
        msg.last_latency_s = float(self.last_latency_s)
        msg.last_error = self.last_error
        if self.last_error_stamp is not None:
            msg.last_error_stamp = self.last_error_stamp
        return msg

    def diagnostic_values(self) -> Sequence[Tuple[str, str]]:
        """(key, value) pairs of the node's own figures, added to its /diagnostics status (none here)."""
        return ()

    def publish_status(self) -> None:
        """Publish ~/status and the same report, with :meth:`diagnostic_values`, on /diagnostics.

        Nothing once the node's context is shut down (SIGINT / SIGTERM): a worker thread that records its
        last error then must not die of the publish (it did, and the process hung)."""
        if self._status_pub is None or not self.context.ok():
            return
        status = self.build_status()
        self._status_pub.publish(status)
        if self._diagnostics_pub is not None:
            diag = status_to_diagnostics(status, previous=self._previous_status,
                                         drop_warn_fraction=self.drop_warn_fraction)
            diag.values.extend(KeyValue(key=k, value=v) for k, v in self.diagnostic_values())
            self._diagnostics_pub.publish(DiagnosticArray(header=status.header, status=[diag]))
        self._previous_status = status

    def _set_state(self, state_id: int, label: str) -> None:
        self._state_id = state_id
        self._state_label = label
        self.publish_status()

    # -- what configure makes, and its release --------------------------------------------------
    def own(self, entity, destroy: Callable):
        """Keep ``entity`` until :meth:`release_resources`, which calls ``destroy(entity)``."""
        self._owned.append((entity, destroy))
        return entity

    _own = own  # the name the nodes have always used

    def lifecycle_publisher(self, msg_type, topic, qos):
        return self.own(self.create_lifecycle_publisher(msg_type, topic, qos), self.destroy_lifecycle_publisher)

    def subscription(self, msg_type, topic, callback, qos, **kwargs):
        return self.own(self.create_subscription(msg_type, topic, callback, qos, **kwargs), self.destroy_subscription)

    def service(self, srv_type, name, callback, **kwargs):
        return self.own(self.create_service(srv_type, name, callback, **kwargs), self.destroy_service)

    def timer(self, period_s, callback, **kwargs):
        return self.own(self.create_timer(period_s, callback, **kwargs), self.destroy_timer)

    def _teardown(self) -> None:
        for entity, destroy in reversed(self._owned):
            destroy(entity)
        self._owned = []
        self._reset()

    def _reset(self) -> None:
        """Forget the state made in configure (subclasses; called after the owned entities are destroyed)."""

    def release_resources(self) -> None:
        """Destroy what configure made (cleanup, shutdown, a failed configure). Subclasses that hold more
        (an engine) extend it."""
        self._teardown()

    def fail_transition(self, message: str) -> TransitionCallbackReturn:
        """The failure path of a transition (a failed configure): release what it made, go back to
        unconfigured, record why, and return FAILURE (the node stays usable: configure may be retried)."""
        self._active = False
        self.release_resources()
        self._state_id, self._state_label = State.PRIMARY_STATE_UNCONFIGURED, 'unconfigured'
        self.record_error(message)
        return TransitionCallbackReturn.FAILURE

    # -- transitions ----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Reset counters and errors. Subclasses then load resources (engine, publishers)."""
        self.reset_counters()
        self.last_error = ''
        self.last_error_stamp = None
        self._set_state(State.PRIMARY_STATE_INACTIVE, 'inactive')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable lifecycle publishers and start accepting inputs."""
        result = super().on_activate(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._active = True
        self._set_state(State.PRIMARY_STATE_ACTIVE, 'active')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop accepting inputs and disable lifecycle publishers (nothing is published after)."""
        self._active = False
        result = super().on_deactivate(state)
        self._set_state(State.PRIMARY_STATE_INACTIVE, 'inactive')
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release what configure created; the node returns to unconfigured."""
        self._active = False
        self.release_resources()
        self._set_state(State.PRIMARY_STATE_UNCONFIGURED, 'unconfigured')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything; the node is finalized and accepts no further transitions."""
        self._active = False
        self.release_resources()
        self._set_state(State.PRIMARY_STATE_FINALIZED, 'finalized')
        self._destroy_status()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: stop processing and fall back to unconfigured."""
        self._active = False
        self._state_id, self._state_label = State.PRIMARY_STATE_UNCONFIGURED, 'unconfigured'
        self.record_error(f'error during transition from {state.label!r}')
        return TransitionCallbackReturn.SUCCESS

    def _destroy_status(self) -> None:
        if self._status_timer is not None:
            self.destroy_timer(self._status_timer)
            self._status_timer = None
        if self._status_pub is not None:
            self.destroy_publisher(self._status_pub)
            self._status_pub = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
