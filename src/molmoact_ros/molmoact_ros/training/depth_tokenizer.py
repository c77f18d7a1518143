"""Depth tokenizers for the dataset: the released depth VQ-VAE's encoder, or a small one trained here.

Both give MolmoAct's code layout: a 320x320 relative inverse-depth image (``reasoning.depth.
relative_depth_image``) -> a row-major 10x10 grid of codes in 0..127.

* ``released``: :func:`~molmoact_ros.reasoning.depth.load_depth_encoder` on AllenAI's ``vae-final.pt``
  (the codes a released checkpoint was trained to write).
* ``trained``: :func:`train_depth_tokenizer`, a VQ-VAE of the released architecture with fewer channels
  (``hidden_dim`` 8, ``codebook_dim`` 32 by default) that reads the 320x320 image at half size (160x160,
  downsample 16: the same 10x10 grid, a quarter of the compute), an EMA codebook initialised from encoder outputs and
  restarted where codes go unused, trained on the dataset's own depth maps. Its codes mean nothing to a
  released checkpoint: a model fine-tuned on them learns them. Saved as a ``vae-final.pt``-style file
  (``{'weights': state_dict, 'molmoact_depth_tokenizer': config}``, the released key names) that
  :func:`load_depth_tokenizer` and the decoder (``reasoning.depth.DepthDecoder`` of the same sizes) read.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch.nn import functional as F

from ..reasoning.depth import (CODEBOOK_DIM, DOWNSAMPLE_RATIO, HIDDEN_DIM, IMAGE_SIZE, NUM_RESNET_BLOCKS,
                               NUM_TOKENS, DepthCheckpointError, DepthDecoder, DepthEncoder,
                               depth_encoder_from_state_dict, load_depth_encoder)

__all__ = ['TokenizerConfig', 'DepthTokenizer', 'load_depth_tokenizer', 'train_depth_tokenizer']

CONFIG_KEY = 'molmoact_depth_tokenizer'


@dataclass(frozen=True)
class TokenizerConfig:
    """Sizes of a depth tokenizer (the released one: hidden 16, codebook_dim 512)."""

    kind: str = 'trained'
    num_tokens: int = NUM_TOKENS
    codebook_dim: int = 32
    hidden_dim: int = 8
    downsample_ratio: int = 16
    num_resnet_blocks: int = NUM_RESNET_BLOCKS
    image_size: int = 160
    training: dict = field(default_factory=dict)

    def sizes(self) -> dict:
        return dict(num_tokens=self.num_tokens, codebook_dim=self.codebook_dim, hidden_dim=self.hidden_dim,
                    downsample_ratio=self.downsample_ratio, num_resnet_blocks=self.num_resnet_blocks)


RELEASED = TokenizerConfig(kind='released', codebook_dim=CODEBOOK_DIM, hidden_dim=HIDDEN_DIM,
                           downsample_ratio=DOWNSAMPLE_RATIO, image_size=IMAGE_SIZE)


def _to_size(images_u8: np.ndarray, size: int) -> np.ndarray:
    """(B, S, S) uint8 images resized to (B, size, size) (area); unchanged when already that size."""
    imgs = np.asarray(images_u8)
    if imgs.shape[1:] == (size, size):
        return imgs
    import cv2
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in imgs])


class DepthTokenizer:
    """An encoder and where it came from (``config.kind`` 'released' or 'trained'; ``source`` a path)."""

    def __init__(self, encoder: DepthEncoder, config: TokenizerConfig, source: str = '') -> None:
        self.encoder = encoder.eval()
        self.config = config
        self.source = source

    def encode(self, images_u8: np.ndarray, batch: int = 32) -> np.ndarray:
        """(B, 320, 320) uint8 relative-depth images -> (B, 100) uint8 codes."""
        imgs = _to_size(np.asarray(images_u8), self.config.image_size)
        out = []
        for i in range(0, len(imgs), batch):
            out.append(self.encoder.encode_batch(imgs[i:i + batch].astype(np.float32) / 255.0))
        return np.concatenate(out) if out else np.zeros((0, 100), np.uint8)

    def metadata(self) -> dict:
        return {'kind': self.config.kind, 'source': self.source, **self.config.sizes(),
                'image_size': self.config.image_size, 'training': self.config.training,
                'input': 'relative inverse depth from the aligned metric depth (1/z), min-max normalised per '
                         'image to uint8, resized to 320x320, scaled to [0, 1]'}


def load_depth_tokenizer(path: Union[str, os.PathLike]) -> DepthTokenizer:
    """The tokenizer in ``path``: a file written by :func:`train_depth_tokenizer` (its sizes are in it) or
    the released ``vae-final.pt``. :class:`DepthCheckpointError` when it is neither."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DepthCheckpointError(f'depth tokenizer not found: {path}')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DepthCheckpointError(f'{path}: cannot read the checkpoint: {exc}') from exc
    if isinstance(obj, dict) and isinstance(obj.get(CONFIG_KEY), dict):
        cfg = dict(obj[CONFIG_KEY])
        config = TokenizerConfig(**{k: cfg[k] for k in TokenizerConfig.__dataclass_fields__ if k in cfg})
        model = DepthEncoder(**config.sizes(), image_size=config.image_size)
        enc = depth_encoder_from_state_dict(obj, source=path, model=model)
        return DepthTokenizer(enc, config, source=path)
    return DepthTokenizer(load_depth_encoder(path), RELEASED, source=path)


