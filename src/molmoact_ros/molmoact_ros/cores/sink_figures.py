"""The command sink's figures as typed values: one snapshot that ``/diagnostics`` and the demo both read.

:class:`SinkFigures` is frozen and ROS-free. :meth:`ChunkIntake.figures
<molmoact_ros.cores.chunk_intake.ChunkIntake.figures>` fills in what the core knows (the governor's
halts and clamps, the executor's chunks and ages, the intake's rejections and pending chunk); the node adds
what only it knows (commands and holds it published, its tick times, the IK backend, GripperCommand goals).
:meth:`SinkFigures.display_values` gives the ``/diagnostics`` key/value strings, in the order and format the
sink has always published them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional

__all__ = ['SafetyFigures', 'ExecutionFigures', 'IntakeFigures', 'SinkFigures']


def _frozen(mapping: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType({str(k): int(v) for k, v in mapping.items()})


def _flag(value: bool) -> str:
    return 'true' if value else 'false'


def _seconds(value: Optional[float]) -> str:
    return '' if value is None else f'{value:.3f}'


@dataclass(frozen=True)
class SafetyFigures:
    """The safety governor's state and counts (keys: ``HaltCause`` / ``ClipKind`` values)."""

    e_stopped: bool = False
    halted_cause: str = ''          # '' while not halted
    last_halt_cause: str = ''       # '' before the first halt
    halts: Mapping[str, int] = field(default_factory=dict)
    clamps: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'halts', _frozen(self.halts))
        object.__setattr__(self, 'clamps', _frozen(self.clamps))


@dataclass(frozen=True)
class ExecutionFigures:
    """The arm executor's figures (``chunks``: queue offers per ``OfferResult`` value)."""

    action_age_s: Optional[float] = None
    action_age_max_s: Optional[float] = None
    action_lag_s: Optional[float] = None
    skipped_steps: int = 0
    ik_failures: int = 0
    ik_time_s: Optional[float] = None
    chunks: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'chunks', _frozen(self.chunks))


@dataclass(frozen=True)
class IntakeFigures:
    """The chunk intake's own figures (``rejected``: per ``Rejection`` value)."""

    rejected: Mapping[str, int] = field(default_factory=dict)
    pending_chunk: bool = False
    pending_discarded: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, 'rejected', _frozen(self.rejected))


@dataclass(frozen=True)
class SinkFigures:
    """One snapshot of the command sink. ``safety`` and ``intake`` are None before configure, ``execution``
    until kinematics exist; the per-kind mappings below read empty then."""

    robot_profile: str = ''
    sink_mode: str = ''
    kinematics_ready: bool = False
    commands_sent: int = 0
    holds_sent: int = 0
    plan_only_chunks: int = 0
    rejected_chunks: int = 0
    #: ``IkSelection.describe()`` of the joint_trajectory sink (None in other modes / before kinematics).
    ik_backend: Optional[str] = None
    #: GripperCommand goals sent (None without a GripperCommand client) and their outcomes.
    gripper_goals_sent: Optional[int] = None
    gripper_goals: Mapping[str, int] = field(default_factory=dict)
    #: Control-tick time (None before the first tick).
    tick_time_mean_s: Optional[float] = None
    tick_time_max_s: Optional[float] = None
    safety: Optional[SafetyFigures] = None
    execution: Optional[ExecutionFigures] = None
    intake: Optional[IntakeFigures] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'gripper_goals', _frozen(self.gripper_goals))

    # The per-kind figures, empty where their source does not exist yet.
    @property
    def clamps(self) -> Mapping[str, int]:
        """Clips per limit kind (``ClipKind`` value -> count)."""
        return self.safety.clamps if self.safety is not None else _frozen({})

    @property
    def halts(self) -> Mapping[str, int]:
        """Halts per cause (``HaltCause`` value -> count)."""
        return self.safety.halts if self.safety is not None else _frozen({})

    @property
    def chunks(self) -> Mapping[str, int]:
        """Chunks offered to the execution queue per result (``OfferResult`` value -> count)."""
        return self.execution.chunks if self.execution is not None else _frozen({})

    @property
    def rejected(self) -> Mapping[str, int]:
        """Rejected chunks per reason (``Rejection`` value -> count)."""
        return self.intake.rejected if self.intake is not None else _frozen({})

    def display_values(self) -> list[tuple[str, str]]:
        """The ``/diagnostics`` key/value strings (the sink's published names and formats)."""
        values = [('robot profile', self.robot_profile), ('sink mode', self.sink_mode),
                  ('kinematics ready', _flag(self.kinematics_ready)),
                  ('commands sent', str(self.commands_sent)), ('holds sent', str(self.holds_sent)),
                  ('plan-only chunks', str(self.plan_only_chunks)),
                  ('rejected chunks', str(self.rejected_chunks))]
        if self.ik_backend is not None:
            values.append(('ik backend', self.ik_backend))
        if self.gripper_goals_sent is not None:
            values.append(('gripper goals sent', str(self.gripper_goals_sent)))
            values += [(f'gripper goals {k}', str(n)) for k, n in self.gripper_goals.items()]
        if self.tick_time_mean_s is not None:
            values += [('tick time mean s', f'{self.tick_time_mean_s:.6f}'),
                       ('tick time max s', f'{(self.tick_time_max_s or 0.0):.6f}')]
        s = self.safety
        if s is not None:
            values += [('e-stop latched', _flag(s.e_stopped)), ('halted cause', s.halted_cause),
                       ('last halt cause', s.last_halt_cause)]
            values += [(f'halts {cause}', str(n)) for cause, n in s.halts.items()]
            values += [(f'clips {kind}', str(n)) for kind, n in s.clamps.items()]
        e = self.execution
        if e is not None:
            values += [('action age at execution s', _seconds(e.action_age_s)),
                       ('action age at execution max s', _seconds(e.action_age_max_s)),
                       ('action lag s', _seconds(e.action_lag_s)),
                       ('skipped steps', str(e.skipped_steps)), ('ik failures', str(e.ik_failures)),
                       ('ik time s', _seconds(e.ik_time_s))]
            values += [(f'chunks {k}', str(n)) for k, n in e.chunks.items()]
        i = self.intake
        if i is not None:
            values += [(f'rejected chunks {reason}', str(n)) for reason, n in i.rejected.items()]
            values += [('pending chunk', _flag(i.pending_chunk)),
                       ('pending chunks discarded', str(i.pending_discarded))]
        return values
