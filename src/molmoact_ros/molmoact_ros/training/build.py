"""``build_dataset``: an arm's recorded episodes (MCAP) -> a MolmoAct training dataset in LeRobot's format.

    build_dataset EPISODES_DIR OUT_DIR [--profile sim_panda] [--horizon 8] [--topics topics.yaml]
                  [--depth-tokenizer PATH | --train-depth-tokenizer] [--only-successful]

Per episode (every ``*.mcap`` under EPISODES_DIR, or one file): the recording is decoded
(:mod:`.recording`), laid on the profile's step period (:mod:`.episode`), and each step but the last
becomes an example (the last has no next pose, so no action):

* ``observation.image``: the frame as the model sees it (longer side at most ``--max-image-side``, 336,
  like the perception node), ``observation.state``: the TCP pose (x, y, z, roll, pitch, yaw; base frame)
  and the gripper's finger position;
* ``molmoact.depth_codes``: 100 codes from the aligned depth through the depth tokenizer;
* ``molmoact.trace`` / ``trace_length``: up to 5 [x, y] points in 0..255 (padded with -1);
* ``action``: the step's end-effector delta + gripper; ``molmoact.action_chunk`` / ``action_bins``: H steps
  from this one (row-major H x 7), normalised with the dataset's q01/q99 and binned as MolmoAct does.
  ``--actions measured`` (default): the deltas of the recorded end-effector poses, step to step;
  ``--actions commanded``: the chunks that were commanded (the recording's ``ActionChunk`` topic, e.g. a
  scripted expert's or a teleoperator's), each labelling the step of the observation it was computed
  from; steps without one are no examples. Commanded labels are what the arm was told, measured ones what
  it did: an arm that lags its commands (a simulated one on a loaded CPU, a compliant real one) moves in
  bursts, and a model trained on the bursts learns that standing still is the commonest action;
* ``molmoact.answer``: the full answer text (checked by parsing it back), ``molmoact.prompt``: the prompt.

A bad episode (missing topic, unsynchronised stamps, NaN pose, shorter than the horizon, not successful with
``--only-successful``) is skipped with its reason, printed and kept in ``meta/molmoact.json``; the others
are still written. The dataset is built in ``OUT_DIR.partial`` and moved to ``OUT_DIR`` at the end, so an
existing dataset is never left half-overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, NamedTuple, Optional

import numpy as np
from transforms3d.euler import mat2euler

from ..model.processing import PromptVariant, build_prompt
from ..reasoning import grammar
from ..reasoning.action_space import NormStats, normalize_bounds_q99, normalized_to_bins
from ..reasoning.depth import relative_depth_image
from ..robot.execution import DeltaFrame
from ..robot.profiles import RobotProfile, load_profile, resolve_urdf_file
from .config import SyncConfig, TopicConfig, load_topic_config
from .depth_tokenizer import DepthTokenizer, load_depth_tokenizer, save_checkpoint, train_depth_tokenizer
from .episode import EpisodeSteps, synchronize
from .labels import (AnswerMismatch, action_chunks, answer_text, commanded_chunks, ee_deltas, gripper_raw_value,
                     model_image, own_path_from, traces)
from .lerobot_format import LeRobotWriter
from .recording import EpisodeError, RawEpisode, read_episode

__all__ = ['BuildOptions', 'BuildReport', 'build_dataset', 'dataset_statistics', 'main']

ACTION_SOURCES = ('measured', 'commanded')
#: What the norm stats' ``q01`` / ``q99`` (the bounds actions are normalised and binned by) hold.
ACTION_BOUNDS = ('q01_q99', 'min_max')
ACTION_NAMES = ['dx', 'dy', 'dz', 'r0', 'r1', 'r2', 'gripper']
STATE_NAMES = ['x', 'y', 'z', 'roll', 'pitch', 'yaw', 'gripper']


@dataclass
class BuildOptions:
    episodes: Path
    out_dir: Path
    profile: str = 'sim_panda'
    horizon: int = 8
    topics: TopicConfig = field(default_factory=TopicConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    depth_tokenizer: Optional[Path] = None
    train_depth_tokenizer: bool = False
    tokenizer_steps: int = 300
    tokenizer_images: int = 2048
    only_successful: bool = False
    template: str = 'finetune'
    max_image_side_px: int = 336
    instruction: Optional[str] = None
    dataset_key: Optional[str] = None
    overwrite: bool = False
    progress: bool = True
    seed: int = 0
    actions: str = 'measured'
    action_bounds: str = 'q01_q99'


@dataclass
class BuildReport:
    out_dir: Path
    examples: int
    episodes: int
    skipped: List[dict]
    seconds: float
    tokenizer: dict
    dropped_steps: int = 0

    @property
    def seconds_per_1000_steps(self) -> float:
        return self.seconds / self.examples * 1000.0 if self.examples else float('nan')


@dataclass
class _Prepared:
    name: str
    instruction: str
    images: np.ndarray        # (M, h, w, 3) model images
    depth_u8: np.ndarray      # (M, 320, 320)
    traces: list              # M lists of (x, y)
    actions: np.ndarray       # (M, 7)
    state: np.ndarray         # (M, 7)
    stamps: np.ndarray        # (M,)
    succeeded: Optional[bool]
    chunks: Optional[np.ndarray] = None    # (M, H, 7) commanded chunks (NaN: none), or None: from ``actions``
    padding: Optional[np.ndarray] = None   # (M,) padded steps of ``chunks``


#: The big arrays of a prepared episode, kept on disk between the two passes (the images and depth maps of a
#: few hundred episodes do not fit in memory: 500 simulated episodes took 20 GB when held together).
_SPILLED = ('images', 'depth_u8', 'state', 'stamps')


@dataclass
class _Spilled:
    """A prepared episode whose big arrays wait in ``path`` (an .npz); the small ones stay in memory."""

    name: str
    instruction: str
    traces: list
    actions: np.ndarray
    image_hw: tuple
    path: Path
    chunks: Optional[np.ndarray] = None
    padding: Optional[np.ndarray] = None

    @staticmethod
    def spill(prep: _Prepared, path: Path) -> '_Spilled':
        np.savez(path, **{k: getattr(prep, k) for k in _SPILLED})
        return _Spilled(prep.name, prep.instruction, prep.traces, prep.actions, prep.images.shape[1:3], path,
                        prep.chunks, prep.padding)

    @property
    def frames(self) -> int:
        return len(self.actions)

    def load(self) -> _Prepared:
        with np.load(self.path) as z:
            arrays = {k: z[k] for k in _SPILLED}
        return _Prepared(self.name, self.instruction, arrays['images'], arrays['depth_u8'], self.traces,
                         self.actions, arrays['state'], arrays['stamps'], None, self.chunks, self.padding)

    def label_actions(self) -> np.ndarray:
        """The per-step actions the norm stats are computed from: every step of the commanded chunks that
        label an example, else the measured step actions."""
        if self.chunks is None:
            return self.actions
        keep = [i for i, t in enumerate(self.traces) if t]
        return self.chunks[keep].reshape(-1, self.chunks.shape[-1])

    def depth_maps(self, indices) -> np.ndarray:
        with np.load(self.path) as z:
            return z['depth_u8'][indices]


def _depth_pool(prepared: List[_Spilled], count: int, rng) -> np.ndarray:
    """``count`` depth maps drawn uniformly without replacement from all frames (all when there are fewer),
    in frame order, read from the spilled episodes."""
    total = sum(p.frames for p in prepared)
    chosen = np.arange(total) if total <= count else np.sort(rng.choice(total, count, replace=False))
    starts = np.cumsum([0] + [p.frames for p in prepared])
    parts = []
    for i, p in enumerate(prepared):
        local = chosen[(chosen >= starts[i]) & (chosen < starts[i + 1])] - starts[i]
        if len(local):
            parts.append(p.depth_maps(local))
    return np.concatenate(parts)


def _find_episodes(path: Path) -> List[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f'episodes: {path} is neither an MCAP file nor a directory')
    return sorted(path.rglob('*.mcap'))


def _episode_name(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return path.stem
    return str(rel.with_suffix('')) if rel.parts else path.stem


def _fk(profile: RobotProfile):
    from ..robot.kinematics import ArmKinematics
    kin = ArmKinematics.from_urdf_file(str(resolve_urdf_file(profile)), base_frame=profile.frames.base,
                                       ee_frame=profile.frames.ee, joint_names=list(profile.joint_names))
    return lambda q: kin.fk(q)


class _Commanded(NamedTuple):
    stamps: np.ndarray          # each label chunk's observation time (s)
    chunks: list                # (H, 7) label chunks in the profile's action units
    executed: Optional[tuple]   # (stamps, chunks) that drove the arm where another topic did, else None


def _commanded(raw: RawEpisode, profile: RobotProfile) -> _Commanded:
    """The recorded commanded chunks in the profile's action units, and where another topic drove the arm
    (``executed_chunk``), its chunks the same way; an :class:`EpisodeError` naming the topic when there are
    none or they are in another action space."""
    stream = raw.action_chunks
    if stream is None:
        raise EpisodeError(raw.name, raw.topics.get('action_chunk', 'action_chunk'),
                           'missing: no commanded action chunks (ActionChunk topic) for --actions commanded')
    executed = _chunks_in_profile_units(raw, raw.executed_chunks, profile) if raw.executed_chunks else None
    return _Commanded(*_chunks_in_profile_units(raw, stream, profile), executed)


def _chunks_in_profile_units(raw: RawEpisode, stream, profile: RobotProfile) -> tuple[np.ndarray, list]:
    frame = profile.frames.base if profile.delta_frame is DeltaFrame.BASE else profile.frames.ee
    scale = profile.action_scale
    out = []
    for stamp, chunk in zip(stream.stamps, stream.values):
        problems = []
        if chunk.rotation_convention != profile.rotation_convention.value:
            problems.append(f'rotation convention {chunk.rotation_convention}, the profile '
                            f'{profile.rotation_convention.value}')
        if chunk.delta_frame_id and chunk.delta_frame_id != frame:
            problems.append(f'delta frame {chunk.delta_frame_id!r}, the profile {frame!r}')
        if abs(chunk.step_period_s - profile.step_period_s) > 1e-6:
            problems.append(f'step period {chunk.step_period_s:g} s, the profile {profile.step_period_s:g} s')
        if problems:
            raise EpisodeError(raw.name, stream.topic, f'the chunk at {stamp:.3f} s has ' + '; '.join(problems))
        a = chunk.actions.copy()
        if scale is not None and not scale.is_identity:
            a[:, :3] /= scale.translation_m_per_unit
            a[:, 3:6] /= scale.rotation_rad_per_unit
        out.append(a)
    return stream.stamps, out


def _prepare(steps: EpisodeSteps, profile: RobotProfile, opts: BuildOptions,
             commanded: Optional[_Commanded] = None) -> tuple[_Prepared, int]:
    """Labels of every step but the last; ``commanded``: of :func:`_commanded`."""
    n = len(steps)
    imgs, m2s = [], None
    for rgb in steps.images[:n - 1]:
        im, m2s = model_image(rgb, opts.max_image_side_px)
        imgs.append(im)
    mh, mw = imgs[0].shape[:2]
    tr = traces(steps.ee_poses[:, :3, 3], steps.camera_poses, steps.intrinsics, mw, mh, m2s)[:n - 1]
    deltas = ee_deltas(steps.ee_poses, profile.delta_frame, profile.rotation_convention, profile.action_scale)
    grip = np.array([gripper_raw_value(c, profile.gripper) for c in steps.gripper_command[:n - 1]])
    actions = np.concatenate([deltas, grip[:, None]], axis=1)
    state = np.array([[*T[:3, 3], *mat2euler(T[:3, :3], 'sxyz'), g]
                      for T, g in zip(steps.ee_poses[:n - 1], steps.gripper_state[:n - 1])])
    depth_u8 = np.stack([np.round(relative_depth_image(d) * 255.0).astype(np.uint8) for d in steps.depths[:n - 1]])
    # Actions are computed over every step (chunks stay continuous); steps whose end effector is never
    # visible again have no trace, and steps without a camera frame of their own, are not examples.
    tr = [t if shown else [] for t, shown in zip(tr, steps.has_frame[:n - 1])]
    keep = np.array([len(t) > 0 for t in tr])
    dropped = int((~keep).sum())
    chunks = padding = None
    if commanded is not None:
        # A commanded chunk labels the step of its observation (within half a step); the others are no
        # examples (they are not dropped for a missing trace, so they are not counted in ``dropped``).
        tolerance = 0.5 * profile.step_period_s
        chunks, padding, labelled = commanded_chunks(steps.stamps[:n - 1], commanded.stamps, commanded.chunks,
                                                     opts.horizon, tolerance)
        if commanded.executed is not None:
            # Labels of another topic than what drove the arm: a step's trace (its path to the end) is the
            # labeller's only after the last chunk that was not (labels.own_path_from).
            labelled = labelled & own_path_from(steps.stamps[:n - 1], commanded.stamps, commanded.chunks,
                                                *commanded.executed, tolerance)
        tr = [t if has else [] for t, has in zip(tr, labelled)]
        actions = np.where(labelled[:, None], np.nan_to_num(chunks[:, 0]), actions)
    return _Prepared(steps.name, steps.instruction, np.stack(imgs), depth_u8, tr, actions, state,
                     steps.frame_stamps[:n - 1], steps.succeeded, chunks, padding), dropped


def molmoact_features(height: int, width: int, horizon: int) -> dict:
    """The dataset's LeRobot features: the observation (model image, TCP state, stamp), the step's action and
    MolmoAct's fields (the H-step chunk and its bins, depth codes, trace, answer and prompt text)."""
    return {
        'observation.image': {'dtype': 'image', 'shape': [height, width, 3], 'names': ['height', 'width', 'channel']},
        'observation.state': {'dtype': 'float32', 'shape': [7], 'names': STATE_NAMES},
        'observation.stamp_s': {'dtype': 'float64', 'shape': [1], 'names': None},
        'action': {'dtype': 'float32', 'shape': [7], 'names': ACTION_NAMES},
        'molmoact.action_chunk': {'dtype': 'float32', 'shape': [horizon * 7], 'names': None},
        'molmoact.action_bins': {'dtype': 'int64', 'shape': [horizon * 7], 'names': None},
        'molmoact.chunk_padding': {'dtype': 'int64', 'shape': [1], 'names': None},
        'molmoact.depth_codes': {'dtype': 'int64', 'shape': [100], 'names': None},
        'molmoact.trace': {'dtype': 'int64', 'shape': [2 * grammar.MAX_TRACE_POINTS], 'names': None},
        'molmoact.trace_length': {'dtype': 'int64', 'shape': [1], 'names': None},
        'molmoact.answer': {'dtype': 'string', 'shape': [1], 'names': None},
        'molmoact.prompt': {'dtype': 'string', 'shape': [1], 'names': None},
    }


