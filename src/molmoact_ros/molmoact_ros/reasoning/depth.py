"""Depth perception codes: validation, a raw-code display image, and a native MolmoAct depth VQ-VAE decoder.

ROS-free. MolmoAct's perception stage writes 100 ``<DEPTH_n>`` tokens (n in 0..127): the codebook indices of
a 10x10 latent grid, row-major, of AllenAI's depth VQ-VAE (320x320 input, downsample 32, 128 codes of
dimension 512). They describe Depth-Anything-V2 *relative* depth, min-max normalised per image; not metric.

* :func:`codes_to_grid` validates the codes and reshapes them to the (10, 10) grid.
* :func:`depth_code_image` is a 320x320 grey image of the raw codes (``code * 2``, nearest-neighbour
  upscaled) for when no decoder checkpoint is configured. Code indices are not ordered by depth, so this
  image only shows the layout of the codes, not depth.
* :class:`DepthEncoder` is the encoder half with the released state-dict names (``encoder.*`` and the
  codebook ``_vq_vae._embedding``): a (normalised relative) depth image -> 100 codes, the way MolmoAct's data
  pipeline tokenised depth (:func:`relative_depth_image` turns a metric depth map into its input);
  :func:`load_depth_encoder` reads the released ``vae-final.pt``.
* :class:`DepthDecoder` is the decoder half of the VQ-VAE with the released state-dict names
  (``_vq_vae._embedding`` and ``decoder.*``); :func:`load_depth_decoder` reads the released
  ``vae-final.pt`` (``{'weights': state_dict}``, keys possibly prefixed ``module.``), ignoring the encoder
  and the EMA buffers. ``DepthDecoder.decode`` returns relative depth in [0, 1], min-max normalised as the
  reference ``scripts/reconstruct_from_tokens.py`` does before saving; :func:`to_uint8` converts it as
  that script's image writer does.

Encoder layout (the mirror of the decoder; 1 channel in, ``use_norm=False`` so the input is the image in
[0, 1] as ``ToTensor`` gives it)::

    encoder.0   Conv 4x4 s2 p1 1->16, ReLU                                  (160x160)
    encoder.2/4/6/8 Conv 4x4 s2 p1 doubling channels, ReLU                   (80, 40, 20, 10; 256 ch)
    encoder.10/11 residual blocks (256 ch, as in the decoder)
    encoder.12  Conv 1x1 256->512 (codebook_dim)
    nearest codebook row (squared Euclidean distance, first minimum on ties) -> code index

Decoder layout (released config: hidden_dim 16, downsample_ratio 32, 2 residual blocks, 1 channel,
``use_norm=False``, regression objective, so the output is the last conv's raw value, no sigmoid, clamp or
``max_value`` scaling)::

    codes (10x10) -> codebook rows (512 ch)
    decoder.0   Conv 1x1 512->256, ReLU
    decoder.2/3 residual blocks x + net(x), net = Conv3x3, ReLU, Conv3x3, ReLU, Conv1x1 (256 ch)
    decoder.4   ConvTranspose 4x4 s2 p1 256->256, ReLU                 (20x20)
    decoder.6/8/10/12 ConvTranspose 4x4 s2 p1 halving channels, ReLU   (40, 80, 160, 320)
    decoder.14  Conv 1x1 16->1
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Dict, Iterable, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

GRID_SIZE = 10
NUM_CODES = GRID_SIZE * GRID_SIZE
NUM_TOKENS = 128
CODEBOOK_DIM = 512
IMAGE_SIZE = 320
HIDDEN_DIM = 16
DOWNSAMPLE_RATIO = 32
NUM_RESNET_BLOCKS = 2
CHANNELS = 1

CODEBOOK_KEY = '_vq_vae._embedding'
# Wrappers the released training code may leave: DistributedDataParallel's 'module.' prefix.
_PREFIXES = ('module.',)
# Checkpoint dict keys that hold the state dict ('weights' is what Aurora-perception's save_model writes).
_WRAPPER_KEYS = ('weights', 'state_dict', 'model')


class DepthCheckpointError(RuntimeError):
    """The depth VQ-VAE checkpoint cannot be read or does not fit the decoder; the message says why."""


# --------------------------------------------------------------------------------------------------------
# Codes


def codes_to_grid(codes: Union[Iterable[int], np.ndarray, torch.Tensor]) -> np.ndarray:
    """Validate 100 depth codes and return them as a row-major (10, 10) uint8 grid.

    ``codes`` is any sequence / array / tensor of 100 integers (flat or already 10x10), each in 0..127.
    Raises ValueError naming the problem (count, non-integer values, out-of-range values).
    """
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    elif not isinstance(codes, np.ndarray):
        if isinstance(codes, (str, bytes)):
            raise ValueError(f'depth codes must be a sequence of integers, got {type(codes).__name__} '
                             '(parse the <DEPTH_n> tokens first)')
        try:
            codes = np.asarray(list(codes))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f'depth codes must be a sequence of integers: {exc}') from exc
    arr = codes
    if arr.size != NUM_CODES or arr.shape not in ((NUM_CODES,), (GRID_SIZE, GRID_SIZE)):
        raise ValueError(f'expected exactly {NUM_CODES} depth codes (a {GRID_SIZE}x{GRID_SIZE} grid), '
                         f'got {arr.size} (shape {tuple(arr.shape)})')
    if arr.dtype.kind not in 'iu':
        raise ValueError(f'depth codes must be integers, got dtype {arr.dtype}')
    bad = np.flatnonzero((arr.reshape(-1) < 0) | (arr.reshape(-1) >= NUM_TOKENS))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f'depth codes must be in 0..{NUM_TOKENS - 1}; code #{i} is {int(arr.reshape(-1)[i])} '
                         f'({bad.size} out of range)')
    return arr.reshape(GRID_SIZE, GRID_SIZE).astype(np.uint8)


def depth_code_image(codes, scale: int = IMAGE_SIZE // GRID_SIZE) -> np.ndarray:
    """A grey uint8 image of the raw codes: each code drawn as a ``scale`` x ``scale`` block of ``code * 2``.

    (10 * scale) square; 320x320 by default, the decoder's output size. Codes are indices into a learned
    codebook, not depth values: brightness shows which code sits where, not how far it is.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f'scale must be a positive integer, got {scale!r}')
    grid = codes_to_grid(codes) * np.uint8(2)  # 0..254, no overflow
    return np.repeat(np.repeat(grid, int(scale), axis=0), int(scale), axis=1)


