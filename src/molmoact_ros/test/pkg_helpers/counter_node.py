"""A minimal concrete MolmoActLifecycleNode for the lifecycle tests.

While active it publishes an increasing count on ~/count (a lifecycle publisher) from a gated timer and
handles ~/input strings ('bad' raises, to exercise error recording). Run as a script it spins until the
node is finalized (shutdown transition) or a time limit passes.
"""

import sys
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Int32, String

from molmoact_ros.nodes.base import MolmoActLifecycleNode
from molmoact_ros.ros.params import ParamSpec


class CounterNode(MolmoActLifecycleNode):
    def __init__(self, name: str = 'counter', **kwargs):
        self._pub = None
        self._timer = None
        self._sub = None
        self.count = 0
        super().__init__(name, parameters=[
            ParamSpec('publish_period_s', 0.05, 'Seconds between counts.', min_value=0.01, max_value=1.0)],
            **kwargs)

    def on_configure(self, state):
        result = super().on_configure(state)
        self._pub = self.create_lifecycle_publisher(Int32, '~/count', 10)
        self._timer = self.create_timer(self.params['publish_period_s'],
                                        self.gate(self._tick, count_inputs=False))
        self._sub = self.create_subscription(String, '~/input', self.gate(self._on_input), 10)
        return result

    def _tick(self):
        self.count += 1
        self._pub.publish(Int32(data=self.count))

    def _on_input(self, msg):
        if msg.data == 'bad':
            raise ValueError('bad input')
        self.requests_completed += 1
        self.publish_status()

    def _release(self):
        for entity, destroy in ((self._timer, self.destroy_timer), (self._sub, self.destroy_subscription),
                                (self._pub, self.destroy_lifecycle_publisher)):
            if entity is not None:
                destroy(entity)
        self._timer = self._sub = self._pub = None

    def on_cleanup(self, state):
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state):
        self._release()
        return super().on_shutdown(state)


def main(name: str, limit_s: float) -> int:
    rclpy.init()
    node = CounterNode(name)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + limit_s
    while node.lifecycle_label != 'finalized' and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    finalized = node.lifecycle_label == 'finalized'
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    return 0 if finalized else 4


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
