"""Subprocess side of test/test_gripper_action.py: the command sink against a fake GripperCommand server.

Runs where ``control_msgs`` is importable (here: the test-only interface package the test builds into a
private install space). One process: the sink (servo_pose mode, so the arm needs no IK; its pose targets go
nowhere), a harness that publishes joint_states, camera frames and action chunks, and a fake
GripperActionController: an ``ActionServer`` for control_msgs/action/GripperCommand at
``gripper_controller/gripper_cmd`` that moves a simulated gripper toward each goal at ``speed`` units/s,
succeeds with ``reached_goal`` on arrival and, on a cancel request, holds where it is (as
GripperActionController does).

Writes a JSON record (argv[1]) of what happened, phase by phase; the test asserts on it. Each phase waits for
the events it is about (goals received and finished, the chunk over), not for a fixed time; only the
negative checks (nothing sent while disabled or after a halt) give the sink a fixed time to go wrong.
"""

import json
import sys
import threading
import time
from pathlib import Path

import rclpy
import yaml
from action_msgs.msg import GoalStatus
from control_msgs.action import GripperCommand
from geometry_msgs.msg import Vector3
from molmoact_msgs.msg import ActionChunk, ActionStep
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger

from molmoact_ros.nodes.command_sink import CommandSinkNode
from suite_helpers.spinning import spin_recording

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / 'config' / 'robots' / 'sim_panda.yaml'
ARM = [f'panda_joint{i}' for i in range(1, 8)]
Q0 = [0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785]
MAX_EFFORT = 25.0
NS = '/grip'


class FakeGripperServer:
    """A GripperCommand server with a simulated single-DoF gripper (position in the profile's units)."""

    def __init__(self, node):
        self.lock = threading.Lock()
        self.position = 0.02
        self.speed = 1.0          # units per second
        self.goals = []           # dicts: t, position, max_effort, status, result_position
        self.cancels = []         # times cancel requests arrived
        self.server = ActionServer(node, GripperCommand, 'gripper_controller/gripper_cmd', self._execute,
                                   goal_callback=lambda goal: GoalResponse.ACCEPT,
                                   cancel_callback=self._cancel, callback_group=ReentrantCallbackGroup())

    def _cancel(self, goal_handle):
        with self.lock:
            self.cancels.append(time.monotonic())
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle):
        cmd = goal_handle.request.command
        record = {'t': time.monotonic(), 'position': cmd.position, 'max_effort': cmd.max_effort, 'status': None}
        with self.lock:
            self.goals.append(record)
        result = GripperCommand.Result()
        last = time.monotonic()
        while True:
            time.sleep(0.02)  # 50 Hz, as GripperActionController's feedback
            now = time.monotonic()
            with self.lock:
                if goal_handle.is_cancel_requested:
                    goal_handle.canceled()          # hold where the gripper is
                    record['status'] = 'canceled'
                    break
                if not goal_handle.is_active:       # superseded
                    record['status'] = 'inactive'
                    break
                step = self.speed * (now - last)
                error = cmd.position - self.position
                self.position += max(-step, min(step, error))
                last = now
                if abs(cmd.position - self.position) < 1e-9:
                    result.reached_goal = True
                    goal_handle.succeed()
                    record['status'] = 'succeeded'
                    break
                feedback = GripperCommand.Feedback(position=self.position)
            goal_handle.publish_feedback(feedback)
        with self.lock:
            result.position = self.position
            record['result_position'] = self.position
        return result


