"""Episodes, their endings and the evaluation report: ROS-free, handed the time.

:class:`EpisodeClock` decides when an episode ends (success, step budget, time budget) from what the caller
hands it; :class:`EpisodeResult` is one episode's record; :func:`wilson_interval` and :class:`EvalReport`
turn episodes into success rates with 95 % Wilson score intervals, per task and overall, as JSON and as a
printed table.
"""

from __future__ import annotations

import enum
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

__all__ = ['EndReason', 'EpisodeBudget', 'EpisodeClock', 'EpisodeResult', 'EvalReport', 'wilson_interval',
           'latency_summary']


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % for the default ``z``); (0, 1) for n = 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f'need 0 <= successes <= n, got {successes} of {n}')
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The bounds are exactly 0 and 1 at k = 0 and k = n (rounding would otherwise leave 1 - 1e-16).
    lo = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    hi = 1.0 if successes == n else min(1.0, max(p, centre + half))
    return lo, hi


class EndReason(str, enum.Enum):
    """Why an episode ended. Only SUCCESS counts as a success."""

    SUCCESS = 'success'
    STEP_BUDGET = 'step_budget'      # the policy used its steps (queries / chunks) without success
    TIME_BUDGET = 'time_budget'      # the episode's wall-clock budget ran out
    POLICY_FAILED = 'policy_failed'  # the goal failed / was rejected, or the policy raised
    CRASHED = 'crashed'              # a process of the suite died or the episode raised
    NO_RESULT = 'no_result'          # the goal gave no result in time (hung)


@dataclass(frozen=True)
class EpisodeBudget:
    """Bounds of one episode: policy steps (queries for a model, chunks for the scripted expert) and seconds."""

    max_steps: int = 40
    max_wall_s: float = 120.0

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f'max_steps must be >= 1, got {self.max_steps}')
        if not (math.isfinite(self.max_wall_s) and self.max_wall_s > 0):
            raise ValueError(f'max_wall_s must be finite and > 0, got {self.max_wall_s!r}')


class EpisodeClock:
    """Tracks one episode against its budget. ``check`` returns the end reason once the episode is over.

    Success wins over a budget that runs out at the same check (the simulator judged it first)."""

    def __init__(self, budget: EpisodeBudget, started_s: float):
        self.budget = budget
        self.started_s = float(started_s)
        self.steps = 0
        self.ended: Optional[EndReason] = None
        self.ended_s: Optional[float] = None

    def step(self) -> None:
        self.steps += 1

    def elapsed_s(self, now_s: float) -> float:
        return float(now_s) - self.started_s

    def check(self, now_s: float, succeeded: bool) -> Optional[EndReason]:
        if self.ended is not None:
            return self.ended
        if succeeded:
            reason = EndReason.SUCCESS
        elif self.steps >= self.budget.max_steps:
            reason = EndReason.STEP_BUDGET
        elif self.elapsed_s(now_s) >= self.budget.max_wall_s:
            reason = EndReason.TIME_BUDGET
        else:
            return None
        self.end(reason, now_s)
        return reason

    def end(self, reason: EndReason, now_s: float) -> None:
        """End the episode for ``reason`` (the first ending is kept)."""
        if self.ended is None:
            self.ended, self.ended_s = EndReason(reason), float(now_s)


