"""The interfaces build, import, and are documented field by field (units, frame, shape)."""

import os
import re
from pathlib import Path

import pytest
from molmoact_msgs.action import ExecuteInstruction
from molmoact_msgs.msg import (ActionChunk, ActionStep, ExecutionConstraints, NodeStatus, PerceptionTokens,
                               StageTiming, TaskState, TracePoint, TrajectoryTrace)
from molmoact_msgs.srv import EditTrace, ResetEpisode

PKG = Path(__file__).resolve().parents[1] / 'src' / 'molmoact_msgs'
INTERFACE_FILES = sorted(p for d in ('msg', 'srv', 'action') for p in (PKG / d).iterdir())
FIELD = re.compile(r'^(?P<type>[A-Za-z_][\w/]*(\[\d*\])?)\s+(?P<name>[A-Za-z_]\w*)(\s*=\s*(?P<const>[^#]+))?(\s*#.*)?$')


def test_every_interface_file_is_built_and_importable():
    built = {ActionChunk, ActionStep, ExecutionConstraints, NodeStatus, PerceptionTokens, StageTiming, TaskState,
             TracePoint, TrajectoryTrace}
    names = {p.stem for p in INTERFACE_FILES}
    assert names == {t.__name__ for t in built} | {'EditTrace', 'ExecuteInstruction', 'ResetEpisode'}
    for typ in built:
        typ()  # default-constructible
    EditTrace.Request(), EditTrace.Response()
    ResetEpisode.Request(), ResetEpisode.Response()
    ExecuteInstruction.Goal(), ExecuteInstruction.Result(), ExecuteInstruction.Feedback()


@pytest.mark.parametrize('path', INTERFACE_FILES, ids=lambda p: p.name)
def test_every_field_and_constant_is_documented(path):
    """The isaac_ros_deploy standard: each field says what it is (units, frame, shape) in a comment,
    on the line itself or in the comment block right above it."""
    undocumented = []
    comment_above = False
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line == '---':
            comment_above = False
            continue
        if line.startswith('#'):
            comment_above = True
            continue
        m = FIELD.match(line)
        assert m, f'{path.name}:{lineno}: cannot parse {line!r}'
        if not (comment_above or '#' in line):
            undocumented.append(f'{path.name}:{lineno}: {m.group("name")}')
        # A run of fields shares the comment block above it only when they form one group
        # (e.g. x/y pairs); a blank line ends the group.
    assert not undocumented, 'fields without a comment: ' + ', '.join(undocumented)


def test_constants_and_field_shapes():
    assert (StageTiming.STAGE_PERCEPTION, StageTiming.STAGE_PLANNING, StageTiming.STAGE_ACTION) == (
        'perception', 'planning', 'action')
    assert (TrajectoryTrace.SOURCE_MODEL, TrajectoryTrace.SOURCE_EDITED, TrajectoryTrace.SOURCE_EXTERNAL) == (0, 1, 2)
    assert ActionChunk.ROTATION_RPY != ActionChunk.ROTATION_AXIS_ANGLE
    assert ExecuteInstruction.Result.OUTCOME_COMPLETED == 0
    # fixed-size homogeneous transform; shapes and ranges are enforced by the generated classes when
    # field checks are on (the test runs turn them on for every message: ROS_PYTHON_CHECK_FIELDS=1)
    p = PerceptionTokens(check_fields=True)
    assert len(p.model_to_source) == 9
    with pytest.raises(AssertionError):
        p.model_to_source = [1.0] * 8
    with pytest.raises(AssertionError):
        TracePoint(x_model=256, check_fields=True)
    assert os.environ.get('ROS_PYTHON_CHECK_FIELDS') == '1'
    with pytest.raises(AssertionError):
        TracePoint(x_model=-1)
    # the feedback carries whole trace and action messages
    fb = ExecuteInstruction.Feedback()
    assert isinstance(fb.latest_trace, TrajectoryTrace) and isinstance(fb.latest_actions, ActionChunk)
