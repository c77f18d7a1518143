"""The native depth VQ-VAE encoder: the released state-dict layout, nearest-code quantisation, and the
trained tokenizer's save / load round trip."""

import numpy as np
import torch

from molmoact_ros.reasoning.depth import (DepthEncoder, depth_encoder_from_state_dict, relative_depth_image)
from molmoact_ros.training.depth_tokenizer import load_depth_tokenizer, save_checkpoint, train_depth_tokenizer


def test_released_encoder_layout_and_codes():
    enc = DepthEncoder()
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert shapes['encoder.0.weight'] == (16, 1, 4, 4)
    assert shapes['encoder.8.weight'] == (256, 128, 4, 4)
    assert shapes['encoder.10.net.0.weight'] == (256, 256, 3, 3) and 'encoder.11.net.4.weight' in shapes
    assert shapes['encoder.12.weight'] == (512, 256, 1, 1)
    assert shapes['_vq_vae._embedding'] == (128, 512)
    torch.manual_seed(0)
    sd = {k: torch.randn(v.shape) * 0.05 for k, v in enc.state_dict().items()}
    sd['decoder.0.weight'] = torch.zeros(1)  # decoder weights are ignored
    loaded = depth_encoder_from_state_dict({'weights': {'module.' + k: v for k, v in sd.items()}})
    depth = np.fromfunction(lambda r, c: 0.5 + 0.002 * r + 0.001 * c, (240, 320))
    img = relative_depth_image(depth)
    assert img.shape == (320, 320) and img.max() == 1.0 and img.min() == 0.0
    codes = loaded.encode(img)
    assert codes.shape == (100,) and codes.max() < 128
    with torch.no_grad():  # brute force: nearest codebook row of each latent
        z = loaded(torch.from_numpy(img)[None, None]).permute(0, 2, 3, 1).reshape(-1, 512)
        want = torch.cdist(z, sd['_vq_vae._embedding']).argmin(1).numpy()
    np.testing.assert_array_equal(codes, want)


def test_trained_tokenizer_saves_and_loads(tmp_path):
    rng = np.random.default_rng(0)
    imgs = (rng.random((6, 320, 320)) * 255).astype(np.uint8)
    tok, ckpt = train_depth_tokenizer(imgs, steps=2, batch=2)
    path = save_checkpoint(ckpt, tmp_path / 'tok.pt')
    again = load_depth_tokenizer(path)
    assert again.config.kind == 'trained' and again.config.num_tokens == 128
    np.testing.assert_array_equal(tok.encode(imgs), again.encode(imgs))
    assert tok.encode(imgs).shape == (6, 100)