def to_uint8(depth01: np.ndarray) -> np.ndarray:
    """[0, 1] float image -> uint8 the way torchvision's ``save_image`` writes it: floor(x * 255 + 0.5)."""
    x = np.asarray(depth01, dtype=np.float32)
    return np.clip(np.floor(x * 255.0 + 0.5), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------
# Decoder


class _Codebook(nn.Module):
    """The EMA vector quantiser's codebook, kept as the buffer ``_embedding`` (num_tokens x codebook_dim)."""

    def __init__(self, num_tokens: int, codebook_dim: int) -> None:
        super().__init__()
        self.register_buffer('_embedding', torch.zeros(num_tokens, codebook_dim))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) long -> (B, codebook_dim, H, W) codebook rows."""
        return F.embedding(indices, self._embedding).permute(0, 3, 1, 2).contiguous()


class _ResBlock(nn.Module):
    """x + net(x), net = Conv3x3, ReLU, Conv3x3, ReLU, Conv1x1 (names net.0 / net.2 / net.4)."""

    def __init__(self, chan: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(chan, chan, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(chan, chan, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(chan, chan, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x


class DepthDecoder(nn.Module):
    """Codebook lookup + convolutional decoder of MolmoAct's depth VQ-VAE (released state-dict names).

    ``forward(indices)`` maps (B, H, W) code indices to the raw (B, 1, 32H, 32W) decoder output; ``decode``
    is the single-image, validated, normalised entry point. Build it with :func:`load_depth_decoder`.
    """

    def __init__(self, num_tokens: int = NUM_TOKENS, codebook_dim: int = CODEBOOK_DIM,
                 hidden_dim: int = HIDDEN_DIM, downsample_ratio: int = DOWNSAMPLE_RATIO,
                 num_resnet_blocks: int = NUM_RESNET_BLOCKS, channels: int = CHANNELS) -> None:
        super().__init__()
        n_up = int(round(np.log2(downsample_ratio)))
        if 2 ** n_up != downsample_ratio or n_up < 1:
            raise ValueError(f'downsample_ratio must be a power of two >= 2, got {downsample_ratio}')
        self.num_tokens = num_tokens
        self._vq_vae = _Codebook(num_tokens, codebook_dim)
        dim = hidden_dim * downsample_ratio // 2
        layers = [nn.Conv2d(codebook_dim, dim, 1), nn.ReLU()]
        layers += [_ResBlock(dim) for _ in range(num_resnet_blocks)]
        layers += [nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1), nn.ReLU()]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, stride=2, padding=1), nn.ReLU()]
            dim //= 2
        layers.append(nn.Conv2d(dim, channels, 1))
        self.decoder = nn.Sequential(*layers)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self._vq_vae._embedding.device

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) code indices -> (B, codebook_dim, H, W) codebook vectors (the decoder's input)."""
        return self._vq_vae(indices)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.embed(indices))

    def decode_raw(self, codes) -> np.ndarray:
        """100 codes -> the decoder's raw (320, 320) float32 output (unnormalised relative depth)."""
        grid = torch.from_numpy(codes_to_grid(codes).astype(np.int64)).to(self.device)
        with torch.inference_mode():
            out = self(grid.unsqueeze(0))
        return out[0, 0].float().cpu().numpy()

    def decode(self, codes) -> np.ndarray:
        """100 codes -> (320, 320) float32 relative depth in [0, 1], min-max normalised per image.

        Same values as the reference reconstruction before it is written to a PNG. The VQ-VAE was trained on
        min-max normalised Depth-Anything-V2 output, which is relative inverse depth, so larger = nearer
        (derived from the preprocessing code, not stated by AllenAI). A flat output maps to all zeros.
        """
        raw = self.decode_raw(codes)
        lo, hi = float(raw.min()), float(raw.max())
        return ((raw - lo) / max(hi - lo, 1e-8)).astype(np.float32)

    to_uint8 = staticmethod(to_uint8)


