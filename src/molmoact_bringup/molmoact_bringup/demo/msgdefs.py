"""ROS 2 message definitions in the ``ros2msg`` schema format that MCAP (Foxglove, ``ros2 bag``) reads.

ROS-free: reads the ``share/<package>/msg/<Type>.msg`` files an install holds. The schema of a type is
its own ``.msg`` text followed, for every message type it depends on (directly or not, each once, in
order of first use), by a separator line of 80 ``=``, a line ``MSG: <package>/<Type>`` and that type's
``.msg`` text. Field types are read from each line's first word: primitives (``bool``, ``int32``,
``string<=10``, ...) need nothing, ``pkg/Type`` names another package's type, a bare ``Type`` one of the
same package; array suffixes (``[]``, ``[3]``, ``[<=5]``) are ignored.

An action's feedback topic (``pkg/action/<Action>_FeedbackMessage``) has no ``.msg`` file, and the
ros2msg grammar allows no ``_`` in a type name: such topics are left out (as ``ros2 bag record`` leaves
hidden topics out by default); its status topic (``action_msgs/msg/GoalStatusArray``) is an ordinary one.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

__all__ = ['PRIMITIVES', 'SEPARATOR', 'MessageDefinitionError', 'default_share_dirs', 'normalize_type',
           'find_msg_file', 'field_types', 'schema_text', 'decoder', 'all_schemas']

PRIMITIVES = frozenset({'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16',
                        'int32', 'uint32', 'int64', 'uint64', 'string', 'wstring', 'time', 'duration'})
SEPARATOR = '=' * 80


class MessageDefinitionError(LookupError):
    """A message type whose ``.msg`` file is not installed, or a malformed type name."""


def default_share_dirs(environ: Optional[Dict[str, str]] = None) -> List[Path]:
    """``<prefix>/share`` of every AMENT_PREFIX_PATH entry, then of this Python's prefix (where the PyPI
    ROS wheels install theirs); only those that exist, each once."""
    environ = os.environ if environ is None else environ
    prefixes = [p for p in environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p] + [sys.prefix]
    out: List[Path] = []
    for prefix in prefixes:
        share = Path(prefix) / 'share'
        if share.is_dir() and share not in out:
            out.append(share)
    return out


def normalize_type(name: str) -> str:
    """``pkg/msg/Type`` or ``pkg/Type`` -> ``pkg/msg/Type`` (MessageDefinitionError for anything else, e.g.
    an action's ``pkg/action/<Action>_FeedbackMessage``: ros2msg names allow no such type)."""
    parts = name.strip().split('/')
    if len(parts) == 2 and all(parts):
        return f'{parts[0]}/msg/{parts[1]}'
    if len(parts) == 3 and parts[1] == 'msg' and parts[0] and parts[2]:
        return name.strip()
    raise MessageDefinitionError(f'not a message type name: {name!r} (want pkg/msg/Type)')


def find_msg_file(type_name: str, share_dirs: Sequence[Path]) -> Path:
    pkg, _, msg = normalize_type(type_name).split('/')
    for share in share_dirs:
        path = Path(share) / pkg / 'msg' / f'{msg}.msg'
        if path.is_file():
            return path
    raise MessageDefinitionError(f'{pkg}/msg/{msg}.msg not found under {[str(s) for s in share_dirs]}')


_ARRAY = re.compile(r'\[[^\]]*\]$')
_BOUND = re.compile(r'<=\d+$')


def field_types(msg_text: str, package: str) -> List[str]:
    """The message types (``pkg/msg/Type``) a ``.msg`` text uses, in order, each once (no primitives)."""
    found: List[str] = []
    for raw in msg_text.splitlines():
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        base = _BOUND.sub('', _ARRAY.sub('', line.split()[0]))
        if base in PRIMITIVES:
            continue
        if '/' in base:
            full = normalize_type(base)
        elif base == 'Header':
            full = 'std_msgs/msg/Header'
        else:
            full = f'{package}/msg/{base}'
        if full not in found:
            found.append(full)
    return found


def schema_text(type_name: str, share_dirs: Optional[Sequence[Path]] = None) -> str:
    """The ros2msg schema of ``type_name`` (see the module docstring); MessageDefinitionError when a
    ``.msg`` file of it or of a dependency is missing."""
    dirs = list(default_share_dirs() if share_dirs is None else share_dirs)
    root = normalize_type(type_name)
    texts: Dict[str, str] = {}
    order: List[str] = []

    def visit(name: str) -> None:
        if name in texts:
            return
        text = find_msg_file(name, dirs).read_text()
        texts[name] = text
        order.append(name)
        for dep in field_types(text, name.split('/')[0]):
            visit(dep)

    visit(root)
    parts = [texts[root].rstrip('\n')]
    for name in order[1:]:
        pkg, _, msg = name.split('/')
        parts.append(f'{SEPARATOR}\nMSG: {pkg}/{msg}\n{texts[name].rstrip(chr(10))}')
    return '\n'.join(parts) + '\n'


def decoder(type_name: str, schema: str):
    """A CDR decoder for ``type_name`` built from ``schema`` by ``mcap_ros2`` (what MCAP readers do): proves
    the schema parses; raises (``mcap_ros2``'s errors) when it does not."""
    from mcap.records import Schema
    from mcap_ros2.decoder import DecoderFactory
    return DecoderFactory().decoder_for('cdr', Schema(id=1, name=normalize_type(type_name), encoding='ros2msg',
                                                      data=schema.encode()))


def all_schemas(type_names: Iterable[str], share_dirs: Optional[Sequence[Path]] = None) -> Dict[str, str]:
    """``{type: schema text}`` for several types (MessageDefinitionError on the first missing one)."""
    dirs = list(default_share_dirs() if share_dirs is None else share_dirs)
    return {normalize_type(t): schema_text(t, dirs) for t in type_names}
