"""evaluate's episode loop (ROS-free parts: the context check is injected)."""


def test_a_signal_stops_the_episode_loop_with_the_episodes_so_far(monkeypatch):
    """rclpy's handlers shut the context down on SIGTERM / SIGINT: the loop stops before the next episode and
    says so (it used to run every remaining episode against a dead context)."""
    from types import SimpleNamespace

    from molmoact_bringup.eval import run
    from molmoact_bringup.eval.results import EpisodeResult, EvalReport
    ev = run.Evaluator.__new__(run.Evaluator)
    ev.args = SimpleNamespace(episodes=5, seed=0, scene='lift')
    ev.report = EvalReport('scripted', '', 'lift')
    ev.suite = SimpleNamespace(sim_alive=lambda: True)
    ev._episode = lambda i, recording: EpisodeResult(i, seed=i, task='lift', success=True, end_reason='success')
    context = iter([True, True, False, True])
    monkeypatch.setattr(run, '_ros_ok', lambda: next(context))
    ev._episodes(None)
    assert [e.index for e in ev.report.episodes] == [0, 1]
    assert ev.report.settings['stopped'] == 'a signal shut ROS down: 2 of 5 episodes finished'
    monkeypatch.setattr(run, '_ros_ok', lambda: True)
    ev.report = EvalReport('scripted', '', 'lift')
    ev._episodes(None)
    assert len(ev.report.episodes) == 5 and 'stopped' not in ev.report.settings


def test_an_episode_cut_off_by_the_signal_is_not_counted_as_a_failure(monkeypatch):
    from types import SimpleNamespace

    from molmoact_bringup.eval import run
    from molmoact_bringup.eval.results import EpisodeResult, EvalReport
    ev = run.Evaluator.__new__(run.Evaluator)
    ev.args = SimpleNamespace(episodes=5, seed=0, scene='lift')
    ev.report = EvalReport('scripted', '', 'lift')
    ev.suite = SimpleNamespace(sim_alive=lambda: True)
    ok = {'value': True}

    def episode(i, recording):
        if i == 1:   # the signal arrives during the second episode, which then fails to publish
            ok['value'] = False
            return EpisodeResult(i, seed=i, task='lift', success=False, end_reason='crashed', detail='RCLError')
        return EpisodeResult(i, seed=i, task='lift', success=True, end_reason='success')
    ev._episode = episode
    monkeypatch.setattr(run, '_ros_ok', lambda: ok['value'])
    ev._episodes(None)
    assert [e.index for e in ev.report.episodes] == [0]
    assert ev.report.settings['interrupted_episode'] == 1
    assert ev.report.settings['stopped'] == 'a signal shut ROS down: 1 of 5 episodes finished'
    # A crash with ROS still up is a failure as before.
    ok['value'] = True
    ev.report = EvalReport('scripted', '', 'lift')
    ev._episode = lambda i, recording: EpisodeResult(i, seed=i, task='lift', success=False, end_reason='crashed')
    ev._episodes(None)
    assert len(ev.report.episodes) == 5 and 'interrupted_episode' not in ev.report.settings
