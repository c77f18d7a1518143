"""MolmoAct's action space: token ids <-> bins <-> normalized values <-> robot units (ROS-free).

Everything here follows what AllenAI's released code does (github.com/allenai/molmoact, read at
commit 622ad08); the paths below are in that repository.

Bins (``olmo/hf_model/molmoact/modeling_molmoact.py``, ``MolmoActForActionReasoning.__init__`` and
``parse_action``; ``preprocess/processors.py``, ``ActionProcessor``):

- 256 uniform bin *edges* ``linspace(-1, 1, 256)`` and 255 bin *centres* (the midpoints); a "bin" in
  this module is an index 0..254 into the centres.
- Encoder (training side, ``ActionProcessor.tokenize_action``): clip to [-1, 1], ``d =
  np.digitize(a, edges)`` in 1..256, token id = 151643 - d (151643 = Qwen2's ``vocab_size``, the
  number of regular BPE tokens). So ids 151387..151642, the last 256 regular ids; 151387 (d = 256) is
  written only for a value of exactly +1.0.
- Decoder (parser side, ``parse_action``): bin = clip(151643 - id - 1, 0, 254), normalized =
  centres[bin]. An unknown token string is given id 151643 by the release and so decodes to bin 0.

Which direction is lossy:

- normalized -> bin (:func:`normalized_to_bins`) is the lossy step: quantisation to 255 bins of width
  2/255, so ``bins_to_normalized(normalized_to_bins(x))`` is within 1/255 of ``clip(x, -1, 1)``.
- bin -> normalized -> bin and bin -> token id -> bin are exact (every centre lies strictly inside its
  bin).
- token id -> bin is lossy only outside 151388..151642: the release clips, so 151387 (the encoder's
  id for exactly +1.0) shares bin 254 with 151388, and every other id lands on bin 0 or 254.

Unnormalisation is OpenVLA's BOUNDS_Q99 as ``parse_action`` writes it: ``0.5 * (n + 1) * (q99 - q01)
+ q01`` where the mask is true, the normalized value where it is false, and **the mask of the last
dimension (the gripper) forced to False**, so the gripper comes back as a raw bin centre in [-1, 1].
:func:`unnormalize_bounds_q99` does that by default (``gripper_raw_as_released=True``).

Norm stats use OpenVLA's ``dataset_statistics.json`` schema, which is also the shape of a checkpoint
config's ``norm_stats``: ``{key: {"action": {"q01", "q99", "mask", "mean", "std", "min", "max"},
"proprio": ..., "num_transitions", "num_trajectories"}}``. Keys used by the released evaluators:
``molmoact``, ``fractal20220817_data`` (Google Robot), ``bridge_orig`` (WidowX),
``libero_{spatial,object,goal,10}_no_noops_modified``.

Units: the unnormalized values are in the units of the dataset the stats came from: metres and
radians of end-effector delta for the OXE datasets (fractal, bridge), but controller-input units in
[-1, 1] for LIBERO (robosuite OSC_POSE scales them). The ``_m`` / ``_rad`` field names state the
intended units of a 7-D end-effector-delta robot; the robot profile owns the final conversion.

Numerics: the release casts q01/q99 to float32 before unnormalising; this module keeps them in
float64, which differs by at most about |q| * 2**-24 (far below one bin).
"""

from __future__ import annotations

import enum
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

# --- Bins and token ids ----------------------------------------------------------------------------