class Harness:
    def __init__(self):
        self.node = rclpy.create_node('gripper_harness', namespace=NS)
        n = self.node
        self.gripper = FakeGripperServer(n)
        self.joint_pub = n.create_publisher(JointState, 'joint_states', 10)
        self.image_pub = n.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.chunk_pub = n.create_publisher(ActionChunk, 'action_chunk', 10)
        self.e_stop_pub = n.create_publisher(Bool, 'e_stop', 10)
        self.enable_client = n.create_client(SetBool, 'command_sink/enable')
        self.reset_client = n.create_client(Trigger, 'command_sink/reset_e_stop')
        n.create_timer(0.02, self._joints)
        n.create_timer(0.05, self._image)

    def _joints(self):
        msg = JointState(name=ARM, position=[float(v) for v in Q0])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.joint_pub.publish(msg)

    def _image(self):
        img = Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12))
        img.header.stamp = self.node.get_clock().now().to_msg()
        self.image_pub.publish(img)

    def chunk(self, grippers, period=0.1, request_id='r'):
        msg = ActionChunk(request_id=request_id, step_period_s=period, action_dim=7,
                          rotation_convention=ActionChunk.ROTATION_RPY, delta_frame_id='panda_link0')
        msg.header.stamp = self.node.get_clock().now().to_msg()
        for g in grippers:
            msg.steps.append(ActionStep(translation_m=Vector3(x=0.001), rotation_rad=Vector3(), gripper=float(g),
                                        values=[0.001, 0.0, 0.0, 0.0, 0.0, 0.0, float(g)]))
        self.chunk_pub.publish(msg)

    def call(self, client, request):
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(request)
        end = time.monotonic() + 5.0
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        return future.result()

    def n_goals(self):
        with self.gripper.lock:
            return len(self.gripper.goals)

    def snapshot(self):
        with self.gripper.lock:
            return {'goals': [dict(g) for g in self.gripper.goals], 'cancels': len(self.gripper.cancels),
                    'position': self.gripper.position}


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.01)
    return predicate()


