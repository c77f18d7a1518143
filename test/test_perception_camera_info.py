"""PerceptionNode's camera_info intake (issue 15, finding 3): NaN / zero / skewed intrinsics and a zero size
are rejected with a counted, clear error (was: accepted without a word, and 3D lifts silently disappeared).

The intake is called directly (no ROS graph): ``gate`` turns the raised error into a counted error record.
"""

import math
import types

import pytest
from sensor_msgs.msg import CameraInfo

from molmoact_ros.nodes.perception import PerceptionNode

GOOD_K = [600.0, 0.0, 319.5, 0.0, 600.0, 239.5, 0.0, 0.0, 1.0]


def _info(k=GOOD_K, width=640, height=480):
    return CameraInfo(width=width, height=height, k=[float(v) for v in k])


@pytest.mark.parametrize('bad', [
    _info(k=[math.nan] + GOOD_K[1:]), _info(k=[math.inf] + GOOD_K[1:]), _info(k=[0.0] * 9),
    _info(k=[600.0, 2.0] + GOOD_K[2:]), _info(width=0), _info(height=0), _info(k=[-600.0] + GOOD_K[1:])])
def test_bad_camera_info_is_rejected_and_the_last_valid_one_kept(bad):
    node = types.SimpleNamespace(_camera_info=None)
    good = _info()
    PerceptionNode._on_info(node, good)
    assert node._camera_info is good
    with pytest.raises(ValueError, match='camera_info rejected') as error:
        PerceptionNode._on_info(node, bad)
    assert node._camera_info is good and len(str(error.value)) < 400