#: Qwen2's ``vocab_size`` (number of regular BPE tokens, ids 0..151642); the action token ids count
#: down from it.
QWEN2_VOCAB_SIZE = 151643
#: Number of bin edges (the release's ``n_action_bins``).
N_BIN_EDGES = 256
#: Number of bins = number of bin centres; a bin index is 0..N_BINS-1.
N_BINS = N_BIN_EDGES - 1
#: Range of the normalized action values.
NORMALIZED_MIN = -1.0
NORMALIZED_MAX = 1.0
#: Lowest id the encoder writes (d = 256, only for a normalized value of exactly +1.0).
MIN_ACTION_TOKEN_ID = QWEN2_VOCAB_SIZE - N_BIN_EDGES  # 151387
#: Highest id the encoder writes (d = 1, values in [-1, -1 + 2/255)).
MAX_ACTION_TOKEN_ID = QWEN2_VOCAB_SIZE - 1  # 151642
#: Width of one bin in normalized units, and the largest quantisation error (half a bin).
BIN_WIDTH = (NORMALIZED_MAX - NORMALIZED_MIN) / N_BINS
MAX_QUANTIZATION_ERROR = BIN_WIDTH / 2.0
#: The epsilon of the training-side BOUNDS_Q99 normalisation's denominator.
Q99_NORMALIZATION_EPS = 1e-8


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


#: ``linspace(-1, 1, 256)``: the release's ``bins`` (read-only).
BIN_EDGES = _read_only(np.linspace(NORMALIZED_MIN, NORMALIZED_MAX, N_BIN_EDGES))
#: The 255 midpoints of :data:`BIN_EDGES`: the release's ``bin_centers`` (read-only).
BIN_CENTERS = _read_only((BIN_EDGES[:-1] + BIN_EDGES[1:]) / 2.0)