def dataset_statistics(actions: np.ndarray, episodes: int, key: str, bounds: str = 'q01_q99') -> dict:
    """The OpenVLA ``dataset_statistics.json`` of per-step actions (N, 7): the suite's norm-stats format;
    the gripper (last) dimension is not normalised (mask false), as MolmoAct's fine-tune stats have it.

    ``bounds``: ``q01_q99`` (MolmoAct's: the 1st / 99th percentiles, so an action rarer than 1 % on one side is
    clipped to the bound, and a model trained on them can never command it) or ``min_max`` (``q01`` / ``q99``
    hold the min / max: every recorded action stays representable; for skewed data such as a demonstrator that
    almost never moves back, 256 bins over +-2 cm are still 0.16 mm each)."""
    if bounds not in ACTION_BOUNDS:
        raise ValueError(f'action bounds must be one of {ACTION_BOUNDS}, got {bounds!r}')
    a = np.asarray(actions, dtype=np.float64)
    mask = [True] * (a.shape[1] - 1) + [False]
    lo, hi = (a.min(0), a.max(0)) if bounds == 'min_max' else (np.quantile(a, 0.01, axis=0),
                                                                np.quantile(a, 0.99, axis=0))
    action = {'mean': a.mean(0).tolist(), 'std': a.std(0).tolist(), 'max': a.max(0).tolist(),
              'min': a.min(0).tolist(), 'q01': lo.tolist(), 'q99': hi.tolist(), 'mask': mask}
    return {key: {'action': action, 'num_transitions': int(len(a)), 'num_trajectories': int(episodes)}}


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the venv
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit='ep', file=sys.stderr, leave=False)


