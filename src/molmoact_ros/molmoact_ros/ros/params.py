"""Typed parameter declarations: every parameter has a description and, where numeric, a range.

``ParamSpec`` is plain data (ROS-free) so that parameter tables can be unit-tested and rendered into
docs; :func:`declare_parameters` turns a table into rclpy declarations with ``ParameterDescriptor``
ranges (rclpy rejects out-of-range values itself) and validates string choices on every set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

Scalar = Union[bool, int, float, str]


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: name, default, description, and constraints.

    ``min_value``/``max_value`` apply to int and float parameters (both bounds required together),
    ``choices`` to string parameters. ``read_only`` parameters can only be set at start-up.
    """

    name: str
    default: Union[Scalar, Sequence[Scalar]]
    description: str
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    step: float = 0
    choices: Tuple[str, ...] = field(default_factory=tuple)
    read_only: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.description.strip():
            raise ValueError(f'parameter {self.name!r} needs a name and a description')
        numeric = isinstance(self.default, (int, float)) and not isinstance(self.default, bool)
        if (self.min_value is None) != (self.max_value is None):
            raise ValueError(f'parameter {self.name!r}: give both min_value and max_value, or neither')
        if numeric and self.min_value is None:
            raise ValueError(f'numeric parameter {self.name!r} needs a range (min_value, max_value)')
        if self.min_value is not None:
            if not numeric:
                raise ValueError(f'parameter {self.name!r}: a range applies only to int/float defaults')
            if not self.min_value <= self.default <= self.max_value:
                raise ValueError(f'parameter {self.name!r}: default {self.default} outside '
                                 f'[{self.min_value}, {self.max_value}]')
            if isinstance(self.default, int) and not (float(self.min_value).is_integer()
                                                      and float(self.max_value).is_integer()):
                raise ValueError(f'integer parameter {self.name!r} needs integer bounds')
        if self.choices:
            if not isinstance(self.default, str) or self.default not in self.choices:
                raise ValueError(f'parameter {self.name!r}: default {self.default!r} not in {self.choices}')

    def check(self, value: Any) -> Optional[str]:
        """Return None when ``value`` is acceptable, else a sentence saying why not."""
        if self.choices and value not in self.choices:
            return f'{self.name} must be one of {list(self.choices)}, got {value!r}'
        if self.min_value is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or not self.min_value <= value <= self.max_value:
                return f'{self.name} must be in [{self.min_value}, {self.max_value}], got {value!r}'
        return None

    def constraints_text(self) -> str:
        """Human-readable constraints (shown by `ros2 param describe`)."""
        if self.choices:
            return 'one of: ' + ', '.join(self.choices)
        if self.min_value is not None:
            return f'range [{self.min_value}, {self.max_value}]'
        return ''


def declare_parameters(node, specs: Iterable[ParamSpec]) -> Dict[str, Any]:
    """Declare ``specs`` on an rclpy node and return their current values by name.

    Installs one set-parameters callback that rejects values violating a spec's choices (ranges are
    enforced by rclpy from the descriptor).
    """
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    SetParametersResult)

    specs = list(specs)
    by_name = {s.name: s for s in specs}
    values: Dict[str, Any] = {}
    for spec in specs:
        kwargs = dict(description=spec.description, read_only=spec.read_only,
                      additional_constraints=spec.constraints_text())
        if spec.min_value is not None:
            if isinstance(spec.default, int):
                kwargs['integer_range'] = [IntegerRange(
                    from_value=int(spec.min_value), to_value=int(spec.max_value), step=int(spec.step))]
            else:
                kwargs['floating_point_range'] = [FloatingPointRange(
                    from_value=float(spec.min_value), to_value=float(spec.max_value),
                    step=float(spec.step))]
        default = list(spec.default) if isinstance(spec.default, (list, tuple)) else spec.default
        param = node.declare_parameter(spec.name, default, ParameterDescriptor(**kwargs))
        reason = spec.check(param.value)
        if reason:  # an override from a YAML file or the command line broke a choice constraint
            raise ValueError(f'invalid parameter override: {reason}')
        values[spec.name] = param.value

    def _validate(params):
        for p in params:
            spec = by_name.get(p.name)
            reason = spec.check(p.value) if spec is not None else None
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_validate)
    return values
