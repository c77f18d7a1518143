"""The command sink's control_msgs/action/GripperCommand client (GripperActionController).

:class:`GripperAction` owns the rclpy ActionClient and its bookkeeping (goal handles, finished results);
what is sent when is decided by :class:`~molmoact_ros.robot.executor.GripperGoalTracker`: a goal only when
the command changes, every halt cancels the goal in flight (the controller holds), nothing is re-sent on
resume. control_msgs has no PyPI wheel: :meth:`GripperAction.create` returns None where it is not importable.
"""

from __future__ import annotations

from typing import Optional

from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient

from ..robot.executor import GripperGoal, GripperGoalOutcome, GripperGoalTracker

_STATUS = {GoalStatus.STATUS_SUCCEEDED: 'succeeded', GoalStatus.STATUS_CANCELED: 'canceled'}


class GripperAction:
    """GripperCommand goals to ``target``. :meth:`send` and :meth:`halt` are called under ``lock`` (the
    node's); the client's callbacks take it. Made in configure and owned by the node (``node.own``): cleanup
    destroys the client (:meth:`close`), after which late callbacks do nothing."""

    def __init__(self, node, lock, logger, goal_type, target: str, max_effort: float):
        self._lock, self._log, self._goal_type, self.target = lock, logger, goal_type, target
        self.tracker: Optional[GripperGoalTracker] = GripperGoalTracker(max_effort=max_effort)
        self.client = ActionClient(node, goal_type, target)
        self._handles = {}      # goal seq -> ClientGoalHandle
        self.results = []       # (seq, outcome, position, effort) of finished goals, newest last

    @classmethod
    def create(cls, node, lock, logger, target: str, max_effort: float) -> Optional['GripperAction']:
        """A client owned by ``node`` (destroyed by its cleanup), or None without control_msgs (a warning)."""
        try:
            from control_msgs.action import GripperCommand
        except ImportError as exc:
            logger.warning(f'control_msgs is not importable ({exc}): the gripper (GripperCommand '
                           f'action {target}) is left alone')
            return None
        action = node.own(cls(node, lock, logger, GripperCommand, target, max_effort), cls.close)
        logger.info(f'gripper: GripperCommand goals to {target} (max_effort {max_effort})')
        return action

    def close(self) -> None:
        with self._lock:
            self.tracker = None
            self._handles = {}
        self.client.destroy()

    def figures(self) -> dict:
        """The gripper's figures of :class:`~molmoact_ros.cores.sink_figures.SinkFigures`."""
        if self.tracker is None:
            return {}
        return dict(gripper_goals_sent=self.tracker.sent,
                    gripper_goals={k.value: n for k, n in self.tracker.counts.items()})

    def send(self, value: Optional[float]) -> None:
        """The commanded gripper value of this command (the tracker decides whether a goal goes out)."""
        goal = self.tracker.request(value) if self.tracker is not None else None
        if goal is None:
            return
        if not self.client.server_is_ready():
            self.tracker.not_sent(goal)
            self._log.warning(f'gripper: no GripperCommand server at {self.target}; '
                              f'command {goal.position} not sent', throttle_duration_sec=5.0)
            return
        msg = self._goal_type.Goal()
        msg.command.position = goal.position
        msg.command.max_effort = goal.max_effort
        future = self.client.send_goal_async(msg)
        future.add_done_callback(lambda f, goal=goal: self._on_goal_response(goal, f))

    def halt(self) -> None:
        """Every halt: cancel the goal in flight (the controller holds); re-send nothing."""
        if self.tracker is None:
            return
        for seq in self.tracker.halt():
            handle = self._handles.get(seq)
            if handle is not None:
                handle.cancel_goal_async()

    def _on_goal_response(self, goal: GripperGoal, future) -> None:
        try:
            handle = future.result()
        except Exception as exc:  # noqa: BLE001 - e.g. the client was destroyed on cleanup
            with self._lock:
                if self.tracker is not None:
                    self.tracker.rejected(goal.seq)
            self._log.warning(f'gripper goal {goal.position}: {type(exc).__name__}: {exc}')
            return
        with self._lock:
            if self.tracker is None:
                return
            if not handle.accepted:
                self.tracker.rejected(goal.seq)
                self._log.warning(f'gripper goal {goal.position} rejected by the GripperCommand server')
                return
            cancel_now = self.tracker.accepted(goal.seq)
            self._handles[goal.seq] = handle
        handle.get_result_async().add_done_callback(lambda f, goal=goal: self._on_result(goal, f))
        if cancel_now:  # a halt came while the goal was on its way
            handle.cancel_goal_async()

    def _on_result(self, goal: GripperGoal, future) -> None:
        try:
            response = future.result()
        except Exception:  # noqa: BLE001
            return
        result = response.result
        outcome = GripperGoalTracker.outcome(_STATUS.get(response.status, 'aborted'), bool(result.reached_goal),
                                             bool(result.stalled))
        with self._lock:
            if self.tracker is None:
                return
            self.tracker.finished(goal.seq, outcome)
            self._handles.pop(goal.seq, None)
            self.results.append((goal.seq, outcome, float(result.position), float(result.effort)))
            del self.results[:-20]
        log = self._log.warning if outcome is GripperGoalOutcome.ABORTED else self._log.info
        log(f'gripper goal {goal.position}: {outcome.value} (position {result.position:.4f}, '
            f'effort {result.effort:.2f}, stalled {bool(result.stalled)}, reached_goal {bool(result.reached_goal)})')
