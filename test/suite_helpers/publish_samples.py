"""Subprocess side of the round-trip test: publish the sample messages (latched) and answer
EditTrace calls, until an acknowledgement arrives or the time limit passes."""

import sys
import time

import rclpy
from molmoact_msgs.msg import ActionChunk, PerceptionTokens, TrajectoryTrace
from molmoact_msgs.srv import EditTrace
from std_msgs.msg import String

from suite_helpers import samples

from molmoact_ros.ros.topics import LATCHED


def main(limit_s: float) -> int:
    rclpy.init()
    node = rclpy.create_node('roundtrip_publisher')
    done = []
    node.create_subscription(String, 'roundtrip/ack', lambda m: done.append(m.data), LATCHED)
    pubs = [(node.create_publisher(PerceptionTokens, 'roundtrip/perception', LATCHED), samples.perception()),
            (node.create_publisher(TrajectoryTrace, 'roundtrip/trace', LATCHED), samples.trace()),
            (node.create_publisher(ActionChunk, 'roundtrip/actions', LATCHED), samples.actions())]

    def edit(request, response):
        # Echo the edit back as a trace in model space, as the planner will.
        response.success = True
        response.message = f'{len(request.points)} points for {request.request_id}'
        response.trace = samples.trace()
        response.trace.request_id = request.request_id
        return response

    node.create_service(EditTrace, 'roundtrip/edit_trace', edit)
    for pub, msg in pubs:
        pub.publish(msg)
    deadline = time.monotonic() + limit_s
    while not done and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if done else 3


if __name__ == '__main__':
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0))