def _ema_update(book: torch.Tensor, cluster: torch.Tensor, embed_sum: torch.Tensor, flat: torch.Tensor,
                idx: torch.Tensor, decay: float, eps: float = 1e-5) -> None:
    onehot = F.one_hot(idx, book.shape[0]).to(flat.dtype)
    cluster.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
    embed_sum.mul_(decay).add_(onehot.t() @ flat, alpha=1 - decay)
    n = cluster.sum()
    smoothed = (cluster + eps) / (n + book.shape[0] * eps) * n
    book.copy_(embed_sum / smoothed.unsqueeze(1))


def train_depth_tokenizer(images_u8: np.ndarray, *, steps: int = 300, batch: int = 8, lr: float = 1e-3,
                          seed: int = 0, config: TokenizerConfig = TokenizerConfig(), decay: float = 0.9,
                          commitment: float = 0.25, restart_below: float = 0.05,
                          progress: Optional[Callable[[int, float], None]] = None,
                          threads: Optional[int] = None) -> tuple[DepthTokenizer, dict]:
    """Train a small VQ-VAE (see the module docstring) on (M, 320, 320) uint8 relative-depth images.

    Returns the tokenizer and the checkpoint dict (save it with ``torch.save``). Deterministic for a seed
    and thread count. ``progress(step, loss)`` is called every step.
    """
    imgs = np.asarray(images_u8)
    if imgs.ndim != 3 or imgs.shape[1] != imgs.shape[2] or len(imgs) == 0:
        raise ValueError(f'expected (M >= 1, S, S) images, got {imgs.shape}')
    imgs = _to_size(imgs, config.image_size)
    if threads:
        torch.set_num_threads(int(threads))
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    enc = DepthEncoder(**config.sizes(), image_size=config.image_size)
    dec = DepthDecoder(**config.sizes())
    enc.train()
    dec.train()
    data = torch.from_numpy(imgs.astype(np.float32) / 255.0).unsqueeze(1)
    params = [p for n, p in enc.named_parameters()] + [p for n, p in dec.named_parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    book = enc._vq_vae._embedding
    k = book.shape[0]
    with torch.no_grad():  # codebook from encoder outputs of a first batch (every code starts in use)
        sel = torch.randint(len(data), (min(len(data), 64),), generator=gen)
        flat = enc(data[sel]).permute(0, 2, 3, 1).reshape(-1, book.shape[1])
        book.copy_(flat[torch.randint(len(flat), (k,), generator=gen)] + 1e-3 * torch.randn(k, book.shape[1], generator=gen))
    cluster = torch.ones(k)
    embed_sum = book.clone()
    t0 = time.perf_counter()
    loss_value = float('nan')
    usage = torch.zeros(k)
    for step in range(int(steps)):
        sel = torch.randint(len(data), (min(batch, len(data)),), generator=gen)
        x = data[sel]
        z = enc(x)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        with torch.no_grad():
            idx = enc.quantize(z).reshape(-1)
        q = book[idx]
        zq = flat + (q - flat).detach()
        zq = zq.view(z.shape[0], z.shape[2], z.shape[3], z.shape[1]).permute(0, 3, 1, 2)
        out = dec.decoder(zq)
        recon = F.mse_loss(out, x)
        loss = recon + commitment * F.mse_loss(flat, q.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            _ema_update(book, cluster, embed_sum, flat.detach(), idx, decay)
            usage = 0.9 * usage + 0.1 * torch.bincount(idx, minlength=k).float() / len(idx) * k
            dead = torch.nonzero(usage < restart_below).reshape(-1)
            if len(dead) and step < int(steps) * 0.8:
                pick = flat.detach()[torch.randint(len(flat), (len(dead),), generator=gen)]
                book[dead] = pick
                embed_sum[dead] = pick
                cluster[dead] = 1.0
                usage[dead] = 1.0
        loss_value = float(recon.detach())
        if progress is not None:
            progress(step, loss_value)
    enc.eval()
    dec.eval()
    with torch.no_grad():
        dec._vq_vae._embedding.copy_(book)
    codes = DepthTokenizer(enc, config).encode(imgs[:min(len(imgs), 256)])
    used = int(len(np.unique(codes)))
    training = {'steps': int(steps), 'batch': int(batch), 'lr': lr, 'seed': int(seed), 'images': int(len(imgs)),
                'final_recon_mse': loss_value, 'codes_used': used, 'seconds': round(time.perf_counter() - t0, 2)}
    config = TokenizerConfig(**{**asdict(config), 'kind': 'trained', 'training': training})
    state = {f'encoder.{k2}': v for k2, v in enc.encoder.state_dict().items()}
    state.update({f'decoder.{k2}': v for k2, v in dec.decoder.state_dict().items()})
    state['_vq_vae._embedding'] = book.detach().clone()
    checkpoint = {'weights': state, CONFIG_KEY: asdict(config)}
    return DepthTokenizer(enc, config), checkpoint


def save_checkpoint(checkpoint: dict, path: Union[str, os.PathLike]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path