def build_dataset(opts: BuildOptions, log=print) -> BuildReport:
    """Build the dataset (see the module docstring); returns what was done."""
    t_start = time.perf_counter()
    out = Path(opts.out_dir)
    if out.exists() and any(out.iterdir()) and not opts.overwrite:
        raise FileExistsError(f'{out} exists and is not empty (pass --overwrite to replace it)')
    if opts.horizon < 1:
        raise ValueError(f'horizon must be >= 1, got {opts.horizon}')
    if opts.depth_tokenizer is None and not opts.train_depth_tokenizer:
        raise ValueError('choose a depth tokenizer: --depth-tokenizer PATH (the released vae-final.pt, or one '
                         'trained before) or --train-depth-tokenizer')
    if opts.actions not in ACTION_SOURCES:
        raise ValueError(f'actions must be one of {ACTION_SOURCES}, got {opts.actions!r}')
    if opts.action_bounds not in ACTION_BOUNDS:
        raise ValueError(f'action bounds must be one of {ACTION_BOUNDS}, got {opts.action_bounds!r}')
    if opts.template not in grammar.TEMPLATES or opts.template == 'trajectory_conditioned':
        raise ValueError(f'template must be one of multi_view, single_view, finetune; got {opts.template!r}')
    template = grammar.TEMPLATES[opts.template]
    profile = load_profile(opts.profile)
    key = opts.dataset_key or profile.norm_stats_key
    tokenizer: Optional[DepthTokenizer] = None
    if opts.depth_tokenizer is not None:
        tokenizer = load_depth_tokenizer(opts.depth_tokenizer)
    root = Path(opts.episodes)
    files = _find_episodes(root)
    if not files:
        raise FileNotFoundError(f'no *.mcap episodes under {root}')
    work = out.with_name(out.name + '.partial')
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    fk_cache: list = []

    def fk(q):
        if not fk_cache:
            fk_cache.append(_fk(profile))
        return fk_cache[0](q)

    prepared: List[_Spilled] = []
    spill = work / '_prepared'
    spill.mkdir()
    skipped: List[dict] = []
    dropped_total = 0
    for path in _progress(files, len(files), 'episodes', opts.progress):
        name = _episode_name(path, root if root.is_dir() else path.parent)
        try:
            raw = read_episode(path, opts.topics, name=name, base_frame=profile.frames.base,
                               ee_frame=profile.frames.ee, camera_frame=profile.frames.camera)
            if opts.only_successful and raw.succeeded is not True:
                why = ('not successful (task state says succeeded=false)' if raw.succeeded is False else
                       'no success flag recorded (no task_state topic)')
                raise EpisodeError(name, raw.topics.get('task_state', opts.topics.task_state), why)
            steps = synchronize(raw, step_period_s=profile.step_period_s, sync=opts.sync,
                                joint_names=profile.joint_names, gripper_joint=opts.topics.gripper_joint,
                                fk=fk if profile.urdf_file else None, ee_source=opts.topics.ee_source,
                                instruction=opts.instruction)
            if len(steps) - 1 < opts.horizon:
                raise EpisodeError(name, '', f'too short: {len(steps)} steps give {len(steps) - 1} actions, '
                                   f'fewer than the chunk horizon {opts.horizon}')
            commanded = _commanded(raw, profile) if opts.actions == 'commanded' else None
            prep, dropped = _prepare(steps, profile, opts, commanded)
            if commanded is not None and not any(prep.traces):
                raise EpisodeError(name, raw.topics.get('action_chunk', ''), 'no example: no commanded chunk '
                                   'labels a step whose end effector is in the image' +
                                   (' and whose path to the end is the labeller\'s (every chunk executed on '
                                    f'{raw.topics.get("executed_chunk")} differs from its label)'
                                    if commanded.executed is not None else ''))
            dropped_total += dropped
            prepared.append(_Spilled.spill(prep, spill / f'{len(prepared):06d}.npz'))
            del prep, steps, raw
        except EpisodeError as error:
            skipped.append({'episode': error.episode, 'topic': error.topic, 'reason': error.reason})
            log(f'skipped {error}')
        except Exception as error:  # noqa: BLE001 - one broken episode must not lose the others
            skipped.append({'episode': name, 'topic': '', 'reason': f'{type(error).__name__}: {error}'})
            log(f'skipped episode {name}: {type(error).__name__}: {error}')
    if not prepared:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f'no usable episode among {len(files)}: ' +
                         '; '.join(f'{s["episode"]}: {s["reason"]}' for s in skipped[:5]))
    meta = work / 'meta'
    meta.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        pool = _depth_pool(prepared, opts.tokenizer_images, np.random.default_rng(opts.seed))
        log(f'training the depth tokenizer on {len(pool)} depth maps ({opts.tokenizer_steps} steps)')
        tokenizer, checkpoint = train_depth_tokenizer(pool, steps=opts.tokenizer_steps, seed=opts.seed)
        save_checkpoint(checkpoint, meta / 'depth_tokenizer.pt')
        tokenizer.source = 'meta/depth_tokenizer.pt'
    stats_dict = dataset_statistics(np.concatenate([p.label_actions() for p in prepared]), len(prepared), key,
                                    opts.action_bounds)
    stats = NormStats.from_action_dict(stats_dict[key]['action'], key=key)
    h = opts.horizon
    mh, mw = prepared[0].image_hw
    features = molmoact_features(mh, mw, h)
    writer = LeRobotWriter(work, fps=_fps(profile.step_period_s), features=features, robot_type=profile.name)
    examples = 0
    for spilled in _progress(prepared, len(prepared), 'writing', opts.progress):
        prep = spilled.load()
        spilled.path.unlink()
        try:
            codes = tokenizer.encode(prep.depth_u8)
            if prep.chunks is None:
                chunks, padding = action_chunks(prep.actions, h)
            else:
                chunks, padding = np.nan_to_num(prep.chunks), prep.padding
            bins = normalized_to_bins(normalize_bounds_q99(chunks, stats))
            keep = [i for i, t in enumerate(prep.traces) if t]
            prompt = build_prompt(prep.instruction, PromptVariant.MULTI_VIEW)
            answers = [answer_text(template, codes[i], prep.traces[i], bins[i]) for i in keep]
        except (AnswerMismatch, ValueError) as error:
            skipped.append({'episode': prep.name, 'topic': '', 'reason': f'{type(error).__name__}: {error}'})
            log(f'skipped episode {prep.name}: {error}')
            continue
        if not keep:
            skipped.append({'episode': prep.name, 'topic': '', 'reason': 'the end effector is never in the image'})
            continue
        trace_cols = [np.array([c for p in prep.traces[i] for c in p] + [-1] * (10 - 2 * len(prep.traces[i])))
                      for i in keep]
        writer.add_episode({
            'observation.image': [prep.images[i] for i in keep],
            'observation.state': prep.state[keep].astype(np.float32),
            'observation.stamp_s': prep.stamps[keep],
            'action': prep.actions[keep].astype(np.float32),
            'molmoact.action_chunk': chunks[keep].reshape(len(keep), -1).astype(np.float32),
            'molmoact.action_bins': bins[keep].reshape(len(keep), -1),
            'molmoact.chunk_padding': padding[keep],
            'molmoact.depth_codes': codes[keep].astype(np.int64),
            'molmoact.trace': np.stack(trace_cols),
            'molmoact.trace_length': np.array([len(prep.traces[i]) for i in keep]),
            'molmoact.answer': answers,
            'molmoact.prompt': [prompt] * len(keep),
        }, task=' '.join(prep.instruction.split()))
        examples += len(keep)
    shutil.rmtree(spill, ignore_errors=True)
    if examples == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError('no examples were written: ' + '; '.join(s['reason'] for s in skipped[:5]))
    seconds = time.perf_counter() - t_start
    tok_meta = tokenizer.metadata()
    molmoact_meta = {
        'builder': 'molmoact_ros.training.build', 'profile': profile.name, 'dataset_key': key,
        'horizon': h, 'action_dim': 7, 'action_names': ACTION_NAMES,
        'delta_frame': profile.delta_frame.value, 'rotation_convention': profile.rotation_convention.value,
        'step_period_s': profile.step_period_s, 'actions': opts.actions, 'action_bounds': opts.action_bounds,
        'chunk_padding': 'repeat_last (MolmoAct chunk_actions)',
        'answer_template': template.name, 'prompt_variant': PromptVariant.MULTI_VIEW.value,
        'trace': {'max_points': grammar.MAX_TRACE_POINTS, 'space': '0..255 model space of the first image',
                  'future': 'from the current step to the episode end, subsampled like MolmoAct line_length 5'},
        'depth_tokenizer': tok_meta, 'max_image_side_px': opts.max_image_side_px,
        'topics': opts.topics.to_dict(), 'episodes_found': len(files), 'episodes_written': len(writer.episodes),
        'examples': examples, 'steps_without_visible_trace': dropped_total, 'skipped_episodes': skipped,
        'norm_stats': stats_dict, 'build_seconds': round(seconds, 3)}
    writer.finalize({'molmoact': {'depth_tokenizer': tok_meta['kind'], 'answer_template': template.name,
                                  'horizon': h, 'dataset_key': key}})
    (meta / 'molmoact.json').write_text(json.dumps(molmoact_meta, indent=2) + '\n', encoding='utf-8')
    (work / 'dataset_statistics.json').write_text(json.dumps(stats_dict, indent=2) + '\n', encoding='utf-8')
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return BuildReport(out_dir=out, examples=examples, episodes=len(writer.episodes), skipped=skipped,
                       seconds=time.perf_counter() - t_start, tokenizer=tok_meta, dropped_steps=dropped_total)


