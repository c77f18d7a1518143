"""Episode endings, Wilson intervals and the evaluation report (eval/results.py)."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from molmoact_bringup.eval.results import (EndReason, EpisodeBudget, EpisodeClock, EpisodeResult, EvalReport,
                                           latency_summary, wilson_interval)


def test_wilson_interval_known_values():
    # Hand-computed: 8 of 10 at 95 % -> [0.490, 0.943]; 0 of 5 -> [0, 0.434]; 50 of 50 -> [0.929, 1].
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.4345, abs=1e-3)
    lo, hi = wilson_interval(50, 50)
    assert lo == pytest.approx(0.9287, abs=1e-3) and hi == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@given(n=st.integers(1, 500), data=st.data())
def test_wilson_interval_contains_the_rate(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


@pytest.mark.parametrize('start', [0.0, 0.01, 1e6])
def test_episode_clock_endings_whatever_the_clock_start(start):
    clock = EpisodeClock(EpisodeBudget(max_steps=3, max_wall_s=10.0), started_s=start)
    assert clock.check(start, succeeded=False) is None
    clock.step()
    assert clock.check(start + 5.0, succeeded=False) is None
    assert clock.check(start + 10.0, succeeded=False) is EndReason.TIME_BUDGET
    # The first ending is kept.
    assert clock.check(start + 11.0, succeeded=True) is EndReason.TIME_BUDGET

    clock = EpisodeClock(EpisodeBudget(max_steps=2, max_wall_s=10.0), started_s=start)
    clock.step(), clock.step()
    assert clock.check(start + 1.0, succeeded=True) is EndReason.SUCCESS  # success wins over the budget
    clock = EpisodeClock(EpisodeBudget(max_steps=2, max_wall_s=10.0), started_s=start)
    clock.step(), clock.step()
    assert clock.check(start + 1.0, succeeded=False) is EndReason.STEP_BUDGET


def test_budget_validation():
    with pytest.raises(ValueError):
        EpisodeBudget(max_steps=0)
    with pytest.raises(ValueError):
        EpisodeBudget(max_wall_s=math.inf)


def test_report_rates_table_and_json(tmp_path):
    report = EvalReport('scripted', '', 'lift')
    for i, ok in enumerate([True, True, False, True]):
        report.episodes.append(EpisodeResult(i, seed=100 + i, task='lift', success=ok,
                                             end_reason='success' if ok else 'time_budget', wall_s=10.0 + i))
    report.episodes.append(EpisodeResult(4, seed=104, task='other', success=False, end_reason='crashed'))
    rates = report.rates()
    assert rates['lift']['successes'] == 3 and rates['lift']['episodes'] == 4
    assert rates['overall']['success_rate'] == pytest.approx(0.6)
    lo, hi = wilson_interval(3, 5)
    assert rates['overall']['wilson95'] == [round(lo, 4), round(hi, 4)]
    table = report.table()
    assert 'lift' in table and '3/4' in table and 'overall' in table and '60.0 %' in table
    report.write(tmp_path / 'results.json')
    data = json.loads((tmp_path / 'results.json').read_text())
    assert data['policy'] == 'scripted' and data['scene'] == 'lift' and len(data['episodes']) == 5
    assert data['episodes'][0]['seed'] == 100 and data['episodes'][0]['success'] is True
    assert data['summary']['end_reasons'] == {'crashed': 1, 'success': 3, 'time_budget': 1}
    assert any(line.startswith('success_rate: 60.0 %') for line in report.figures())


def test_latency_summary():
    assert latency_summary([]) == {'count': 0, 'median_s': None, 'p90_s': None, 'max_s': None}
    s = latency_summary([float(i) for i in range(1, 11)])
    assert s['median_s'] == 5.5 and s['p90_s'] == 9.0 and s['max_s'] == 10.0


def test_steering_figures_count_the_episodes_within_3_cm():
    report = EvalReport('model', 'sim-lift', 'lift')
    for i, closest in enumerate([0.01, 0.02, 0.05, 0.2]):
        steering = {'mode': 'edit', 'closest_approach_m': closest, 'steered': closest < 0.03}
        report.episodes.append(EpisodeResult(i, seed=i, task='lift', success=closest < 0.03, end_reason='success',
                                             extra={'steering': steering}))
    figures = report.figures()
    lo, hi = wilson_interval(2, 4)
    assert 'steering_mode: edit' in figures and 'steering_within_3cm_rate: 50.0 %' in figures
    assert f'steering_within_3cm_wilson95_low: {100 * lo:.1f} %' in figures
    assert 'steering_closest_approach_median: 3.5 cm' in figures
    plain = EvalReport('model', 'sim-lift', 'lift')
    plain.episodes.append(EpisodeResult(0, seed=0, task='lift', success=True, end_reason='success'))
    assert not any(line.startswith('steering') for line in plain.figures())
