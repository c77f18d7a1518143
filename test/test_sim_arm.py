"""The simulated arm node (`ros2 run molmoact_bringup sim_arm`, the installed executable) in its own
process: every topic with the right encodings and frames, joint trajectories and gripper commands
followed as ros2_control controllers would, and simulation time on /clock."""

import importlib.metadata as metadata
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact_ros.ros.image import depth_to_meters, image_to_numpy
from molmoact_ros.robot.geometry import CameraIntrinsics

ROOT = Path(__file__).resolve().parents[1]
EXE = ROOT / 'install' / 'molmoact_bringup' / 'lib' / 'molmoact_bringup' / 'sim_arm'
from molmoact_ros.ros.topics import LATCHED
ARM = [f'panda_joint{i}' for i in range(1, 8)]
OPTICAL = 'sim_camera_color_optical_frame'

try:
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None


def start(ns, *params):
    args = [str(EXE), '--ros-args', '-r', f'__ns:={ns}']
    for p in params:
        args += ['-p', p]
    return subprocess.Popen(args, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        out = proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    return proc.returncode, out


class Probe:
    def __init__(self, ns):
        self.node = rclpy.create_node('sim_probe', namespace=ns)
        self.got = {k: [] for k in ('image', 'depth', 'info', 'joints', 'description', 'camera_pose',
                                    'ee_pose', 'clock', 'tf')}
        n, g = self.node, self.got
        n.create_subscription(Image, 'image', g['image'].append, qos_profile_sensor_data)
        n.create_subscription(Image, 'aligned_depth', g['depth'].append, qos_profile_sensor_data)
        n.create_subscription(CameraInfo, 'camera_info', g['info'].append, qos_profile_sensor_data)
        n.create_subscription(JointState, 'joint_states', g['joints'].append, 10)
        n.create_subscription(String, 'robot_description', g['description'].append, LATCHED)
        n.create_subscription(PoseStamped, 'sim_arm/camera_pose', g['camera_pose'].append, 10)
        n.create_subscription(PoseStamped, 'sim_arm/ee_pose', g['ee_pose'].append, 10)
        n.create_subscription(Clock, '/clock', g['clock'].append, 10)
        if TFMessage is not None:
            n.create_subscription(TFMessage, 'tf', g['tf'].append, 10)
        self.trajectory = n.create_publisher(JointTrajectory, 'joint_trajectory_controller/joint_trajectory', 10)
        self.gripper = n.create_publisher(Float64MultiArray, 'gripper_controller/commands', 10)

    def spin_until(self, condition, timeout_s, proc):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            if condition():
                return True
            assert proc.poll() is None, 'sim_arm exited:\n' + proc.communicate()[0][-3000:]
        return False

    def joints(self):
        js = self.got['joints'][-1]
        return dict(zip(js.name, js.position))

    def arm(self):
        j = self.joints()
        return np.array([j[n] for n in ARM])


def trajectory(names, positions, seconds, stamp=None):
    msg = JointTrajectory()
    msg.joint_names = list(names)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.points = [JointTrajectoryPoint(positions=[float(v) for v in positions],
                                       time_from_start=Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9)))]
    return msg


