import sys
from pathlib import Path

# Let the package's tests import molmoact_bringup straight from the source tree when the workspace is
# not sourced (the root conftest.py does the same for molmoact_ros).
SRC = Path(__file__).resolve().parents[1]
try:
    import molmoact_bringup  # noqa: F401
except ImportError:
    sys.path.append(str(SRC))