# --------------------------------------------------------------------------------------------------------
# Encoder


def relative_depth_image(depth_m: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """A metric depth map -> the encoder's input: (size, size) float32 relative inverse depth in [0, 1].

    MolmoAct tokenised Depth-Anything-V2 output: relative *inverse* depth (larger = nearer), min-max
    normalised per image to uint8 0..255, resized to 320x320 and scaled to [0, 1]. From an aligned metric
    depth map (metres along the optical axis) the same kind of image is ``1 / z``, min-max normalised per
    image and quantised to uint8 the same way; pixels without depth (0, negative, NaN or +inf: nothing hit)
    count as the farthest (0). The resize is bilinear (OpenCV ``INTER_AREA`` when shrinking). A map with
    one depth only gives all zeros.
    """
    z = np.asarray(depth_m, dtype=np.float64)
    if z.ndim != 2 or z.size == 0:
        raise ValueError(f'depth map must be a non-empty (H, W) array, got shape {z.shape}')
    valid = np.isfinite(z) & (z > 0)
    inv = np.zeros_like(z)
    inv[valid] = 1.0 / z[valid]
    lo = float(inv[valid].min()) if valid.any() else 0.0
    hi = float(inv.max())
    if not valid.any() or hi - lo <= 0:
        grey = np.zeros(z.shape, dtype=np.uint8)
    else:
        # Pixels without depth go to 0 with the farthest valid ones (min-max over the valid pixels).
        scaled = np.where(valid, (inv - lo) / (hi - lo), 0.0)
        grey = np.clip(np.floor(scaled * 255.0 + 0.5), 0, 255).astype(np.uint8)
    if grey.shape != (size, size):
        import cv2  # opencv-python-headless: a runtime dependency of the suite
        shrink = grey.shape[0] >= size and grey.shape[1] >= size
        grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return grey.astype(np.float32) / 255.0


class DepthEncoder(nn.Module):
    """Convolutional encoder + nearest-codebook quantiser of MolmoAct's depth VQ-VAE (released state-dict
    names ``encoder.*`` and ``_vq_vae._embedding``). The sizes are parameters so that a smaller tokenizer of
    the same code layout (10x10 codes out of 128 for a 320x320 input) can be built and trained with it
    (``molmoact_ros.training.depth_tokenizer``); the defaults are the released ones.

    ``forward(images)`` maps (B, 1, S, S) images in [0, 1] to the (B, codebook_dim, S/r, S/r) latents;
    :meth:`codes` quantises them; :meth:`encode` is the validated single-image entry point.
    """

    def __init__(self, num_tokens: int = NUM_TOKENS, codebook_dim: int = CODEBOOK_DIM,
                 hidden_dim: int = HIDDEN_DIM, downsample_ratio: int = DOWNSAMPLE_RATIO,
                 num_resnet_blocks: int = NUM_RESNET_BLOCKS, channels: int = CHANNELS,
                 image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        n_down = int(round(np.log2(downsample_ratio)))
        if 2 ** n_down != downsample_ratio or n_down < 1:
            raise ValueError(f'downsample_ratio must be a power of two >= 2, got {downsample_ratio}')
        if image_size % downsample_ratio:
            raise ValueError(f'image_size {image_size} is not a multiple of downsample_ratio {downsample_ratio}')
        self.num_tokens = num_tokens
        self.image_size = image_size
        self.grid_size = image_size // downsample_ratio
        self._vq_vae = _Codebook(num_tokens, codebook_dim)
        dim = hidden_dim
        layers: list = [nn.Conv2d(channels, dim, 4, stride=2, padding=1), nn.ReLU()]
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1), nn.ReLU()]
            dim *= 2
        layers += [_ResBlock(dim) for _ in range(num_resnet_blocks)]
        layers.append(nn.Conv2d(dim, codebook_dim, 1))
        self.encoder = nn.Sequential(*layers)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self._vq_vae._embedding.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) latents -> (B, H, W) long indices of the nearest codebook rows (squared distance)."""
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        book = self._vq_vae._embedding.to(flat.dtype)
        distances = (flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2.0 * flat @ book.t())
        idx = torch.argmin(distances, dim=1)
        return idx.view(latents.shape[0], latents.shape[2], latents.shape[3])

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) images in [0, 1] -> (B, grid, grid) code indices."""
        return self.quantize(self(images))

    def encode_batch(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S) float images in [0, 1] -> (B, grid*grid) uint8 codes, row-major."""
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim != 3 or arr.shape[1:] != (self.image_size, self.image_size):
            raise ValueError(f'expected (B, {self.image_size}, {self.image_size}) images, got {arr.shape}')
        if not np.all(np.isfinite(arr)):
            raise ValueError('depth images hold non-finite values')
        x = torch.from_numpy(arr).unsqueeze(1).to(self.device, self._vq_vae._embedding.dtype)
        with torch.inference_mode():
            idx = self.codes(x)
        return idx.reshape(arr.shape[0], -1).cpu().numpy().astype(np.uint8)

    def encode(self, image01: np.ndarray) -> np.ndarray:
        """One (S, S) image in [0, 1] (:func:`relative_depth_image`) -> its 100 codes (uint8, row-major)."""
        return self.encode_batch(np.asarray(image01)[None])[0]

    def encode_depth_m(self, depth_m: np.ndarray) -> np.ndarray:
        """A metric depth map -> its 100 codes (:func:`relative_depth_image` then :meth:`encode`)."""
        return self.encode(relative_depth_image(depth_m, self.image_size))


# --------------------------------------------------------------------------------------------------------
# Loading


def _unwrap(obj, source: str) -> Dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise DepthCheckpointError(f'{source}: expected a state dict or a dict holding one, '
                                   f'got {type(obj).__name__}')
    for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    return state


def load_depth_decoder(path: Union[str, os.PathLike], device: Union[str, torch.device] = 'cpu',
                       dtype: torch.dtype = torch.float32) -> DepthDecoder:
    """Build a :class:`DepthDecoder` from the released ``vae-final.pt`` (or a compatible file).

    Accepts ``{'weights': state_dict}`` (the released layout) or a bare state dict (also under 'state_dict'
    / 'model'), keys optionally prefixed ``module.``. Encoder weights and the quantiser's EMA statistics
    are ignored. Missing decoder / codebook keys, unknown ``decoder.*`` keys and shape mismatches raise
    :class:`DepthCheckpointError` naming them.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DepthCheckpointError(f'depth VQ-VAE checkpoint not found: {path} (the released file is '
                                   'vae-final.pt in the allenai/MolmoAct-7B-D-0812 Hugging Face repo)')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds for a bad file)
        raise DepthCheckpointError(f'{path}: cannot read the checkpoint: {exc}') from exc
    return depth_decoder_from_state_dict(obj, device=device, dtype=dtype, source=path)


