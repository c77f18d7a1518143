"""MolmoAct image preprocessing, re-implemented natively (numpy, PIL and torch only; ROS-free).

Produces the same arrays as AllenAI's reference ``MolmoActImageProcessor``
(``olmo/hf_model/molmoact/image_processing_molmoact.py`` in github.com/allenai/molmoact) and the image
part of the prompt string its ``MolmoActProcessor`` builds, without torchvision and without
``trust_remote_code``.

Algorithm (defaults of the released ``preprocessor_config.json``):

* Each image becomes a *global view* (the whole image stretched to 378x378, no padding) followed by
  overlapping 378x378 crops of a second resized copy. The crop grid (``tiling``, rows x cols, at most
  ``max_crops`` tiles, ``max_multi_image_crops`` in multi-image mode) is chosen for the image with a
  112 px margin removed, in units of the 266 px crop window (27 patches less 4+4 overlap patches).
* Resizing is torchvision's ``Resize(BILINEAR, antialias=False)`` on a uint8 tensor, which is
  ``torch.nn.functional.interpolate(float32, bilinear, align_corners=False, antialias=False)``,
  then round half to even and cast back to uint8. The result is scaled as ``-1 + (v / 255) * 2`` in
  float32 ("siglip" normalization).
* Crops are cut into 14x14 patches flattened as (row, col, channel) -> 588 values.
* ``pooled_patches_idx`` lists, for every image token, the 2x2 patches it pools (``-1`` for padding
  where a patch grid has an odd side; shifted by the patch offset for later images in multi-image
  mode, as in the reference). Overlap regions are assigned to exactly one crop.
* Each view contributes ``<im_start>`` + rows of (``<im_patch>`` x w + ``<im_col>``) + ``<im_end>``;
  in multi-image mode every image is preceded by the text ``Image k``.
"""

from __future__ import annotations

import json
import os
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .tokenizer import (IM_COL_TOKEN, IM_END_TOKEN, IM_START_TOKEN, IMAGE_LOW_RES_TOKEN,  # noqa: F401
                        IMAGE_PATCH_TOKEN, IMAGE_PROMPT_TOKEN, IMAGE_TOKENS)

PREPROCESSOR_CONFIG_NAME = 'preprocessor_config.json'

# Special token strings of MolmoAct's tokenizer (defined with their ids in tokenizer.py). EXTRA_TOKENS is
# the order in which the reference appends them to the vocabulary (after the Qwen2 vocabulary padded to
# 152064 in the 7B checkpoints).
EXTRA_TOKENS: Tuple[str, ...] = IMAGE_TOKENS

