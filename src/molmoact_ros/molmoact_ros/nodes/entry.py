"""Console entry points of the model-hosting executables (``pipeline``, ``perception_node``,
``trace_planner_node``, ``action_decoder_node``).

They cap glibc's malloc arenas (:mod:`molmoact_ros.ros.memory`) before anything else is imported: the model
stack's imports and the threads that follow then allocate from the capped arenas. Then they run
:mod:`molmoact_ros.nodes.pipeline`.
"""

from __future__ import annotations

import sys


def _start(name: str) -> int:
    from ..ros.memory import limit_malloc_arenas
    limit_malloc_arenas()
    from . import pipeline
    return getattr(pipeline, name)()


def pipeline_main() -> int:
    return _start('main')


def perception_main() -> int:
    return _start('perception_main')


def planner_main() -> int:
    return _start('planner_main')


def action_main() -> int:
    return _start('action_main')


if __name__ == '__main__':
    sys.exit(pipeline_main())