def _topics(args) -> TopicConfig:
    topics = load_topic_config(args.topics)
    return dataclasses.replace(topics, action_chunk=args.action_chunk_topic) if args.action_chunk_topic else topics


def _fps(period: float):
    fps = 1.0 / period
    return int(round(fps)) if abs(fps - round(fps)) < 1e-6 else fps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='build_dataset', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('episodes', type=Path, help='a directory of *.mcap episodes (searched recursively) or one file')
    p.add_argument('out_dir', type=Path, help='where the LeRobot dataset is written')
    p.add_argument('--profile', default='sim_panda', help='robot profile name or YAML path (default sim_panda)')
    p.add_argument('--horizon', type=int, default=8, help='action chunk length H (default 8)')
    p.add_argument('--topics', type=Path, help='YAML of topic names (see molmoact_ros/training/config.py)')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--depth-tokenizer', type=Path, help="the released vae-final.pt, or a tokenizer trained before")
    g.add_argument('--train-depth-tokenizer', action='store_true',
                   help='train a small VQ-VAE (10x10 codes of 128) on the dataset\'s depth maps')
    p.add_argument('--tokenizer-steps', type=int, default=300, help='training steps of --train-depth-tokenizer')
    p.add_argument('--only-successful', action='store_true', help='skip episodes whose task state never succeeded')
    p.add_argument('--actions', choices=ACTION_SOURCES, default='measured',
                   help='action labels: the measured end-effector motion step to step (default), or the chunks '
                   'commanded (the ActionChunk topic: a scripted expert\'s, a teleoperator\'s)')
    p.add_argument('--action-bounds', choices=ACTION_BOUNDS, default='q01_q99',
                   help='the norm stats\' q01/q99 (the bounds actions are binned in): the 1st/99th percentiles '
                   '(MolmoAct\'s; rarer actions are clipped), or min_max (every recorded action representable: '
                   'for skewed demonstrations, e.g. an expert that almost never moves back)')
    p.add_argument('--action-chunk-topic', default='',
                   help='the ActionChunk topic of --actions commanded (default: the topics file\'s, action_chunk); '
                   'expert/action_chunk: the expert\'s labels of a model\'s run (evaluate --expert-labels, DAgger); '
                   'several, comma-separated, by preference: expert/action_chunk,action_chunk')
    p.add_argument('--template', default='finetune', choices=['finetune', 'multi_view', 'single_view'],
                   help='answer wording (default: the released fine-tune recipe\'s)')
    p.add_argument('--instruction', help='instruction for episodes that record none')
    p.add_argument('--dataset-key', help='key of dataset_statistics.json (default: the profile\'s norm_stats_key)')
    p.add_argument('--max-image-side', type=int, default=336, help='longer side of the model image (default 336)')
    p.add_argument('--state-tolerance', type=float, default=SyncConfig.state_tolerance_s,
                   help='largest gap (s) between a step and the nearest joint state / pose sample (default '
                   f'{SyncConfig.state_tolerance_s})')
    p.add_argument('--max-state-gap', type=float, default=SyncConfig.max_state_gap_s,
                   help='longest pause (s) of a joint state / pose stream bridged by interpolation; the steps inside '
                   f'it are no examples, a longer one skips the episode (default {SyncConfig.max_state_gap_s})')
    p.add_argument('--overwrite', action='store_true', help='replace OUT_DIR if it exists')
    p.add_argument('--no-progress', action='store_true')
    args = p.parse_args(argv)
    try:
        if not (math.isfinite(args.state_tolerance) and args.state_tolerance > 0):
            raise ValueError(f'--state-tolerance must be finite and > 0, got {args.state_tolerance}')
        if not (math.isfinite(args.max_state_gap) and 0 <= args.max_state_gap <= 10):
            raise ValueError(f'--max-state-gap must be within 0..10 s, got {args.max_state_gap}')
        opts = BuildOptions(episodes=args.episodes, out_dir=args.out_dir, profile=args.profile, horizon=args.horizon,
                            topics=_topics(args), depth_tokenizer=args.depth_tokenizer,
                            train_depth_tokenizer=args.train_depth_tokenizer, tokenizer_steps=args.tokenizer_steps,
                            only_successful=args.only_successful, template=args.template,
                            instruction=args.instruction, dataset_key=args.dataset_key,
                            max_image_side_px=args.max_image_side, overwrite=args.overwrite,
                            progress=not args.no_progress, actions=args.actions, action_bounds=args.action_bounds,
                            sync=SyncConfig(state_tolerance_s=args.state_tolerance,
                                            max_state_gap_s=args.max_state_gap))
        report = build_dataset(opts, log=lambda m: print(m, file=sys.stderr))
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f'build_dataset: {error}', file=sys.stderr)
        return 2
    print(f'dataset: {report.out_dir}')
    print(f'examples: {report.examples} steps')
    print(f'episodes: {report.episodes} episodes')
    print(f'skipped episodes: {len(report.skipped)} episodes')
    for s in report.skipped:
        print(f'  skipped {s["episode"]}: {s["topic"] or "-"}: {s["reason"]}')
    print(f'depth tokenizer: {report.tokenizer["kind"]}')
    print(f'build time: {report.seconds:.2f} s')
    spk = report.seconds_per_1000_steps
    print(f'build time per 1000 steps: {spk:.1f} s' if math.isfinite(spk) else 'build time per 1000 steps: nan s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
