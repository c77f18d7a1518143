import sys
from pathlib import Path

# Helper modules of the system tests (also run as scripts in subprocesses).
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