def latency_summary(values: Sequence[float]) -> dict:
    """count, median, p90 and max of a list of seconds (None fields when empty)."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return {'count': 0, 'median_s': None, 'p90_s': None, 'max_s': None}
    p90 = xs[min(len(xs) - 1, int(math.ceil(0.9 * len(xs))) - 1)]
    return {'count': len(xs), 'median_s': round(statistics.median(xs), 4), 'p90_s': round(p90, 4),
            'max_s': round(xs[-1], 4)}


@dataclass
class EpisodeResult:
    """One episode as ``results.json`` lists it."""

    index: int
    seed: int
    task: str
    success: bool
    end_reason: str
    detail: str = ''
    steps: int = 0
    wall_s: float = 0.0
    sim_success_s: Optional[float] = None
    stage_latency: Dict[str, dict] = field(default_factory=dict)
    recording: Optional[str] = None
    gif: Optional[str] = None
    extra: Dict[str, object] = field(default_factory=dict)


@dataclass
class EvalReport:
    """Everything ``evaluate`` writes: the run's settings and its episodes."""

    policy: str
    model: str
    scene: str
    episodes: List[EpisodeResult] = field(default_factory=list)
    settings: Dict[str, object] = field(default_factory=dict)

    def rates(self) -> Dict[str, dict]:
        """Per task and ``overall``: successes, episodes, rate and its 95 % Wilson interval."""
        groups: Dict[str, List[EpisodeResult]] = {}
        for ep in self.episodes:
            groups.setdefault(ep.task, []).append(ep)
        out = {}
        for name, eps in sorted(groups.items()) + [('overall', list(self.episodes))]:
            k, n = sum(e.success for e in eps), len(eps)
            lo, hi = wilson_interval(k, n)
            out[name] = {'successes': k, 'episodes': n, 'success_rate': (k / n) if n else None,
                         'wilson95': [round(lo, 4), round(hi, 4)]}
        return out

    def end_reasons(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for ep in self.episodes:
            counts[ep.end_reason] = counts.get(ep.end_reason, 0) + 1
        return dict(sorted(counts.items()))

    def to_json(self) -> dict:
        return {'policy': self.policy, 'model': self.model, 'scene': self.scene, 'settings': self.settings,
                'summary': {'rates': self.rates(), 'end_reasons': self.end_reasons(),
                            'wall_s_per_episode': latency_summary([e.wall_s for e in self.episodes])},
                'episodes': [asdict(e) for e in self.episodes]}

    def write(self, path) -> None:
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(self.to_json(), f, indent=2, default=str)
            f.write('\n')

    def table(self) -> str:
        """The printed table: one row per task and the overall row."""
        rows = [('task', 'success', 'rate', '95% Wilson')]
        for name, r in self.rates().items():
            rate = '-' if r['success_rate'] is None else f"{100 * r['success_rate']:.1f} %"
            lo, hi = r['wilson95']
            rows.append((name, f"{r['successes']}/{r['episodes']}", rate, f'[{100 * lo:.1f}, {100 * hi:.1f}] %'))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ['  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, '  '.join('-' * w for w in widths))
        return '\n'.join(lines)

    def figures(self) -> List[str]:
        """``name: value unit`` lines for benchmarks and READMEs."""
        r = self.rates()['overall']
        lo, hi = r['wilson95']
        wall = latency_summary([e.wall_s for e in self.episodes])
        lines = [f'success_rate: {0.0 if r["success_rate"] is None else 100 * r["success_rate"]:.1f} %',
                 f'success_wilson95_low: {100 * lo:.1f} %', f'success_wilson95_high: {100 * hi:.1f} %',
                 f'episodes: {r["episodes"]} count']
        if wall['median_s'] is not None:
            lines.append(f'wall_time_per_episode_median: {wall["median_s"]:.1f} s')
        steering = [e.extra['steering'] for e in self.episodes if isinstance(e.extra.get('steering'), dict)]
        if steering:
            near = sum(bool(s['steered']) for s in steering)
            lo, hi = wilson_interval(near, len(steering))
            closest = sorted(float(s['closest_approach_m']) for s in steering)
            lines += [f'steering_mode: {steering[0]["mode"]}',
                      f'steering_within_3cm_rate: {100 * near / len(steering):.1f} %',
                      f'steering_within_3cm_wilson95_low: {100 * lo:.1f} %',
                      f'steering_within_3cm_wilson95_high: {100 * hi:.1f} %',
                      f"steering_closest_approach_median: {100 * statistics.median(closest):.1f} cm"]
        return lines
