"""The base of the three stage nodes (perception, trace planner, action decoder): the engine they share,
the worker threads that run model work, and the in-process handoff of results between stages.

Topics and QoS come from :mod:`molmoact_ros.ros.topics`; each node's decisions from its core in
:mod:`molmoact_ros.cores`. Each node also publishes ``~/status`` (molmoact_msgs/NodeStatus). Nodes in one
process share one engine (:mod:`.engine_provider`) and hand over the KV cache of each request; a node in
another process rebuilds the request from the message content (one extra prefill). Nothing is published
while a node is inactive.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Optional

from molmoact_msgs.msg import NodeStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn

from ..ros.gc_tuning import freeze_startup_heap
from ..ros.handoff import PROCESS_BUS, SeenKeys, StageWorker
from ..ros.params import ParamSpec
from .base import MolmoActLifecycleNode
from .engine_provider import ENGINE_KEYS, ENGINE_PARAMETERS, PROCESS_PROVIDER, EngineProvider

STAGE_PARAMETERS = (
    ParamSpec('intra_process', True, 'When stages share a process, hand each result straight to the next stage '
              'in this process, which runs on the same thread right away (as rclcpp intra-process communication '
              'does; the message still goes out over DDS to every other subscriber); false: stages receive '
              'results only over DDS.', read_only=True),
)


class StageNode(MolmoActLifecycleNode):
    """A lifecycle node that attaches to the process's engine on configure and releases it on cleanup.

    Model work runs on the node's own worker thread (:class:`~molmoact_ros.ros.handoff.StageWorker`), fed by
    subscription callbacks that only enqueue: the executor's threads stay free for messages, services and
    lifecycle transitions. A result handed over in the same process (:meth:`publish_result`,
    :meth:`handoff_subscription`) starts the next stage at once, on the same thread (run to completion).
    Visualization outputs (markers, annotated and depth images) are built and published on a second
    thread of the node (:meth:`publish_visual`), so the next stage does not wait for them."""

    #: Called by the worker after every wake-up and every 0.1 s (subclasses: e.g. start an inference).
    idle_work = None

    def __init__(self, name: str, *, parameters=(), provider: Optional[EngineProvider] = None, **kwargs):
        self.engine = None
        self.provider = provider or PROCESS_PROVIDER
        self._work_group = MutuallyExclusiveCallbackGroup()
        self._work_lock = threading.Lock()
        self._worker: Optional[StageWorker] = None
        self._visual_worker: Optional[StageWorker] = None
        self._visual_lock = threading.Lock()
        self._intra = False
        self.local_inputs = 0  # inputs handed over in this process (intra_process) before DDS brought them
        super().__init__(name, parameters=(*ENGINE_PARAMETERS, *STAGE_PARAMETERS, *parameters), **kwargs)

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load (or attach to) the engine: slow the first time; FAILURE with a clear error otherwise."""
        super().on_configure(state)
        self.engine_state = NodeStatus.ENGINE_LOADING
        try:
            self.engine = self.provider.acquire({k: self.params[k] for k in ENGINE_KEYS})
        except Exception as exc:  # noqa: BLE001 - report, stay unconfigured
            result = self.fail_transition(f'engine failed to load: {type(exc).__name__}: {exc}')
            self.engine_state = NodeStatus.ENGINE_ERROR
            self.publish_status()
            return result
        self.engine_state = NodeStatus.ENGINE_READY
        self._intra = bool(self.params['intra_process'])
        idle = self.idle_work
        self._worker = self._own(StageWorker(f'{self.get_name()}_worker', on_error=self._work_error,
                                             idle=None if idle is None else self._gated_idle, idle_period_s=0.1),
                                 lambda worker: worker.stop())
        self._visual_worker = self._own(StageWorker(f'{self.get_name()}_visuals', on_error=self._work_error),
                                        lambda worker: worker.stop())
        # The model and the imports are in memory now: exempt them from full garbage collections, which
        # otherwise stall every thread of the process for 0.2-0.4 s at a time (molmoact_ros.ros.gc_tuning).
        freeze_startup_heap()
        self.publish_status()
        return TransitionCallbackReturn.SUCCESS

    # -- work and handoff -------------------------------------------------------------------------
    def _work_error(self, name: str, exc: BaseException) -> None:
        self.record_error(f'{name}: {type(exc).__name__}: {exc}')

    def _gated_idle(self) -> None:
        if self._active:
            try:
                self.idle_work()
            except Exception as exc:  # noqa: BLE001 - bad input is reported, the node keeps running
                self._work_error('inference', exc)

    def handoff_subscription(self, msg_type, topic: str, callback, qos, key, *, on_worker: bool = True):
        """Subscribe to ``topic`` over DDS and, with ``intra_process``, to results published in this process
        (:meth:`publish_result`). Each message (identified by ``key(msg)``) is handled once, whichever way
        it comes first: on the worker thread, or at once in the receiving thread (``on_worker=False``, for
        cheap bookkeeping). A result published in this process by another stage's worker thread runs on
        that thread right after the publishing work item returns (no thread wake-up on the critical path)."""
        seen = SeenKeys()

        def accept(msg, local=False):
            if not seen.first(key(msg)):
                return
            self.inputs_received += 1
            self.local_inputs += int(local)
            if not self._active:
                self.inputs_dropped += 1
                return
            if on_worker:
                here = StageWorker.current() if local else None
                if here is not None:
                    here.defer(self._worker.run_here, callback, msg)
                else:
                    self._worker.submit(callback, msg)
                return
            try:
                callback(msg)
            except Exception as exc:  # noqa: BLE001 - a bad input must not kill the node
                self._work_error(callback.__name__, exc)

        sub = self.subscription(msg_type, topic, accept, qos)
        if self._intra:
            token = PROCESS_BUS.subscribe(id(self.context), sub.topic_name, lambda msg: accept(msg, local=True))
            self._own(token, PROCESS_BUS.unsubscribe)
        return sub

    def publish_result(self, publisher, msg) -> None:
        """With ``intra_process``, hand ``msg`` to the subscribers of its topic in this process (the same
        object: they must not modify it), then publish it over DDS. A receiving stage runs once the calling
        work item returns (see :meth:`handoff_subscription`)."""
        if self._intra and self._active:
            PROCESS_BUS.deliver(id(self.context), publisher.topic_name, msg)
        publisher.publish(msg)

    def publish_visual(self, fn, *args) -> None:
        """Run ``fn(*args)`` (build and publish a visualization) on the node's visuals thread while active.
        :meth:`on_deactivate` waits for one in progress; later ones are skipped."""
        def run():
            with self._visual_lock:
                if self._active:
                    fn(*args)
        run.__name__ = getattr(fn, '__name__', 'visual')
        if self._visual_worker is not None:
            self._visual_worker.submit(run)

    def _stop_visuals(self) -> None:
        """After ``_active`` is cleared: wait for a visualization in progress (none starts after)."""
        with self._visual_lock:
            pass

    def stop_workers(self, timeout_s: float = 30.0) -> bool:
        """Stop the stage's threads after the call in progress (pending calls are discarded); True when both
        ended. For a process that exits without the lifecycle bring-down (a signal shut the context down):
        the interpreter must not end while a worker is inside the model, where killing the daemon thread
        aborts the process ('terminate called without an active exception')."""
        ended = True
        for worker in (self._worker, self._visual_worker):
            if worker is not None:
                ended = worker.stop(timeout_s) and ended
        return ended

    def release_resources(self) -> None:
        """Destroy what configure made, then release the engine (the weights are freed when no node of the
        process uses them): cleanup, shutdown and every failed configure."""
        super().release_resources()
        if self.engine is not None:
            self.engine = None
            self.provider.release()
        self.engine_state = NodeStatus.ENGINE_UNLOADED

    @contextlib.contextmanager
    def working(self, request_id: str):
        """Hold the node's work lock while a request is processed: deactivate waits for it, so no result
        is published (and the engine is not released) mid-request. Yields False when the node stopped
        being active while the request waited."""
        with self._work_lock:
            if not self.is_active:
                self.inputs_dropped += 1
                yield False
                return
            self.engine_state = NodeStatus.ENGINE_BUSY
            self.current_request_id = request_id
            start = time.monotonic()
            try:
                yield True
            finally:
                self.engine_state = NodeStatus.ENGINE_READY
                self.current_request_id = ''
                self.last_latency_s = time.monotonic() - start
                self.publish_status()

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop taking inputs, wait for the request in flight (if any) to finish, then stop publishing."""
        self._active = False
        with self._work_lock:
            pass
        self._stop_visuals()
        return super().on_deactivate(state)