def depth_decoder_from_state_dict(obj: Mapping, device: Union[str, torch.device] = 'cpu',
                                  dtype: torch.dtype = torch.float32,
                                  source: str = '<state dict>') -> DepthDecoder:
    """:func:`load_depth_decoder` for an already loaded checkpoint object (same layouts and checks)."""
    sd = _unwrap(obj, source)

    model = DepthDecoder()
    expected = model.state_dict()
    needed = {k: v for k, v in sd.items() if k.startswith('decoder.') or k == CODEBOOK_KEY}
    missing = sorted(set(expected) - set(needed))
    unexpected = sorted(set(needed) - set(expected))
    if missing or unexpected:
        msg = [f'{source}: the checkpoint does not match the MolmoAct depth VQ-VAE decoder.']
        if missing:
            msg.append(f'Missing keys ({len(missing)}): {", ".join(missing)}.')
        if unexpected:
            msg.append(f'Unexpected decoder keys ({len(unexpected)}): {", ".join(unexpected)}.')
        if not needed:
            sample = ', '.join(sorted(sd)[:5]) or '(none)'
            msg.append(f'No decoder keys at all; first keys found: {sample}.')
        raise DepthCheckpointError(' '.join(msg))
    for key, ref in expected.items():
        value = needed[key]
        if not isinstance(value, torch.Tensor):
            raise DepthCheckpointError(f'{source}: {key} is a {type(value).__name__}, not a tensor')
        if tuple(value.shape) != tuple(ref.shape):
            raise DepthCheckpointError(f'{source}: {key} has shape {tuple(value.shape)}, '
                                       f'expected {tuple(ref.shape)}')
        if not torch.isfinite(value).all():
            raise DepthCheckpointError(f'{source}: {key} holds non-finite values')
    model.load_state_dict({k: v.to(torch.float32) for k, v in needed.items()}, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def load_depth_encoder(path: Union[str, os.PathLike], device: Union[str, torch.device] = 'cpu',
                       dtype: torch.dtype = torch.float32) -> DepthEncoder:
    """Build a :class:`DepthEncoder` from the released ``vae-final.pt`` (layouts as :func:`load_depth_decoder`).

    Decoder weights and the quantiser's EMA statistics are ignored. Missing encoder / codebook keys,
    unknown ``encoder.*`` keys and shape mismatches raise :class:`DepthCheckpointError` naming them.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DepthCheckpointError(f'depth VQ-VAE checkpoint not found: {path} (the released file is '
                                   'vae-final.pt in the allenai/MolmoAct-7B-D-0812 Hugging Face repo)')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds for a bad file)
        raise DepthCheckpointError(f'{path}: cannot read the checkpoint: {exc}') from exc
    return depth_encoder_from_state_dict(obj, device=device, dtype=dtype, source=path)


def depth_encoder_from_state_dict(obj: Mapping, device: Union[str, torch.device] = 'cpu',
                                  dtype: torch.dtype = torch.float32, source: str = '<state dict>',
                                  model: 'DepthEncoder | None' = None) -> DepthEncoder:
    """:func:`load_depth_encoder` for an already loaded checkpoint object; ``model`` (default: the released
    sizes) is the encoder to fill."""
    sd = _unwrap(obj, source)
    model = DepthEncoder() if model is None else model
    expected = model.state_dict()
    needed = {k: v for k, v in sd.items() if k.startswith('encoder.') or k == CODEBOOK_KEY}
    missing = sorted(set(expected) - set(needed))
    unexpected = sorted(set(needed) - set(expected))
    if missing or unexpected:
        msg = [f'{source}: the checkpoint does not match the MolmoAct depth VQ-VAE encoder.']
        if missing:
            msg.append(f'Missing keys ({len(missing)}): {", ".join(missing)}.')
        if unexpected:
            msg.append(f'Unexpected encoder keys ({len(unexpected)}): {", ".join(unexpected)}.')
        raise DepthCheckpointError(' '.join(msg))
    for key, ref in expected.items():
        value = needed[key]
        if not isinstance(value, torch.Tensor):
            raise DepthCheckpointError(f'{source}: {key} is a {type(value).__name__}, not a tensor')
        if tuple(value.shape) != tuple(ref.shape):
            raise DepthCheckpointError(f'{source}: {key} has shape {tuple(value.shape)}, '
                                       f'expected {tuple(ref.shape)}')
        if not torch.isfinite(value).all():
            raise DepthCheckpointError(f'{source}: {key} holds non-finite values')
    model.load_state_dict({k: v.to(torch.float32) for k, v in needed.items()}, strict=True)
    return model.to(device=device, dtype=dtype).eval()


__all__ = ['CODEBOOK_KEY', 'DepthCheckpointError', 'DepthDecoder', 'DepthEncoder', 'load_depth_encoder',
           'depth_encoder_from_state_dict', 'relative_depth_image', 'GRID_SIZE', 'IMAGE_SIZE', 'NUM_CODES',
           'NUM_TOKENS', 'codes_to_grid', 'depth_code_image', 'depth_decoder_from_state_dict',
           'load_depth_decoder', 'to_uint8']