CROP_MODES = ('overlap-and-resize-c2', 'overlap-and-resize', 'resize')
RESIZE_MODES = ('siglip',)
# Per-channel (mean, std) applied to pixels scaled to [0, 1]. "siglip" is -1 + 2x (the same float32 values
# as mean 0.5, std 0.5 for every uint8 level; computed the reference's way).
_MEAN_STD = {
    'openai': ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    'dino': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
NORMALIZE_MODES = ('siglip',) + tuple(_MEAN_STD)

ImageLike = Union[np.ndarray, Image.Image]


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------

def _int_pair(value: Any, name: str) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        items = [v for v in value]
    except TypeError:
        raise ValueError(f'{name} must be an int or a pair of ints, got {value!r}') from None
    if len(items) == 1:
        items = items * 2
    if len(items) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise ValueError(f'{name} must be an int or a pair of ints, got {value!r}')
    return int(items[0]), int(items[1])


@dataclass(frozen=True)
class MolmoActImageProcessorConfig:
    """Settings of MolmoAct's image preprocessing; the keys of the released ``preprocessor_config.json``.

    Keys this class does not use (``auto_map``, ``image_processor_type``, ``processor_class``, ...) are
    kept in ``extra`` and written back by :meth:`to_dict`, so a released file round-trips unchanged.
    """

    crop_mode: str = 'overlap-and-resize-c2'
    """``overlap-and-resize-c2`` (global view + crops), ``overlap-and-resize`` (crops) or ``resize``."""
    resize_mode: str = 'siglip'
    """Only ``siglip`` (bilinear stretch without antialiasing, uint8 rounding) is implemented."""
    normalize_mode: str = 'siglip'
    """``siglip`` (-1 + 2x), ``openai`` or ``dino`` mean/std normalization of pixels in [0, 1]."""
    max_crops: int = 8
    """Most crops (excluding the global view) of a single image."""
    max_multi_image_crops: int = 4
    """Most crops per image in multi-image mode."""
    overlap_margins: Tuple[int, int] = (4, 4)
    """Patches at the (leading, trailing) edge of a crop that belong to the neighbouring crop."""
    base_image_input_size: Tuple[int, int] = (378, 378)
    """(height, width) of every crop and of the global view, in pixels."""
    pad_value: float = 0.0
    """Kept for round-tripping; the siglip resize never pads."""
    image_patch_size: int = 14
    image_pooling_w: int = 2
    image_pooling_h: int = 2
    do_convert_rgb: bool = True
    """Convert non-RGB PIL images with ``Image.convert('RGB')``; if False such images are rejected."""
    do_pad: bool = True
    """Kept for round-tripping (the reference pads batches; see :func:`collate`)."""
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Unused keys of the json file, preserved verbatim."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, 'overlap_margins', _int_pair(self.overlap_margins, 'overlap_margins'))
        set_(self, 'base_image_input_size', _int_pair(self.base_image_input_size, 'base_image_input_size'))
        set_(self, 'pad_value', float(self.pad_value))
        set_(self, 'extra', types.MappingProxyType(json.loads(json.dumps(dict(self.extra)))))
        for name in ('max_crops', 'max_multi_image_crops', 'image_patch_size', 'image_pooling_w',
                     'image_pooling_h'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
            set_(self, name, int(value))
        for name in ('do_convert_rgb', 'do_pad'):
            set_(self, name, bool(getattr(self, name)))
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f'crop_mode {self.crop_mode!r} is not one of {CROP_MODES}')
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f'resize_mode {self.resize_mode!r} is not implemented (only {RESIZE_MODES})')
        if self.normalize_mode not in NORMALIZE_MODES:
            raise ValueError(f'normalize_mode {self.normalize_mode!r} is not one of {NORMALIZE_MODES}')
        height, width = self.base_image_input_size
        if height < 1 or height % self.image_patch_size or width % self.image_patch_size or width < 1:
            raise ValueError(f'base_image_input_size {self.base_image_input_size} must be positive multiples'
                             f' of image_patch_size {self.image_patch_size}')
        if self.crop_mode != 'resize':
            if height != width:
                raise ValueError('overlapping crops need a square base_image_input_size')
            if min(self.overlap_margins) < 0 or self.crop_window_patches < 1:
                raise ValueError(f'overlap_margins {self.overlap_margins} leave no crop window '
                                 f'in {self.crop_patches} patches')

    # Derived sizes --------------------------------------------------------------------------------

    @property
    def crop_patches(self) -> int:
        """Patches along one side of a crop (27)."""
        return self.base_image_input_size[0] // self.image_patch_size

    @property
    def patches_per_crop(self) -> int:
        """Patches in one crop or in the global view (729)."""
        return (self.base_image_input_size[0] // self.image_patch_size) * (
            self.base_image_input_size[1] // self.image_patch_size)

    @property
    def crop_window_patches(self) -> int:
        """Patches a crop owns along one side once the overlap margins are removed (19)."""
        return self.crop_patches - sum(self.overlap_margins)

    @property
    def crop_window_pixels(self) -> int:
        """Pixels a crop owns along one side (266)."""
        return self.crop_window_patches * self.image_patch_size

    @property
    def margin_pixels(self) -> int:
        """Pixels of both overlap margins together (112)."""
        return sum(self.overlap_margins) * self.image_patch_size

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch (588)."""
        return self.image_patch_size * self.image_patch_size * 3

    # Serialization --------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'MolmoActImageProcessorConfig':
        """Build from a ``preprocessor_config.json`` dict; unknown keys go to ``extra``."""
        known = {f.name for f in fields(cls)} - {'extra'}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> Dict[str, Any]:
        """The json dict: every setting (pairs as lists) plus the preserved ``extra`` keys."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != 'extra'}
        out['overlap_margins'] = list(self.overlap_margins)
        out['base_image_input_size'] = list(self.base_image_input_size)
        for key, value in self.extra.items():
            out[key] = json.loads(json.dumps(value))
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + '\n'

    @classmethod
    def from_json_file(cls, path: Union[str, os.PathLike]) -> 'MolmoActImageProcessorConfig':
        with open(path, encoding='utf-8') as handle:
            return cls.from_dict(json.load(handle))


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageTokenIds:
    """Vocabulary ids of the image layout tokens (from the tokenizer)."""

    start: int
    end: int
    patch: int
    col: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> 'ImageTokenIds':
        """Look the four tokens up with ``tokenizer.convert_tokens_to_ids``."""
        ids = {}
        unk = getattr(tokenizer, 'unk_token_id', None)
        for name, token in (('start', IM_START_TOKEN), ('end', IM_END_TOKEN), ('patch', IMAGE_PATCH_TOKEN),
                            ('col', IM_COL_TOKEN)):
            value = tokenizer.convert_tokens_to_ids(token)
            if not isinstance(value, (int, np.integer)) or (unk is not None and value == unk):
                raise ValueError(f'tokenizer has no id for {token!r}')
            ids[name] = int(value)
        return cls(**ids)


@dataclass(frozen=True)
class ImageLayout:
    """Where one image's tokens come from and how they are laid out in the prompt."""

    grids: Tuple[Tuple[int, int], ...]
    """(rows, cols) of pooled tokens of each view block, in prompt order (global view first)."""
    tiling: Optional[Tuple[int, int]]
    """(rows, cols) of overlapping crops, or None in ``resize`` crop mode."""
    n_crops: int
    """ViT inputs of this image (crops plus the global view)."""
    label: Optional[str]
    """Text before the image's tokens (``'Image k'`` in multi-image mode), else None."""

    @property
    def num_pooled_tokens(self) -> int:
        """``<im_patch>`` tokens, i.e. rows of ``pooled_patches_idx`` for this image."""
        return sum(h * w for h, w in self.grids)

    def num_tokens(self, use_col_tokens: bool = True) -> int:
        """Image layout tokens of this image (start/end, patches, columns); the label text is not counted."""
        return sum(2 + h * (w + int(use_col_tokens)) for h, w in self.grids)

    def token_strings(self, use_col_tokens: bool = True) -> List[str]:
        tokens: List[str] = []
        for rows, cols in self.grids:
            row = [IMAGE_PATCH_TOKEN] * cols + ([IM_COL_TOKEN] if use_col_tokens else [])
            tokens.append(IM_START_TOKEN)
            tokens.extend(row * rows)
            tokens.append(IM_END_TOKEN)
        return tokens

    def token_ids(self, ids: ImageTokenIds, use_col_tokens: bool = True) -> np.ndarray:
        table = {IM_START_TOKEN: ids.start, IM_END_TOKEN: ids.end, IMAGE_PATCH_TOKEN: ids.patch,
                 IM_COL_TOKEN: ids.col}
        return np.array([table[t] for t in self.token_strings(use_col_tokens)], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class ImageInputs:
    """Preprocessed images of one prompt (arrays are read-only).

    ``images``, ``image_masks`` and ``pooled_patches_idx`` equal one batch row of the reference
    processor's output for the same images; :func:`collate` stacks several.
    """

    images: np.ndarray
    """(n_crops, patches_per_crop, patch*patch*3) float32: flattened (row, col, channel) patches."""
    image_masks: np.ndarray
    """(n_crops, patches_per_crop) float32: fraction of real (unpadded) pixels per patch; 1 for siglip."""
    pooled_patches_idx: np.ndarray
    """(n_pooled_tokens, pool_h*pool_w) int64: flat indices into ``images[:, :]`` per token.

    Padding (a patch grid with an odd side) is -1 for the first image. For the second and later images
    the reference adds the image's patch offset to every entry, padding included, so their padding
    entries read ``offset - 1`` (the last patch of the previous image). AllenAI's training preprocessor
    does the same, so this is reproduced, not fixed.
    """
    image_grids: np.ndarray
    """(n_blocks, 2) int64: pooled (rows, cols) of every view block of every image, in prompt order."""
    layouts: Tuple[ImageLayout, ...]
    """One per input image."""
    multi_image: bool

    @property
    def num_pooled_tokens(self) -> int:
        return int(self.pooled_patches_idx.shape[0])

    def num_image_tokens(self, use_col_tokens: bool = True) -> int:
        """Image layout tokens of all images (label texts excluded)."""
        return sum(layout.num_tokens(use_col_tokens) for layout in self.layouts)

    def token_strings(self, use_col_tokens: bool = True) -> List[str]:
        """All images' layout tokens in order (label texts excluded)."""
        return [t for layout in self.layouts for t in layout.token_strings(use_col_tokens)]

    def prompt_prefix(self, use_col_tokens: bool = True) -> str:
        """The string the reference processor puts before the prompt text (no separator follows)."""
        return ''.join((layout.label or '') + ''.join(layout.token_strings(use_col_tokens))
                       for layout in self.layouts)

    def prompt_segments(self, ids: ImageTokenIds,
                        use_col_tokens: bool = True) -> List[Union[str, np.ndarray]]:
        """The prompt prefix as text pieces to tokenize (``'Image k'``) and id arrays of image tokens."""
        segments: List[Union[str, np.ndarray]] = []
        for layout in self.layouts:
            if layout.label:
                segments.append(layout.label)
            segments.append(layout.token_ids(ids, use_col_tokens))
        return segments


def collate(batch: Sequence[ImageInputs]) -> Dict[str, np.ndarray]:
    """Stack several prompts' arrays, padding with -1 along the first axis like the reference."""
    if not batch:
        raise ValueError('collate needs at least one ImageInputs')
    out: Dict[str, np.ndarray] = {}
    for name in ('images', 'pooled_patches_idx', 'image_masks', 'image_grids'):
        arrays = [getattr(item, name) for item in batch]
        longest = max(a.shape[0] for a in arrays)
        stacked = np.full((len(arrays), longest) + arrays[0].shape[1:], -1, dtype=arrays[0].dtype)
        for row, array in enumerate(arrays):
            stacked[row, :array.shape[0]] = array
        out[name] = stacked
    return out


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------

def to_rgb_uint8(image: ImageLike, convert_rgb: bool = True) -> np.ndarray:
    """A C-contiguous, writeable (H, W, 3) uint8 copy of a PIL image or an RGB uint8 array.

    Non-RGB PIL images are converted with ``Image.convert('RGB')`` (alpha is dropped, not composited),
    as the reference does with the transformers release it was written for.
    """
    if isinstance(image, Image.Image):
        if image.mode != 'RGB':
            if not convert_rgb:
                raise ValueError(f'PIL image mode {image.mode!r} is not RGB and do_convert_rgb is False')
            image = image.convert('RGB')
        array = np.array(image, dtype=np.uint8)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f'expected a numpy array or a PIL image, got {type(image).__name__}')
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) image, got shape {array.shape}')
    if array.dtype != np.uint8:
        raise TypeError(f'expected a uint8 image, got {array.dtype}')
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f'empty image of shape {array.shape}')
    return np.array(array, dtype=np.uint8, order='C', copy=True)