def _as_int_array(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise TypeError(f'{what} must be integers, got dtype {array.dtype}')
    return array.astype(np.int64)


def _as_finite_float_array(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{what} must be finite, got {array.tolist()}')
    return array


def normalized_to_digitized(normalized: Any) -> np.ndarray:
    """The training encoder's raw ``np.digitize`` output, 1..256, after clipping to [-1, 1]."""
    clipped = np.clip(_as_finite_float_array(normalized, 'normalized values'), NORMALIZED_MIN,
                      NORMALIZED_MAX)
    return np.digitize(clipped, BIN_EDGES).astype(np.int64)


def normalized_to_token_ids(normalized: Any) -> np.ndarray:
    """Token ids exactly as the training encoder writes them: 151643 - digitize(clip(a)), 151387..151642."""
    return QWEN2_VOCAB_SIZE - normalized_to_digitized(normalized)


def normalized_to_bins(normalized: Any) -> np.ndarray:
    """Bin indices 0..254 of normalized values (the encoder followed by the parser's id -> bin).

    Values outside [-1, 1] are clipped first, as the encoder does. Lossy: see the module docstring.
    Equal to ``token_id_to_bin(normalized_to_token_ids(normalized))``.
    """
    return np.minimum(normalized_to_digitized(normalized) - 1, N_BINS - 1)


def bins_to_normalized(bins: Any) -> np.ndarray:
    """Bin centres of bin indices 0..254 (the parser's ``bin_centers[bin]``); float64."""
    bins = _as_int_array(bins, 'bins')
    if np.any((bins < 0) | (bins >= N_BINS)):
        raise ValueError(f'bins must be in 0..{N_BINS - 1}, got {bins.tolist()}')
    return BIN_CENTERS[bins]


def token_id_to_bin(token_ids: Any, *, strict: bool = False) -> np.ndarray:
    """Bin indices of token ids as the release's parser computes them: clip(151643 - id - 1, 0, 254).

    With ``strict=True`` an id outside the encoder's range 151387..151642 raises ``ValueError`` instead
    of being clipped (the release clips; an unknown token string, which it maps to id 151643, then
    decodes to bin 0).
    """
    ids = _as_int_array(token_ids, 'token ids')
    if strict and np.any((ids < MIN_ACTION_TOKEN_ID) | (ids > MAX_ACTION_TOKEN_ID)):
        raise ValueError(f'action token ids must be in {MIN_ACTION_TOKEN_ID}..{MAX_ACTION_TOKEN_ID}, '
                         f'got {ids.tolist()}')
    return np.clip(QWEN2_VOCAB_SIZE - ids - 1, 0, N_BINS - 1)


def bin_to_token_id(bins: Any) -> np.ndarray:
    """The token id that encodes each bin index 0..254: 151642 - bin (151388..151642).

    This is the id the encoder writes for every value of the bin; the one exception is a value of
    exactly +1.0, which the encoder writes as 151387 and which decodes to bin 254 as well.
    """
    bins = _as_int_array(bins, 'bins')
    if np.any((bins < 0) | (bins >= N_BINS)):
        raise ValueError(f'bins must be in 0..{N_BINS - 1}, got {bins.tolist()}')
    return QWEN2_VOCAB_SIZE - 1 - bins


def token_ids_to_normalized(token_ids: Any) -> np.ndarray:
    """Normalized values of token ids as the release's parser computes them (clipping, not strict)."""
    return BIN_CENTERS[token_id_to_bin(token_ids)]


# --- Norm stats ------------------------------------------------------------------------------------

class NormStatsError(ValueError):
    """Base class of the norm-stats errors below."""


class UnknownNormStatsKeyError(NormStatsError):
    """The requested key is not in the table (the message lists the available keys)."""


class AmbiguousNormStatsKeyError(NormStatsError):
    """No key was given and the table holds several."""


class MalformedNormStatsError(NormStatsError):
    """Stats that cannot be used: missing fields, lengths that differ, q99 < q01, non-finite values."""


_STAT_FIELDS = ('q01', 'q99', 'mean', 'std', 'min', 'max')


def _float_tuple(values: Any, name: str, where: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise MalformedNormStatsError(f'{where}: {name} must be a list of numbers, got {values!r}')
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise MalformedNormStatsError(f'{where}: {name} must be a list of numbers, got {values!r}')
        out.append(float(value))
    return tuple(out)


def _bool_tuple(values: Any, where: str) -> tuple[bool, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise MalformedNormStatsError(f'{where}: mask must be a list of booleans, got {values!r}')
    out = []
    for value in values:
        if isinstance(value, (bool, np.bool_)):
            out.append(bool(value))
        elif isinstance(value, (int, np.integer)) and value in (0, 1):
            out.append(bool(value))
        else:
            raise MalformedNormStatsError(f'{where}: mask must be a list of booleans, got {values!r}')
    return tuple(out)


@dataclass(frozen=True)
class NormStats:
    """Per-dimension action statistics of one dataset key (OpenVLA ``dataset_statistics.json`` schema).

    ``q01`` / ``q99`` are the 1st / 99th percentiles per action dimension, in the dataset's action
    units. ``mask[i]`` says whether dimension ``i`` is BOUNDS_Q99-normalized (the file's default is all
    true; the released parser also forces the last one to false, see :func:`effective_mask`). The other
    statistics are optional and only validated for length. Sequences are stored as tuples of floats.
    """

    q01: tuple[float, ...]
    q99: tuple[float, ...]
    mask: tuple[bool, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    min: tuple[float, ...] | None = None
    max: tuple[float, ...] | None = None
    #: The dataset key the stats were selected with (messages only).
    key: str | None = None

    def __post_init__(self) -> None:
        where = f'norm stats {self.key!r}' if self.key is not None else 'norm stats'
        for name in _STAT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _float_tuple(value, name, where))
        object.__setattr__(self, 'mask', _bool_tuple(self.mask, where))
        dim = len(self.q01)
        if dim == 0:
            raise MalformedNormStatsError(f'{where}: q01 is empty')
        lengths = {name: len(getattr(self, name)) for name in ('q01', 'q99', 'mask', *_STAT_FIELDS[2:])
                   if getattr(self, name) is not None}
        if len(set(lengths.values())) != 1:
            raise MalformedNormStatsError(f'{where}: lengths differ: {lengths}')
        for name in ('q01', 'q99'):
            values = getattr(self, name)
            if not all(math.isfinite(v) for v in values):
                raise MalformedNormStatsError(f'{where}: {name} has non-finite values: {list(values)}')
        bad = [i for i, (lo, hi) in enumerate(zip(self.q01, self.q99)) if hi < lo]
        if bad:
            raise MalformedNormStatsError(
                f'{where}: q99 < q01 in dimensions {bad}: q01={[self.q01[i] for i in bad]}, '
                f'q99={[self.q99[i] for i in bad]}')

    @property
    def dim(self) -> int:
        """Number of action dimensions."""
        return len(self.q01)

    @classmethod
    def from_action_dict(cls, action: Mapping[str, Any], key: str | None = None) -> NormStats:
        """Build from the ``"action"`` entry of one key; a missing ``mask`` means all true (release)."""
        where = f'norm stats {key!r}' if key is not None else 'norm stats'
        if not isinstance(action, Mapping):
            raise MalformedNormStatsError(f'{where}: "action" must be a mapping, got {type(action).__name__}')
        missing = [name for name in ('q01', 'q99') if name not in action]
        if missing:
            raise MalformedNormStatsError(
                f'{where}: "action" lacks {missing} (has {sorted(action)})')
        mask = action.get('mask')
        if mask is None:
            mask = [True] * len(_float_tuple(action['q01'], 'q01', where))
        return cls(q01=action['q01'], q99=action['q99'], mask=mask, mean=action.get('mean'),
                   std=action.get('std'), min=action.get('min'), max=action.get('max'), key=key)

    def to_action_dict(self) -> dict[str, list]:
        """The ``"action"`` entry in the ``dataset_statistics.json`` schema (optional fields if set)."""
        out: dict[str, list] = {}
        for name in ('mean', 'std', 'max', 'min', 'q01', 'q99'):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value)
        out['mask'] = list(self.mask)
        return out


def _looks_like_one_entry(mapping: Mapping[str, Any]) -> bool:
    action = mapping.get('action')
    return isinstance(action, Mapping) and 'q01' in action


#: Key given to a file that holds one bare entry (``{"action": {...}}``) instead of ``{key: entry}``.
BARE_ENTRY_KEY = 'default'


@dataclass(frozen=True)
class NormStatsTable:
    """The norm stats of several dataset keys, as a checkpoint config or a statistics file holds them.

    Entries are kept as loaded and validated when selected, so one odd entry does not hide the others.
    """

    entries: Mapping[str, Mapping[str, Any]]
    #: Where the table came from (messages only).
    source: str = 'norm_stats'

    def __post_init__(self) -> None:
        if not isinstance(self.entries, Mapping) or not self.entries:
            raise NormStatsError(f'{self.source}: no norm stats (empty or not a mapping); '
                                 'cannot unnormalize actions')
        bad = [k for k in self.entries if not isinstance(k, str)]
        if bad:
            raise NormStatsError(f'{self.source}: keys must be strings, got {bad!r}')
        object.__setattr__(self, 'entries', MappingProxyType(dict(self.entries)))

    @property
    def keys(self) -> tuple[str, ...]:
        """The dataset keys, in file order."""
        return tuple(self.entries)

    @classmethod
    def from_norm_stats(cls, norm_stats: Mapping[str, Any], source: str = 'norm_stats') -> NormStatsTable:
        """From a ``norm_stats`` mapping ``{key: {"action": {...}, ...}}`` (or one bare entry)."""
        if not isinstance(norm_stats, Mapping):
            raise NormStatsError(f'{source}: expected a mapping, got {type(norm_stats).__name__}')
        if _looks_like_one_entry(norm_stats):
            norm_stats = {BARE_ENTRY_KEY: norm_stats}
        return cls(entries=norm_stats, source=source)

    @classmethod
    def from_checkpoint_config(cls, config: Mapping[str, Any] | Any,
                               source: str = 'checkpoint config') -> NormStatsTable:
        """From a checkpoint config (a ``config.json`` mapping or a config object) with ``norm_stats``."""
        if isinstance(config, Mapping):
            norm_stats = config.get('norm_stats')
        else:
            norm_stats = getattr(config, 'norm_stats', None)
        if not norm_stats:
            raise NormStatsError(f'{source}: has no norm_stats; pass a dataset_statistics.json')
        return cls.from_norm_stats(norm_stats, source=f'{source} norm_stats')

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> NormStatsTable:
        """From an OpenVLA-style ``dataset_statistics.json`` (or a ``config.json`` with ``norm_stats``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding='utf-8'))
        except json.JSONDecodeError as error:
            raise NormStatsError(f'{path}: not valid JSON: {error}') from error
        if isinstance(data, Mapping) and isinstance(data.get('norm_stats'), Mapping):
            return cls.from_norm_stats(data['norm_stats'], source=f'{path} norm_stats')
        return cls.from_norm_stats(data, source=str(path))

    def select(self, key: str | None = None) -> NormStats:
        """The stats of ``key``; with ``key=None`` the only entry (as the release's ``_check_unnorm_key``).

        Raises :class:`UnknownNormStatsKeyError`, :class:`AmbiguousNormStatsKeyError` or
        :class:`MalformedNormStatsError` (all ``ValueError``).
        """
        if key is None:
            if len(self.entries) != 1:
                raise AmbiguousNormStatsKeyError(
                    f'{self.source}: holds {len(self.entries)} dataset keys and none was given; pass '
                    f'one of {list(self.keys)}')
            key = self.keys[0]
        elif key not in self.entries:
            raise UnknownNormStatsKeyError(
                f'{self.source}: no dataset key {key!r}; available keys: {list(self.keys)}')
        entry = self.entries[key]
        if not isinstance(entry, Mapping) or 'action' not in entry:
            found = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
            raise MalformedNormStatsError(f'{self.source}: entry {key!r} has no "action" stats ({found})')
        return NormStats.from_action_dict(entry['action'], key=key)


def dump_dataset_statistics(stats_by_key: Mapping[str, NormStats], path: str | os.PathLike) -> None:
    """Write ``{key: {"action": {...}}}`` as a ``dataset_statistics.json`` (action stats only)."""
    data = {key: {'action': stats.to_action_dict()} for key, stats in stats_by_key.items()}
    Path(path).write_text(json.dumps(data, indent=2) + '\n', encoding='utf-8')


# --- BOUNDS_Q99 ------------------------------------------------------------------------------------

def effective_mask(stats: NormStats, *, gripper_raw_as_released: bool = True) -> np.ndarray:
    """The mask the parser applies: the stats' mask, with the last (gripper) entry forced to False.

    ``gripper_raw_as_released=True`` matches the release's ``parse_action`` (``mask[-1] = False``, "the
    gripper state should not be normalized"); False uses the stats' mask as stored.
    """
    mask = np.asarray(stats.mask, dtype=bool).copy()
    if gripper_raw_as_released:
        mask[-1] = False
    return mask


def _check_last_dim(array: np.ndarray, stats: NormStats, what: str) -> None:
    if array.ndim == 0 or array.shape[-1] != stats.dim:
        raise ValueError(f'{what} must have {stats.dim} values in the last axis (the stats\' '
                         f'dimension), got shape {array.shape}')


def unnormalize_bounds_q99(normalized: Any, stats: NormStats, *,
                           gripper_raw_as_released: bool = True) -> np.ndarray:
    """BOUNDS_Q99 unnormalisation of values in [-1, 1], shape (..., D), as the release's parser does.

    ``0.5 * (n + 1) * (q99 - q01) + q01`` where :func:`effective_mask` is true, ``n`` elsewhere. A
    zero-range dimension (q99 == q01) gives q01 for every ``n``.
    """
    n = _as_finite_float_array(normalized, 'normalized values')
    _check_last_dim(n, stats, 'normalized values')
    q01 = np.asarray(stats.q01, dtype=np.float64)
    q99 = np.asarray(stats.q99, dtype=np.float64)
    values = 0.5 * (n + 1.0) * (q99 - q01) + q01
    return np.where(effective_mask(stats, gripper_raw_as_released=gripper_raw_as_released), values, n)


def normalize_bounds_q99(values: Any, stats: NormStats, *, gripper_raw_as_released: bool = True,
                         invert_gripper: bool = False) -> np.ndarray:
    """BOUNDS_Q99 normalisation, the training side (for tests and tools), shape (..., D).

    Where :func:`effective_mask` is true: ``2 * (a - q01) / (q99 - q01 + 1e-8) - 1`` clipped to
    [-1, 1], and 0 for a zero-range dimension (``np.isclose(q99, q01)``, as ``ActionProcessor``);
    elsewhere the value is kept. ``invert_gripper=True`` writes ``1 - a`` for the last dimension when it
    is not normalized, as MolmoAct's fine-tune preprocessor (``normalize_action_bounds_q99``) does; the
    released parser does not undo that, so a robot fine-tuned that way gets ``1 - a`` back.

    The inverse of :func:`unnormalize_bounds_q99` up to the clipping and the epsilon; the training code
    computes in float32, this in float64.
    """
    a = _as_finite_float_array(values, 'action values')
    _check_last_dim(a, stats, 'action values')
    q01 = np.asarray(stats.q01, dtype=np.float64)
    q99 = np.asarray(stats.q99, dtype=np.float64)
    normalized = np.clip(2.0 * (a - q01) / (q99 - q01 + Q99_NORMALIZATION_EPS) - 1.0,
                         NORMALIZED_MIN, NORMALIZED_MAX)
    normalized = np.where(np.isclose(q99, q01), 0.0, normalized)
    mask = effective_mask(stats, gripper_raw_as_released=gripper_raw_as_released)
    kept = a.copy()
    if invert_gripper and not mask[-1]:
        kept[..., -1] = 1.0 - a[..., -1]
    return np.where(mask, normalized, kept)


# --- Decoded actions -------------------------------------------------------------------------------

class RotationConvention(str, enum.Enum):
    """How action dims 3:6 (``rotation_rad``) are to be read."""

    #: Roll, pitch, yaw deltas, static-axes xyz Euler angles: the released Google-Robot evaluator
    #: (allenai/SimplerEnv ``simpler_env/policies/molmoact/molmoact_model.py``) reads dims 3:6 as roll,
    #: pitch, yaw and converts them with ``transforms3d.euler.euler2axangle`` (default axes 'sxyz').
    EULER_SXYZ_ROLL_PITCH_YAW = 'euler_sxyz_roll_pitch_yaw'
    #: A rotation vector (axis * angle), e.g. robosuite's OSC_POSE delta used by LIBERO.
    ROTATION_VECTOR = 'rotation_vector'
    #: Not known for this dataset.
    UNSPECIFIED = 'unspecified'


#: The action layout these classes decode: [x, y, z, rot0, rot1, rot2, gripper].
EEF_DELTA_ACTION_DIM = 7


@dataclass(frozen=True)
class ActionStepValues:
    """One decoded 7-D end-effector-delta action, [x, y, z, r0, r1, r2, gripper].

    ``values`` are all dims after unnormalisation (units of the stats' dataset: see the module
    docstring); ``translation_m`` = values[0:3], ``rotation_rad`` = values[3:6] read as
    ``rotation_convention``; ``gripper`` = values[6], left raw as the release does (a bin centre in
    [-1, 1], e.g. 0.996 for a dataset whose gripper is 1, or 1 - a for a robot fine-tuned with MolmoAct's
    preprocessor, which inverts it). ``normalized`` are the bin centres and ``bins`` the indices 0..254.
    """

    translation_m: tuple[float, float, float]
    rotation_rad: tuple[float, float, float]
    rotation_convention: RotationConvention
    gripper: float
    values: tuple[float, ...]
    normalized: tuple[float, ...]
    bins: tuple[int, ...]

    @classmethod
    def from_bins(cls, bins: Sequence[int] | np.ndarray, stats: NormStats, *,
                  rotation_convention: RotationConvention = RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW,
                  gripper_raw_as_released: bool = True) -> ActionStepValues:
        """Decode one step of bin indices 0..254 with ``stats`` (which must be 7-D)."""
        bins = _as_int_array(bins, 'bins')
        if bins.shape != (EEF_DELTA_ACTION_DIM,) or stats.dim != EEF_DELTA_ACTION_DIM:
            raise ValueError(f'expected a {EEF_DELTA_ACTION_DIM}-D end-effector-delta action and stats, '
                             f'got bins of shape {bins.shape} and {stats.dim}-D stats')
        normalized = bins_to_normalized(bins)
        values = unnormalize_bounds_q99(normalized, stats,
                                        gripper_raw_as_released=gripper_raw_as_released)
        v = [float(x) for x in values]
        return cls(translation_m=(v[0], v[1], v[2]), rotation_rad=(v[3], v[4], v[5]),
                   rotation_convention=RotationConvention(rotation_convention), gripper=v[6],
                   values=tuple(v), normalized=tuple(float(x) for x in normalized),
                   bins=tuple(int(b) for b in bins))

    @classmethod
    def from_token_ids(cls, token_ids: Sequence[int] | np.ndarray, stats: NormStats, *,
                       strict: bool = False, **kwargs: Any) -> ActionStepValues:
        """Decode one step of action token ids (``token_id_to_bin`` then :meth:`from_bins`)."""
        return cls.from_bins(token_id_to_bin(token_ids, strict=strict), stats, **kwargs)


@dataclass(frozen=True)
class ActionChunkValues:
    """A chunk of decoded steps (the LIBERO and fine-tune recipes emit 8), in time order."""

    steps: tuple[ActionStepValues, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, 'steps', tuple(self.steps))
        if not self.steps:
            raise ValueError('an action chunk needs at least one step')

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def translation_m(self) -> tuple[tuple[float, float, float], ...]:
        return tuple(s.translation_m for s in self.steps)

    @property
    def rotation_rad(self) -> tuple[tuple[float, float, float], ...]:
        return tuple(s.rotation_rad for s in self.steps)

    @property
    def rotation_convention(self) -> RotationConvention:
        return self.steps[0].rotation_convention

    @property
    def gripper(self) -> tuple[float, ...]:
        return tuple(s.gripper for s in self.steps)

    @property
    def values(self) -> tuple[tuple[float, ...], ...]:
        return tuple(s.values for s in self.steps)

    @property
    def normalized(self) -> tuple[tuple[float, ...], ...]:
        return tuple(s.normalized for s in self.steps)

    @property
    def bins(self) -> tuple[tuple[int, ...], ...]:
        return tuple(s.bins for s in self.steps)

    def values_array(self) -> np.ndarray:
        """``values`` as a (T, D) float64 array."""
        return np.asarray(self.values, dtype=np.float64)

    @classmethod
    def from_bins(cls, bins: Sequence[Sequence[int]] | np.ndarray, stats: NormStats,
                  **kwargs: Any) -> ActionChunkValues:
        """Decode (T, 7) bin indices; keyword arguments as :meth:`ActionStepValues.from_bins`."""
        return cls(tuple(ActionStepValues.from_bins(row, stats, **kwargs) for row in bins))

    @classmethod
    def from_token_ids(cls, token_ids: Sequence[Sequence[int]] | np.ndarray, stats: NormStats,
                       **kwargs: Any) -> ActionChunkValues:
        """Decode (T, 7) token ids; keyword arguments as :meth:`ActionStepValues.from_token_ids`."""
        return cls(tuple(ActionStepValues.from_token_ids(row, stats, **kwargs) for row in token_ids))
