"""DDS settings that keep every test, CI run and offline demo on loopback.

ROS-free: it only computes environment variables. With default settings DDS discovery multicasts on the
machine's network interfaces; the project's rule is that tests, CI and demos send nothing off loopback.
Two settings do that together:

* ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: discovery only among processes of this host;
* ``FASTDDS_DEFAULT_PROFILES_FILE``: the project's Fast DDS profile (``config/dds/fastdds_localhost.xml``)
  that allows UDP only on 127.0.0.1 and carries large messages through a 16 MiB shared-memory segment.

Each run also gets its own ``ROS_DOMAIN_ID`` so that parallel runs on one machine do not see each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, MutableMapping, Optional

PROFILE_RELATIVE_PATH = Path('config') / 'dds' / 'fastdds_localhost.xml'

# Domain ids handed to test runs. ROS 2 on Linux supports 0..101 and 215..232 without port clashes
# with the ephemeral range; 0 is everyone's default, so runs use 1..101.
DOMAIN_ID_MIN = 1
DOMAIN_ID_MAX = 101


def pick_domain_id(seed: int) -> int:
    """Map any integer (for example a process id) to a domain id in [DOMAIN_ID_MIN, DOMAIN_ID_MAX]."""
    span = DOMAIN_ID_MAX - DOMAIN_ID_MIN + 1
    return DOMAIN_ID_MIN + (int(seed) % span)


def find_profile(start: Optional[Path] = None) -> Path:
    """Locate the loopback Fast DDS profile.

    Looks in the installed ``molmoact_bringup`` share directory (when ``ament_index_python`` can find it)
    and then upwards from ``start`` (default: this file) for a source checkout's ``config/dds``.
    Raises FileNotFoundError with the places it looked.
    """
    looked = []
    try:
        from ament_index_python.packages import get_package_share_directory
        share = Path(get_package_share_directory('molmoact_bringup'))
        candidate = share / 'config' / 'dds' / PROFILE_RELATIVE_PATH.name
        looked.append(candidate)
        if candidate.is_file():
            return candidate
    except Exception:  # ament_index absent, or the package is not installed: fall back to the source tree
        pass
    here = (start or Path(__file__)).resolve()
    for parent in [here, *here.parents]:
        candidate = parent / PROFILE_RELATIVE_PATH
        looked.append(candidate)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        'Fast DDS loopback profile not found; looked at: ' + ', '.join(str(p) for p in looked))


def loopback_dds_env(env: Optional[Mapping[str, str]] = None, *, domain_id: Optional[int] = None,
                     profile: Optional[Path] = None) -> dict:
    """Return a copy of ``env`` (default: os.environ) with the loopback-only DDS settings applied.

    Values already present for ROS_DOMAIN_ID and RMW_IMPLEMENTATION are kept (a caller may choose them);
    the discovery range and the Fast DDS profile are always forced, since they are what keeps traffic
    on loopback.
    """
    out = dict(os.environ if env is None else env)
    out['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    out['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile or find_profile())
    out.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    if 'ROS_DOMAIN_ID' not in out:
        out['ROS_DOMAIN_ID'] = str(pick_domain_id(os.getpid() if domain_id is None else domain_id))
    elif domain_id is not None:
        out['ROS_DOMAIN_ID'] = str(pick_domain_id(domain_id))
    # ROS_LOCALHOST_ONLY is deprecated since Jazzy and conflicts with the discovery range if set to 0.
    out.pop('ROS_LOCALHOST_ONLY', None)
    return out


def apply_loopback_dds_env(environ: MutableMapping[str, str] = os.environ) -> dict:
    """Apply :func:`loopback_dds_env` to ``environ`` in place (before any DDS participant exists)."""
    new = loopback_dds_env(environ)
    environ.update(new)
    if 'ROS_LOCALHOST_ONLY' in environ:
        del environ['ROS_LOCALHOST_ONLY']
    return new


def is_loopback_only(env: Mapping[str, str]) -> bool:
    """True when ``env`` holds the settings that keep DDS traffic on loopback."""
    profile = env.get('FASTDDS_DEFAULT_PROFILES_FILE', '')
    return (env.get('ROS_AUTOMATIC_DISCOVERY_RANGE') == 'LOCALHOST'
            and bool(profile) and Path(profile).is_file())