def resize_bilinear_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Stretch an (H, W, 3) uint8 image to (height, width, 3) like torchvision's tensor ``Resize``.

    torchvision (``transforms.Resize(size, BILINEAR, antialias=False)`` on a uint8 CHW tensor) casts to
    float32, calls ``interpolate(mode='bilinear', align_corners=False, antialias=False)``, rounds half
    to even and casts back; it returns the input untouched when the size does not change. The tensor
    keeps the numpy array's channels-last memory layout, as the reference's permuted tensor does.

    torch's CPU bilinear has two float kernels: for 3 channels it uses the channels-last one when
    ``torch.get_num_threads() == 1`` and the generic one otherwise. They differ in the last bit, which
    moves about 2e-5 of the pixels (those landing on an exact .5) by one level. The reference calls
    the same function, so the results equal the reference's under the same thread setting.
    """
    if height < 1 or width < 1:
        raise ValueError(f'output size must be positive, got {(height, width)}')
    if image.shape[:2] == (height, width):
        return image
    if not (image.flags.c_contiguous and image.flags.writeable):
        image = np.array(image, order='C', copy=True)
    source = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    resized = F.interpolate(source, size=(int(height), int(width)), mode='bilinear',
                            align_corners=False, antialias=False)
    resized = torch.round(resized).clamp_(0.0, 255.0).to(torch.uint8)
    return np.ascontiguousarray(resized[0].permute(1, 2, 0).numpy())


def normalization_table(normalize_mode: str) -> np.ndarray:
    """(256, 3) float32: the normalized value of every uint8 level per channel.

    Pixels are first scaled as ``float32(v) / 255`` (torch true division), then mapped in float32
    exactly as the reference does: siglip ``-1 + x * 2``; openai/dino ``(x - mean) / std``.
    """
    levels = torch.arange(256, dtype=torch.float32) / 255.0
    scaled = np.repeat(levels.numpy()[:, None], 3, axis=1)
    if normalize_mode == 'siglip':
        table = np.float32(-1.0) + scaled * np.float32(2.0)
    elif normalize_mode in _MEAN_STD:
        mean, std = (np.array(v, dtype=np.float32) for v in _MEAN_STD[normalize_mode])
        table = (scaled - mean[None, :]) / std[None, :]
    else:
        raise ValueError(f'normalize_mode {normalize_mode!r} is not one of {NORMALIZE_MODES}')
    return table.astype(np.float32)


def select_tiling(height: float, width: float, window: int, max_crops: int) -> Tuple[int, int]:
    """Choose (rows, cols) of crop windows of ``window`` pixels for a ``height`` x ``width`` area.

    Candidates are all rows*cols <= max_crops, ordered by (area, rows). Each gets the float32 scale
    that fits the area into it (smaller of the two axis ratios). If some candidate needs no
    downscaling the one needing the least upscaling wins, otherwise the one downscaling least; the
    first in order wins ties. ``height``/``width`` may be zero or negative (image smaller than the
    overlap margins): the float32 division then yields inf or negative scales, as in the reference.
    """
    candidates = sorted(((r, c) for r in range(1, max_crops + 1) for c in range(1, max_crops + 1)
                         if r * c <= max_crops), key=lambda rc: (rc[0] * rc[1], rc[0]))
    sizes = np.array(candidates, dtype=np.int64) * int(window)
    area = np.array([height, width], dtype=np.float32)
    with np.errstate(divide='ignore'):
        ratios = sizes.astype(np.float32) / area[None, :]
    scale = ratios.min(axis=1)
    fits = scale >= 1
    if fits.any():
        penalized = np.where(fits, scale, np.float32(1e10))
        pick = int(np.argmin(penalized))
    else:
        pick = int(np.argmax(scale))
    return candidates[pick]


def patchify(views: np.ndarray, patch: int) -> np.ndarray:
    """(n, H, W, C) -> (n, H/p * W/p, p*p*C), patches in row-major order, each flattened (y, x, c)."""
    n, height, width, channels = views.shape
    rows, cols = height // patch, width // patch
    blocks = views[:, :rows * patch, :cols * patch].reshape(n, rows, patch, cols, patch, channels)
    return blocks.swapaxes(2, 3).reshape(n, rows * cols, patch * patch * channels)


def pool_patch_grid(grid: np.ndarray, pool_h: int, pool_w: int) -> np.ndarray:
    """Group a (rows, cols) grid of patch indices into pool_h x pool_w windows.

    Grids whose sides are not multiples of the window are padded with -1, the smaller half of the
    padding before and the larger after. Returns (ceil(rows/pool_h), ceil(cols/pool_w),
    pool_h*pool_w), each window flattened row-major.
    """
    rows, cols = grid.shape
    out_rows, out_cols = -(-rows // pool_h), -(-cols // pool_w)
    top = (out_rows * pool_h - rows) // 2
    left = (out_cols * pool_w - cols) // 2
    padded = np.full((out_rows * pool_h, out_cols * pool_w), -1, dtype=np.int64)
    padded[top:top + rows, left:left + cols] = grid
    windows = padded.reshape(out_rows, pool_h, out_cols, pool_w).swapaxes(1, 2)
    return windows.reshape(out_rows, out_cols, pool_h * pool_w)


def overlap_patch_grid(tiling: Tuple[int, int], crop_patches: int, margins: Tuple[int, int],
                       first_index: int = 0) -> np.ndarray:
    """Patch indices (into the stacked crops) of every patch of the image the crops were cut from.

    Crop (i, j) starts ``i * step`` patches down and ``j * step`` across, ``step = crop_patches -
    sum(margins)``. A patch in an overlap belongs to the crop in which it is not within the margins:
    the first crop of a row/column keeps its leading margin, the last its trailing one. Crops are
    numbered row-major; crop k's patches start at ``first_index + k * crop_patches**2``.
    """
    lead, trail = margins
    step = crop_patches - lead - trail

    def owners(n_tiles: int) -> Tuple[np.ndarray, np.ndarray]:
        coord = np.arange(n_tiles * step + lead + trail)
        tile = np.clip((coord - lead) // step, 0, n_tiles - 1)
        return tile, coord - tile * step

    tile_r, local_r = owners(int(tiling[0]))
    tile_c, local_c = owners(int(tiling[1]))
    crop = tile_r[:, None] * int(tiling[1]) + tile_c[None, :]
    return (first_index + crop * crop_patches * crop_patches
            + local_r[:, None] * crop_patches + local_c[None, :]).astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# Processor
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _ImageParts:
    patches: np.ndarray  # (n_crops, patches_per_crop, patch_dim) uint8
    pooled: np.ndarray  # (n_tokens, pool) int64, crops of this image numbered from 0
    grids: Tuple[Tuple[int, int], ...]
    tiling: Optional[Tuple[int, int]]


class MolmoActImageProcessor:
    """Native MolmoAct image processor (plain class; see the module docstring for the algorithm).

    ``preprocess(image)`` handles one image; ``preprocess([img, ...])`` handles the images of one prompt
    in multi-image mode (``max_multi_image_crops`` per image and an ``Image k`` label before each),
    which is how MolmoAct's published inference passes its camera views (``images=[imgs]``).
    """

    def __init__(self, config: Optional[MolmoActImageProcessorConfig] = None, **overrides: Any) -> None:
        base = config if config is not None else MolmoActImageProcessorConfig()
        if overrides:
            base = MolmoActImageProcessorConfig.from_dict({**base.to_dict(), **overrides})
        self._config = base
        self._table = normalization_table(base.normalize_mode)

    @property
    def config(self) -> MolmoActImageProcessorConfig:
        return self._config

    # Serialization --------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'MolmoActImageProcessor':
        return cls(MolmoActImageProcessorConfig.from_dict(data))

    def to_dict(self) -> Dict[str, Any]:
        return self._config.to_dict()

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike]) -> 'MolmoActImageProcessor':
        """Load a local directory holding ``preprocessor_config.json``, or that json file itself."""
        location = Path(path)
        if location.is_dir():
            location = location / PREPROCESSOR_CONFIG_NAME
        if not location.is_file():
            raise FileNotFoundError(f'no {PREPROCESSOR_CONFIG_NAME} at {path}')
        return cls(MolmoActImageProcessorConfig.from_json_file(location))

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``preprocessor_config.json`` into ``directory`` (created if needed); returns its path."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        path = target / PREPROCESSOR_CONFIG_NAME
        path.write_text(self._config.to_json_string(), encoding='utf-8')
        return path

    # Processing -----------------------------------------------------------------------------------

    def __call__(self, images: Union[ImageLike, Sequence[ImageLike]],
                 multi_image: Optional[bool] = None) -> ImageInputs:
        return self.preprocess(images, multi_image=multi_image)

    def preprocess(self, images: Union[ImageLike, Sequence[ImageLike]],
                   multi_image: Optional[bool] = None) -> ImageInputs:
        """Preprocess the images of one prompt.

        Args:
            images: one image, or a sequence of images (for example primary and wrist camera views).
                Images are (H, W, 3) uint8 RGB arrays or PIL images.
            multi_image: multi-image mode (per-image ``max_multi_image_crops`` and ``Image k`` labels).
                Default: False for a single bare image, True for a sequence (even of one image), which
                matches the reference processor called with a nested list.
        """
        if isinstance(images, (np.ndarray, Image.Image)):
            image_list = [images]
            multi = False if multi_image is None else bool(multi_image)
        else:
            image_list = list(images)
            multi = True if multi_image is None else bool(multi_image)
        if not image_list:
            raise ValueError('no images given')
        if not multi and len(image_list) != 1:
            raise ValueError(f'single-image mode takes one image, got {len(image_list)}')
        cfg = self._config
        max_crops = cfg.max_multi_image_crops if multi else cfg.max_crops

        patch_blocks, pooled_blocks, grid_rows, layouts = [], [], [], []
        offset = 0
        for number, image in enumerate(image_list, start=1):
            parts = self._image_parts(to_rgb_uint8(image, cfg.do_convert_rgb), max_crops)
            # The offset is added to the -1 padding entries too (see ImageInputs.pooled_patches_idx).
            pooled_blocks.append(parts.pooled + offset)
            patch_blocks.append(parts.patches)
            grid_rows.extend(parts.grids)
            offset += parts.patches.shape[0] * parts.patches.shape[1]
            layouts.append(ImageLayout(grids=parts.grids, tiling=parts.tiling, n_crops=parts.patches.shape[0],
                                       label=f'Image {number}' if multi else None))

        patches = np.concatenate(patch_blocks, axis=0)
        channel = np.arange(patches.shape[-1]) % 3
        pixels = self._table[patches, channel]
        masks = np.ones(patches.shape[:2], dtype=np.float32)
        pooled = np.concatenate(pooled_blocks, axis=0).astype(np.int64)
        grids = np.array(grid_rows, dtype=np.int64).reshape(-1, 2)
        for array in (pixels, masks, pooled, grids):
            array.setflags(write=False)
        return ImageInputs(images=pixels, image_masks=masks, pooled_patches_idx=pooled, image_grids=grids,
                           layouts=tuple(layouts), multi_image=multi)

    def tiling_for(self, height: int, width: int, multi_image: bool = False) -> Tuple[int, int]:
        """The crop grid (rows, cols) chosen for an image of this size."""
        cfg = self._config
        return select_tiling(height - cfg.margin_pixels, width - cfg.margin_pixels, cfg.crop_window_pixels,
                             cfg.max_multi_image_crops if multi_image else cfg.max_crops)

    def _image_parts(self, image: np.ndarray, max_crops: int) -> _ImageParts:
        cfg = self._config
        size, patch = cfg.base_image_input_size, cfg.image_patch_size
        pool_h, pool_w = cfg.image_pooling_h, cfg.image_pooling_w
        views: List[np.ndarray] = []
        pooled: List[np.ndarray] = []
        grids: List[Tuple[int, int]] = []
        tiling: Optional[Tuple[int, int]] = None

        if cfg.crop_mode in ('overlap-and-resize-c2', 'resize'):
            whole = resize_bilinear_uint8(image, size[0], size[1])
            views.append(whole[None])
            index = np.arange(cfg.patches_per_crop, dtype=np.int64).reshape(size[0] // patch, size[1] // patch)
            windows = pool_patch_grid(index, pool_h, pool_w)
            grids.append((windows.shape[0], windows.shape[1]))
            pooled.append(windows.reshape(-1, pool_h * pool_w))

        if cfg.crop_mode in ('overlap-and-resize-c2', 'overlap-and-resize'):
            height, width = image.shape[:2]
            tiling = select_tiling(height - cfg.margin_pixels, width - cfg.margin_pixels,
                                   cfg.crop_window_pixels, max_crops)
            window, crop = cfg.crop_window_pixels, size[0]
            source = resize_bilinear_uint8(image, tiling[0] * window + cfg.margin_pixels,
                                           tiling[1] * window + cfg.margin_pixels)
            crops = np.stack([source[r * window:r * window + crop, c * window:c * window + crop]
                              for r in range(tiling[0]) for c in range(tiling[1])])
            views.append(crops)
            first = cfg.patches_per_crop if cfg.crop_mode == 'overlap-and-resize-c2' else 0
            index = overlap_patch_grid(tiling, cfg.crop_patches, cfg.overlap_margins, first)
            windows = pool_patch_grid(index, pool_h, pool_w)
            grids.append((windows.shape[0], windows.shape[1]))
            pooled.append(windows.reshape(-1, pool_h * pool_w))

        patches = patchify(np.concatenate(views, axis=0), patch)
        return _ImageParts(patches=patches, pooled=np.concatenate(pooled, axis=0), grids=tuple(grids),
                           tiling=tiling)