def main(out_path: str) -> int:
    rclpy.init()
    data = yaml.safe_load(PROFILE.read_text())
    data['name'] = 'sim_panda_gripper_action'
    data['sink'].update({'gripper_controller': 'gripper_controller', 'gripper_controller_type': 'gripper_action',
                         'gripper_joint_names': [], 'gripper_max_effort': MAX_EFFORT})
    data['sink'].pop('gripper_joint_multipliers', None)
    data['safety']['camera_timeout_s'] = 0.3
    profile = Path(out_path).with_name('sim_panda_gripper_action.yaml')
    profile.write_text(yaml.safe_dump(data))
    harness = Harness()
    sink = CommandSinkNode(namespace=NS, parameter_overrides=[
        Parameter('robot_profile', value=str(profile)), Parameter('sink', value='servo_pose'),
        Parameter('robot_description_source', value='profile'),
        # joint states can pause for more than the default 0.1 s on a loaded machine; not what this is about
        Parameter('anchor_tolerance_s', value=0.5)])
    # The sink and the harness (fake controller, camera, joint states) on executors of their own, as they run in
    # processes of their own on a robot: the fake server's goal loop cannot starve the sink's control tick.
    executors = (SingleThreadedExecutor(), MultiThreadedExecutor(num_threads=4))
    executors[0].add_node(sink)
    executors[1].add_node(harness.node)
    escaped = []  # tracebacks of callback exceptions (the test asserts none)
    spinners = [threading.Thread(target=spin_recording, args=(executor, escaped), daemon=True)
                for executor in executors]
    for spinner in spinners:
        spinner.start()
    record = {}
    try:
        from rclpy.lifecycle import TransitionCallbackReturn as R
        assert sink.trigger_configure() == R.SUCCESS and sink.trigger_activate() == R.SUCCESS
        assert wait_for(lambda: sink._q is not None)
        assert wait_for(lambda: sink.gripper_action.client.server_is_ready())
        # camera frames arriving (the camera gate open) before the first chunk
        assert wait_for(lambda: sink.governor._last_camera_s is not None)

        def settled(count):
            """``count`` goals received and each one finished (succeeded or canceled), and the sink's client
            has seen every result: the events each phase waits for, not a fixed time."""
            snap = harness.snapshot()
            return (len(snap['goals']) == count and all(g['status'] is not None for g in snap['goals'])
                    and not sink.gripper_action.tracker.in_flight)

        # 1. disabled: nothing (a negative: given time to go wrong)
        harness.chunk([0.9] * 4, request_id='disabled')
        time.sleep(0.7)
        record['disabled'] = harness.snapshot()
        # 2. enabled: four steps that all say "open" -> one goal
        assert harness.call(harness.enable_client, SetBool.Request(data=True)).success
        harness.chunk([0.9] * 4, request_id='open')
        assert wait_for(lambda: settled(1), 10.0), harness.snapshot()
        assert wait_for(lambda: sink.arm_executor.queue.timeline is None, 10.0)  # the chunk is over
        record['open'] = harness.snapshot()
        # 3. open, close x3, open x3: a goal on each change only. Each command is held for three steps, so a
        # step skipped by a late tick on a loaded machine cannot remove a change.
        harness.chunk([0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9], period=0.15, request_id='changes')
        assert wait_for(lambda: settled(3), 10.0), harness.snapshot()
        assert wait_for(lambda: sink.arm_executor.queue.timeline is None, 10.0)
        record['changes'] = harness.snapshot()
        # 4. e-stop while a (slow) goal is in flight: cancelled, the gripper holds; nothing re-sent on resume
        with harness.gripper.lock:
            harness.gripper.speed = 0.01   # 0.04 -> 0.0 would take 4 s
        harness.chunk([0.1] * 30, request_id='slow_close')
        assert wait_for(lambda: harness.n_goals() == 4, 5.0), harness.snapshot()
        # the goal is executing (its position moved) before the e-stop
        assert wait_for(lambda: harness.snapshot()['position'] < 0.0399, 5.0), harness.snapshot()
        harness.e_stop_pub.publish(Bool(data=True))
        assert wait_for(lambda: settled(4), 10.0), harness.snapshot()
        record['e_stop'] = harness.snapshot()
        time.sleep(0.5)
        record['e_stop_later'] = harness.snapshot()
        assert harness.call(harness.reset_client, Trigger.Request()).success
        assert harness.call(harness.enable_client, SetBool.Request(data=True)).success
        time.sleep(0.8)    # 'slow_close' would still have steps due: none fires, no goal is re-sent
        record['resumed'] = harness.snapshot()
        # 5. the next chunk's command is sent (the target was forgotten at the halt)
        with harness.gripper.lock:
            harness.gripper.speed = 1.0
        harness.chunk([0.1] * 3, request_id='after')
        assert wait_for(lambda: settled(5), 10.0), harness.snapshot()
        record['after'] = harness.snapshot()
        # 6. deactivate while a slow goal is in flight: cancelled as well
        with harness.gripper.lock:
            harness.gripper.speed = 0.01
        harness.chunk([0.9] * 30, request_id='slow_open')
        assert wait_for(lambda: harness.n_goals() == 6, 5.0), harness.snapshot()
        assert wait_for(lambda: harness.snapshot()['position'] > 0.0001, 5.0), harness.snapshot()
        assert sink.trigger_deactivate() == R.SUCCESS
        assert wait_for(lambda: settled(6), 10.0), harness.snapshot()
        record['deactivated'] = harness.snapshot()
        record['diagnostics'] = dict(sink.diagnostic_values())
        record['tracker_counts'] = {k.value: v for k, v in sink.gripper_action.tracker.counts.items()}
        record['results'] = [(seq, outcome.value, pos, eff) for seq, outcome, pos, eff in sink.gripper_action.results]
        assert sink.trigger_cleanup() == R.SUCCESS
        record['escaped'] = escaped
        record['ok'] = True
    except AssertionError as error:
        import traceback
        record['ok'] = False
        record['error'] = traceback.format_exc() or repr(error)
    finally:
        Path(out_path).write_text(json.dumps(record, indent=1))
        for executor, spinner in zip(executors, spinners):
            executor.shutdown()
            spinner.join(timeout=5)
        sink.destroy_node()
        harness.node.destroy_node()
        rclpy.try_shutdown()
    return 0 if record.get('ok') else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
