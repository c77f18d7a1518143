"""Session-wide test settings: every test run keeps DDS traffic on loopback.

scripts/test.sh already exports these settings; this makes a bare ``pytest`` run just as safe. It runs
before any test module creates a DDS participant.
"""

import importlib.util
import os
import sys
from pathlib import Path

_src = Path(__file__).resolve().parent / 'src' / 'molmoact_ros'
_spec = importlib.util.spec_from_file_location(
    '_molmoact_dds', _src / 'molmoact_ros' / 'ros' / 'dds.py')
_dds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_dds)
_dds.apply_loopback_dds_env(os.environ)
# Generated message classes check field types, ranges and array sizes only when this is set (read at
# import): tests turn it on so a node that fills a field wrongly fails loudly.
os.environ.setdefault('ROS_PYTHON_CHECK_FIELDS', '1')

# Let pure tests import the core straight from the source tree when the workspace is not sourced.
if str(_src) not in sys.path:
    sys.path.append(str(_src))