def test_sim_arm_publishes_every_topic_and_follows_ros2_control_commands():
    proc = start('/simtest', 'camera_rate_hz:=5.0')
    rclpy.init()
    probe = Probe('/simtest')
    try:
        ready = probe.spin_until(lambda: all(probe.got[k] for k in ('image', 'depth', 'info', 'joints',
                                                                     'description', 'camera_pose', 'ee_pose')),
                                 40.0, proc)
        assert ready, {k: len(v) for k, v in probe.got.items()}
        # Camera: rgb8 + 32FC1 metres, same size, optical frame, matching stamps; CameraInfo consistent.
        probe.spin_until(lambda: len(probe.got['depth']) >= 2 and len(probe.got['info']) >= 2, 10.0, proc)
        img, info = probe.got['image'][-1], probe.got['info'][-1]
        depth = next(d for d in reversed(probe.got['depth']) if d.header.stamp == img.header.stamp)
        assert (img.encoding, img.width, img.height, img.header.frame_id) == ('rgb8', 320, 240, OPTICAL)
        assert (depth.encoding, depth.width, depth.height, depth.header.frame_id) == ('32FC1', 320, 240, OPTICAL)
        assert any(i.header.stamp == img.header.stamp and i.header.frame_id == OPTICAL for i in probe.got['info'])
        rgb, metres = image_to_numpy(img), depth_to_meters(depth)
        assert rgb.shape == (240, 320, 3) and rgb.std() > 20
        assert np.isfinite(metres).all() and 0.5 < float(np.median(metres)) < 3.0
        k = CameraIntrinsics.from_k(info.k, info.width, info.height)
        assert k.fx == k.fy and (k.cx, k.cy) == (159.5, 119.5) and info.distortion_model == 'plumb_bob'
        assert list(info.p) == [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        # State, description, poses in the base frame.
        js = probe.got['joints'][-1]
        assert list(js.name) == ARM + ['panda_finger_joint1', 'panda_finger_joint2']
        assert len(js.position) == len(js.velocity) == len(js.effort) == 9
        urdf = probe.got['description'][0].data
        assert '<robot' in urdf and 'panda_hand_tcp' in urdf and 'panda_link0' in urdf
        ee, cam = probe.got['ee_pose'][-1], probe.got['camera_pose'][-1]
        assert ee.header.frame_id == cam.header.frame_id == 'panda_link0'
        assert 0.2 < ee.pose.position.x < 0.7 and cam.pose.position.x > 1.0
        if TFMessage is not None:
            probe.spin_until(lambda: probe.got['tf'], 5.0, proc)
            children = {t.child_frame_id for m in probe.got['tf'] for t in m.transforms}
            assert children == {OPTICAL, 'panda_hand_tcp'}

        # A trajectory (joints in another order than the controller's): followed to its point.
        start_q = probe.arm()
        target = start_q + np.array([0.3, -0.15, 0.2, 0.25, -0.2, 0.15, 0.3])
        order = [6, 0, 5, 1, 4, 2, 3]
        probe.trajectory.publish(trajectory([ARM[i] for i in order], target[order], 1.5))
        seen = []

        def at_target():
            if not probe.got['joints']:
                return False
            seen.append(probe.arm()[0])
            return np.abs(probe.arm() - target).max() < 5e-3

        probe.got['joints'].clear()
        assert probe.spin_until(at_target, 15.0, proc), (probe.arm(), target)
        assert len(seen) > 20 and np.all(np.diff(seen) > -1e-3)  # joint 1 rose steadily, no jump
        assert start_q[0] + 0.02 < seen[len(seen) // 2] < target[0] - 0.02  # ... through the middle

        # Rejected: unknown joint. The arm holds where it is.
        probe.trajectory.publish(trajectory(ARM[:6] + ['panda_finger_joint1'], target[:7] - 0.3, 0.5))
        time.sleep(0.2)
        probe.spin_until(lambda: False, 1.0, proc)
        assert np.abs(probe.arm() - target).max() < 5e-3

        # Gripper: close (finger position 0), both fingers follow.
        probe.gripper.publish(Float64MultiArray(data=[0.0]))
        closed = probe.spin_until(lambda: max(probe.joints()['panda_finger_joint1'],
                                              probe.joints()['panda_finger_joint2']) < 2e-3, 10.0, proc)
        assert closed, probe.joints()
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        rc, out = stop(proc)
    assert rc == 0, out[-3000:]
    assert re.search(r"trajectory rejected: unknown joint\(s\) \['panda_finger_joint1'\]", out), out[-3000:]
    if TFMessage is None:
        assert 'tf2_msgs is not installed' in out


def test_sim_arm_on_simulation_time_publishes_clock_and_reads_stamps_in_it():
    proc = start('/simclock', 'use_sim_time:=true', 'rate_hz:=50.0', 'real_time_factor:=2.0', 'camera_rate_hz:=2.0',
                 'image_width:=160', 'image_height:=120', 'camera_frame:=cam_opt')
    rclpy.init()
    probe = Probe('/simclock')
    try:
        assert probe.spin_until(lambda: probe.got['clock'] and probe.got['joints'] and probe.got['image'],
                                40.0, proc), {k: len(v) for k, v in probe.got.items()}
        img = probe.got['image'][-1]
        seconds = lambda t: t.sec + t.nanosec * 1e-9  # noqa: E731
        image_s = seconds(img.header.stamp)
        # Wait for the /clock that the image was stamped at (a loaded machine delivers messages late, and a
        # subscriber may miss some /clock messages: the checks below hold whichever ones arrived).
        assert probe.spin_until(lambda: seconds(probe.got['clock'][-1].clock) >= image_s, 20.0, proc)
        clocks = [seconds(c.clock) for c in probe.got['clock']]
        assert np.all(np.diff(clocks) > 0)
        # Stamps are simulation time: on the simulator's tick grid (1 / rate_hz = 20 ms from any /clock value)
        # and never ahead of the latest /clock.
        tick_s = 1.0 / 50.0
        stamps = [seconds(j.header.stamp) for j in probe.got['joints']] + [image_s]
        for s in stamps:
            ticks = (s - clocks[0]) / tick_s
            assert abs(ticks - round(ticks)) < 1e-3 and s <= clocks[-1] + 1e-9, (s, clocks[0], clocks[-1])
        assert (img.width, img.height, img.header.frame_id) == (160, 120, 'cam_opt')
        # A trajectory stamped 1 s ahead in simulation time starts moving now and arrives at stamp + 0.5 s.
        now = probe.got['clock'][-1].clock
        now_s = now.sec + now.nanosec * 1e-9
        start_q = probe.arm()
        target = start_q + np.array([0.2, 0, 0, 0, 0, 0, 0])
        due = now_s + 1.5
        stamp = type(now)(sec=int(now_s + 1.0), nanosec=int(((now_s + 1.0) % 1) * 1e9))
        probe.trajectory.publish(trajectory(ARM, target, 0.5, stamp=stamp))
        probe.got['joints'].clear()
        reached = probe.spin_until(lambda: probe.got['joints'] and np.abs(probe.arm() - target).max() < 5e-3,
                                   20.0, proc)
        assert reached, (probe.arm(), target)
        first = next(j for j in probe.got['joints'] if abs(dict(zip(j.name, j.position))['panda_joint1'] -
                                                           target[0]) < 5e-3)
        t_reached = first.header.stamp.sec + first.header.stamp.nanosec * 1e-9
        assert due - 0.05 < t_reached < due + 0.3, (t_reached, due)
        assert not math.isclose(t_reached, time.time(), abs_tol=3600)  # sim time, not wall time
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        rc, out = stop(proc)
    assert rc == 0, out[-3000:]


def test_sim_requirements_are_pinned_and_keep_one_opencv_and_numpy_2():
    """robosuite comes without its declared deps: no mink (numpy<2) and no second cv2 build."""
    for name in ('requirements-sim.txt', 'requirements-sim-nodeps.txt'):
        lines = [ln.split('#', 1)[0].strip() for ln in (ROOT / name).read_text().splitlines()]
        reqs = [ln for ln in lines if ln]
        assert reqs and all(re.fullmatch(r'[A-Za-z0-9_.\-]+==[\w.+]+', r) for r in reqs), reqs
        assert not any(r.lower().startswith(('opencv-python==', 'mink==', 'numpy==')) for r in reqs)
    assert metadata.version('robosuite') == '1.5.2' and metadata.version('mujoco') == '3.3.7'
    assert int(metadata.version('numpy').split('.')[0]) >= 2
    assert metadata.version('opencv-python-headless') == '4.11.0.86'
    for absent in ('opencv-python', 'mink'):
        try:
            metadata.version(absent)
        except metadata.PackageNotFoundError:
            continue
        raise AssertionError(f'{absent} is installed (robosuite must be installed with --no-deps)')


LIBERO_LANGUAGE = 'pick up the black bowl between the plate and the ramekin and place it on the plate'


def test_sim_arm_libero_scene_publishes_the_evaluators_views_and_follows_commands():
    """scene:=libero (LIBERO from .venv-libero, scripts/setup_libero.sh): libero_spatial task 0 with the
    released evaluator's views (agentview + wrist, 256x256, libero_eval orientation: no camera_info);
    ~/reset_episode to other official initial states."""
    proc = start('/simlibero', 'scene:=libero', 'libero_suite:=libero_spatial', 'libero_task_id:=0',
                 'image_orientation:=libero_eval', 'camera_rate_hz:=4.0')
    rclpy.init()
    probe = Probe('/simlibero')
    from molmoact_msgs.msg import TaskState
    from molmoact_msgs.srv import ResetEpisode
    got = {'wrist': [], 'task': [], 'state': []}
    probe.node.create_subscription(Image, 'wrist_image', got['wrist'].append, qos_profile_sensor_data)
    probe.node.create_subscription(String, 'sim_arm/task_description', got['task'].append, LATCHED)
    probe.node.create_subscription(TaskState, 'sim_arm/task_state', got['state'].append, LATCHED)
    try:
        ready = probe.spin_until(lambda: probe.got['image'] and probe.got['depth'] and probe.got['joints']
                                 and got['wrist'] and got['task'] and got['state'], 240.0, proc)
        assert ready, {**{k: len(v) for k, v in probe.got.items()}, **{k: len(v) for k, v in got.items()}}
        assert got['task'][0].data == LIBERO_LANGUAGE
        st = got['state'][-1]   # LIBERO's own goal check on the scene's state
        assert (st.scene, st.instruction, st.episode, st.seed, st.success) == ('libero', LIBERO_LANGUAGE, 0, 0, False)
        assert st.reason == 'goal not reached: on(akita_black_bowl_1, plate_1): false', st.reason
        assert list(st.object_names) == ['akita_black_bowl_1', 'plate_1'] and st.header.frame_id == 'panda_link0'
        img, wrist = probe.got['image'][-1], got['wrist'][-1]
        for m in (img, wrist):
            assert (m.encoding, m.width, m.height, m.header.frame_id) == ('rgb8', 256, 256, OPTICAL)
            assert image_to_numpy(m).std() > 20
        assert any(w.header.stamp == img.header.stamp for w in got['wrist'])
        probe.spin_until(lambda: False, 1.0, proc)
        assert not probe.got['info']  # a mirrored view has no pinhole model: no camera_info
        js = probe.got['joints'][-1]
        assert list(js.name) == ARM + ['panda_finger_joint1', 'panda_finger_joint2']
        # Episodes from the task's other official initial states, without a restart (the released evaluator's
        # episode i: state i); past the last one is refused and the node goes on.
        client = probe.node.create_client(ResetEpisode, 'sim_arm/reset_episode')

        def reset(seed):
            future = client.call_async(ResetEpisode.Request(seed=seed))
            assert probe.spin_until(future.done, 20.0, proc), 'no answer from ~/reset_episode'
            return future.result()

        def bowl(state):
            p = state.object_poses[list(state.object_names).index('akita_black_bowl_1')].position
            return np.array([p.x, p.y, p.z])

        assert probe.spin_until(client.service_is_ready, 10.0, proc)
        answer = reset(3)
        assert answer.success and answer.message == 'episode 1, seed 3', answer.message
        assert (answer.state.episode, answer.state.seed, answer.state.success) == (1, 3, False)
        assert np.linalg.norm(bowl(answer.state) - bowl(st)) > 5e-3      # another initial state: elsewhere
        answer = reset(-1)
        assert answer.success and (answer.state.episode, answer.state.seed) == (2, 4), answer.message
        bad = reset(50)
        assert not bad.success and (bad.state.episode, bad.state.seed) == (2, 4), bad.message
        assert bad.message == 'reset refused: official initial state 50 out of range [0, 49]', bad.message
        # The arm follows a trajectory in this scene too.
        target = probe.arm() + np.array([0.2, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0])
        probe.trajectory.publish(trajectory(ARM, target, 1.0))
        probe.got['joints'].clear()
        assert probe.spin_until(lambda: probe.got['joints'] and np.abs(probe.arm() - target).max() < 5e-3,
                                20.0, proc), (probe.arm(), target)
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        rc, out = stop(proc)
    assert rc == 0, out[-3000:]
    assert 'libero_spatial_no_noops_modified' in out and 'scene libero' in out, out[-3000:]


def test_sim_arm_libero_scene_without_libero_says_how_to_install_it():
    proc = start('/simnolibero', 'scene:=libero', 'libero_python:=/nonexistent/libero/bin/python')
    try:
        out = proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 2, out[-3000:]
    assert 'scripts/setup_libero.sh' in out and '/nonexistent/libero/bin/python' in out, out[-3000:]
    assert 'Traceback' not in out


def test_sim_arm_judges_the_lift_task_and_resets_seeded_episodes():
    """~/task_state (latched, on change and with every image) and ~/reset_episode: arm home, gripper open,
    the cube placed from the seed (-1: the next), the episode counted; a bad seed is refused and the node
    goes on."""
    from molmoact_msgs.msg import TaskState
    from molmoact_msgs.srv import ResetEpisode
    proc = start('/simtask', 'camera_rate_hz:=4.0', 'seed:=7', 'cube_xy_range_m:=0.08', 'hold_s:=0.4')
    rclpy.init()
    probe = Probe('/simtask')
    states = []
    probe.node.create_subscription(TaskState, 'sim_arm/task_state', states.append, LATCHED)
    client = probe.node.create_client(ResetEpisode, 'sim_arm/reset_episode')

    def reset(seed):
        future = client.call_async(ResetEpisode.Request(seed=seed))
        assert probe.spin_until(future.done, 20.0, proc), 'no answer from ~/reset_episode'
        return future.result()

    def cube(state):
        assert list(state.object_names) == ['cube']
        p = state.object_poses[0].position
        return np.array([p.x, p.y, p.z])

    try:
        assert probe.spin_until(lambda: states and probe.got['joints'] and client.service_is_ready(), 40.0, proc)
        first = states[0]
        assert (first.scene, first.task, first.instruction) == ('lift', 'lift', 'pick up the red cube')
        assert (first.episode, first.seed, first.success, first.succeeded, first.first_success_s) == \
            (0, 7, False, False, -1.0)
        assert first.header.frame_id == 'panda_link0' and 'above rest (< 0.040 m)' in first.reason
        c0 = cube(first)
        assert abs(c0[0] - 0.56) <= 0.08 + 1e-6 and abs(c0[1]) <= 0.08 + 1e-6 and -0.1 < c0[2] < -0.08
        # Published with every image too (4 Hz), while nothing changes.
        n = len(states)
        assert probe.spin_until(lambda: len(states) >= n + 3, 10.0, proc)
        assert all(s.episode == 0 and not s.success for s in states)

        # Move the arm and close the gripper, then reset: next seed, arm home, gripper open, new cube.
        home = probe.arm()
        probe.trajectory.publish(trajectory(ARM, home + 0.2, 0.5))
        probe.gripper.publish(Float64MultiArray(data=[0.0]))
        assert probe.spin_until(lambda: np.abs(probe.arm() - (home + 0.2)).max() < 5e-3, 15.0, proc)
        answer = reset(-1)
        assert answer.success, answer.message
        assert (answer.state.episode, answer.state.seed, answer.state.succeeded) == (1, 8, False)
        assert answer.message == 'episode 1, seed 8'
        c8 = cube(answer.state)
        assert np.linalg.norm(c8[:2] - c0[:2]) > 1e-3
        probe.got['joints'].clear()
        assert probe.spin_until(lambda: probe.got['joints'] and np.abs(probe.arm() - home).max() < 2e-3
                                and probe.joints()['panda_finger_joint1'] > 0.035, 10.0, proc), probe.joints()
        probe.spin_until(lambda: False, 1.0, proc)     # the dropped trajectory does not come back
        assert np.abs(probe.arm() - home).max() < 2e-3
        assert states[-1].episode == 1 and np.allclose(cube(states[-1]), c8, atol=2e-3)

        # The same seed gives the same scene.
        assert reset(7).success
        c7 = cube(states[-1]) if states[-1].episode == 2 else None
        again = reset(7)
        assert again.success and again.state.episode == 3 and again.state.seed == 7
        np.testing.assert_allclose(cube(again.state), c0, atol=1e-9)
        if c7 is not None:
            np.testing.assert_allclose(c7, c0, atol=2e-3)

        # A bad seed: refused with the reason, nothing changed, the node goes on.
        bad = reset(-5)
        assert not bad.success and 'out of range' in bad.message and bad.state.episode == 3
        n = len(states)
        assert probe.spin_until(lambda: len(states) >= n + 2, 10.0, proc)
        assert states[-1].episode == 3 and states[-1].seed == 7
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        rc, out = stop(proc)
    assert rc == 0, out[-3000:]
    assert 'reset refused: seed -5 out of range' in out, out[-3000:]
