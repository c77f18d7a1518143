"""Fixtures of the dataset-builder tests: one simulated Panda, a few recorded episodes, one built dataset."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope='session')
def sim():
    from molmoact_bringup.sim.panda_sim import PandaSim, SimConfig
    s = PandaSim(SimConfig())
    yield s
    s.close()


@pytest.fixture(scope='session')
def episodes(sim, tmp_path_factory):
    """Two good 12-frame episodes under /demo: {'dir': Path, 'specs': [EpisodeSpec, ...]}."""
    from sim_episodes import EpisodeSpec, record_sim_episode
    root = tmp_path_factory.mktemp('episodes')
    specs = [record_sim_episode(sim, root / f'ep{i}.mcap', EpisodeSpec(seed=i)) for i in range(2)]
    return {'dir': root, 'specs': specs}


@pytest.fixture(scope='session')
def dataset(episodes, tmp_path_factory):
    """The dataset built from ``episodes`` with a briefly trained depth tokenizer (horizon 4)."""
    from molmoact_ros.training.build import BuildOptions, build_dataset
    out = tmp_path_factory.mktemp('ds') / 'dataset'
    report = build_dataset(BuildOptions(episodes=episodes['dir'], out_dir=out, horizon=4, train_depth_tokenizer=True,
                                        tokenizer_steps=4, progress=False), log=lambda m: None)
    return {'dir': out, 'report': report}
