"""Depth codes and the native depth VQ-VAE decoder (molmoact_ros.reasoning.depth).

The checkpoint used here is random, written with the key names, shapes and file layout of AllenAI's
released ``vae-final.pt``: ``{'weights': DistributedDataParallel.state_dict()}`` (keys prefixed ``module.``),
as Aurora-perception's ``save_model`` writes it and allenai/molmoact's loaders read it. The table below is
the state dict of the reference ``VQVAE`` (allenai/molmoact ``scripts/vqvae.py``) with the released config.
"""

import numpy as np
import pytest
import torch

from molmoact_ros.reasoning.depth import (CODEBOOK_KEY, DepthCheckpointError, DepthDecoder, codes_to_grid,
                                          depth_code_image, depth_decoder_from_state_dict, load_depth_decoder,
                                          to_uint8)


def _res(prefix):
    return [(f'{prefix}.net.0.weight', (256, 256, 3, 3)), (f'{prefix}.net.0.bias', (256,)),
            (f'{prefix}.net.2.weight', (256, 256, 3, 3)), (f'{prefix}.net.2.bias', (256,)),
            (f'{prefix}.net.4.weight', (256, 256, 1, 1)), (f'{prefix}.net.4.bias', (256,))]


def _conv(name, shape):
    out_channels = shape[1] if name.startswith('decoder.') and shape[-1] == 4 else shape[0]  # ConvT: (in, out)
    return [(f'{name}.weight', shape), (f'{name}.bias', (out_channels,))]


RELEASED_KEYS = (
    _conv('encoder.0', (16, 1, 4, 4)) + _conv('encoder.2', (32, 16, 4, 4)) + _conv('encoder.4', (64, 32, 4, 4))
    + _conv('encoder.6', (128, 64, 4, 4)) + _conv('encoder.8', (256, 128, 4, 4)) + _res('encoder.10')
    + _res('encoder.11') + _conv('encoder.12', (512, 256, 1, 1))
    + _conv('decoder.0', (256, 512, 1, 1)) + _res('decoder.2') + _res('decoder.3')
    + _conv('decoder.4', (256, 256, 4, 4)) + _conv('decoder.6', (256, 128, 4, 4))
    + _conv('decoder.8', (128, 64, 4, 4)) + _conv('decoder.10', (64, 32, 4, 4))
    + _conv('decoder.12', (32, 16, 4, 4)) + _conv('decoder.14', (1, 16, 1, 1))
    + [('_vq_vae._embedding', (128, 512)), ('_vq_vae._ema_cluster_size', (128,)),
       ('_vq_vae._ema_w', (128, 512))])
DECODER_KEYS = [k for k, _ in RELEASED_KEYS if k.startswith('decoder.') or k == CODEBOOK_KEY]


def random_released_state(seed=0):
    """He-scaled random weights (so the output depends on the codes), small random biases."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in RELEASED_KEYS:
        t = torch.randn(shape, generator=gen)
        if key.endswith('bias'):
            t *= 0.05
        elif key.endswith('weight'):
            transposed = key.startswith('decoder.') and shape[-1] == 4
            fan = shape[0] * 4 if transposed else int(np.prod(shape[1:]))
            t *= (2.0 / fan) ** 0.5
        elif key == '_vq_vae._ema_cluster_size':
            t = t.abs()
        state[key] = t
    return state


def released_file_layout(state):
    return {'weights': {'module.' + k: v for k, v in state.items()}}


@pytest.fixture(scope='module')
def state():
    return random_released_state()


@pytest.fixture(scope='module')
def ckpt_path(state, tmp_path_factory):
    path = tmp_path_factory.mktemp('vqvae') / 'vae-final.pt'
    torch.save(released_file_layout(state), path)
    return path


@pytest.fixture(scope='module')
def decoder(ckpt_path):
    return load_depth_decoder(ckpt_path)


def random_codes(seed):
    return np.random.default_rng(seed).integers(0, 128, 100).tolist()


# ---------------------------------------------------------------------------------------------------- codes

def test_codes_to_grid_is_row_major_uint8():
    codes = [i % 128 for i in range(100)]
    grid = codes_to_grid(codes)
    assert grid.shape == (10, 10) and grid.dtype == np.uint8
    assert grid[3, 7] == 37 and grid[9, 9] == 99
    for same in (np.array(codes, dtype=np.int16), torch.tensor(codes), np.array(codes).reshape(10, 10).tolist(),
                 (c for c in codes)):
        np.testing.assert_array_equal(codes_to_grid(same), grid)
    assert codes_to_grid([127] * 100).max() == 127


@pytest.mark.parametrize('codes, match', [
    ([0] * 99, 'exactly 100'), ([0] * 101, 'exactly 100'), ([], 'exactly 100'),
    ([[0] * 20] * 5, 'exactly 100'),
    ([0] * 99 + [128], r'0\.\.127.*#99 is 128'), ([-1] + [0] * 99, r'#0 is -1'),
    ([0.0] * 100, 'integers'), ([0.5] * 100, 'integers'), ([True] * 100, 'integers'),
    ('<DEPTH_1>' * 100, 'integers'), ([None] * 100, 'integers'),
])
def test_codes_to_grid_rejects_bad_codes(codes, match):
    with pytest.raises(ValueError, match=match):
        codes_to_grid(codes)


def test_depth_code_image():
    codes = random_codes(0)
    img = depth_code_image(codes)
    assert img.shape == (320, 320) and img.dtype == np.uint8
    grid = np.array(codes).reshape(10, 10)
    assert (img[::32, ::32] == grid * 2).all()
    assert (img[32 * 4:32 * 5, 32 * 6:32 * 7] == grid[4, 6] * 2).all()  # nearest-neighbour blocks
    assert depth_code_image([127] * 100, scale=4).shape == (40, 40)
    assert depth_code_image([127] * 100, scale=1).max() == 254
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match='scale'):
            depth_code_image(codes, scale=bad)
    with pytest.raises(ValueError, match='exactly 100'):
        depth_code_image([1, 2, 3])


def test_to_uint8_rounds_like_save_image():
    x = np.array([0.0, 1.0, 0.5, 1.5 / 255, 1.49 / 255, -0.2, 1.3], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(x), [0, 255, 128, 2, 1, 0, 255])
    assert DepthDecoder.to_uint8 is to_uint8


# -------------------------------------------------------------------------------------------------- decoder

def test_decoder_state_dict_matches_released_names_and_shapes():
    assert len(DECODER_KEYS) == 27 and len(RELEASED_KEYS) == 53
    expected = {k: shape for k, shape in RELEASED_KEYS if k in DECODER_KEYS}
    got = {k: tuple(v.shape) for k, v in DepthDecoder().state_dict().items()}
    assert got == expected


def test_decode_released_layout(decoder):
    assert isinstance(decoder, DepthDecoder) and not decoder.training
    depth = decoder.decode(random_codes(1))
    assert depth.shape == (320, 320) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() == 0.0 and depth.max() == 1.0
    np.testing.assert_array_equal(decoder.decode(random_codes(1)), depth)  # deterministic
    other = decoder.decode(random_codes(2))
    assert np.abs(other - depth).mean() > 1e-3
    raw = decoder.decode_raw(random_codes(1))
    assert raw.shape == (320, 320) and raw.max() > raw.min()
    np.testing.assert_allclose((raw - raw.min()) / (raw.max() - raw.min()), depth, atol=1e-6)
    img = to_uint8(depth)
    assert img.shape == (320, 320) and img.dtype == np.uint8 and img.min() == 0 and img.max() == 255


def test_decode_rejects_bad_codes(decoder):
    with pytest.raises(ValueError, match='exactly 100'):
        decoder.decode([1] * 98)
    with pytest.raises(ValueError, match=r'0\.\.127'):
        decoder.decode([128] * 100)


def test_codebook_lookup_uses_the_coded_rows(state):
    marked = dict(state)
    table = torch.arange(128, dtype=torch.float32)[:, None] * torch.ones(1, 512)
    table[:, 0] = -table[:, 0]  # not just a constant per row: column order matters too
    marked['_vq_vae._embedding'] = table
    model = depth_decoder_from_state_dict(released_file_layout(marked))
    seen = []
    handle = model.decoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        codes = random_codes(3)
        model.decode(codes)
    finally:
        handle.remove()
    (x,) = seen
    assert x.shape == (1, 512, 10, 10)
    grid = torch.tensor(codes, dtype=torch.float32).view(10, 10)
    torch.testing.assert_close(x[0, 1:], grid.expand(511, 10, 10), rtol=0, atol=0)
    torch.testing.assert_close(x[0, 0], -grid, rtol=0, atol=0)
    torch.testing.assert_close(model.embed(torch.tensor(codes).view(1, 10, 10)), x, rtol=0, atol=0)


def test_loader_accepts_other_layouts(state, decoder):
    codes = random_codes(4)
    want = decoder.decode_raw(codes)
    decoder_only = {k: v for k, v in state.items() if k in DECODER_KEYS}
    for obj in (state, {'module.' + k: v for k, v in state.items()}, {'weights': decoder_only},
                {'state_dict': decoder_only}):
        np.testing.assert_array_equal(depth_decoder_from_state_dict(obj).decode_raw(codes), want)


def test_missing_decoder_key_is_named(state, tmp_path):
    broken = dict(state)
    del broken['decoder.6.weight']
    path = tmp_path / 'broken.pt'
    torch.save(released_file_layout(broken), path)
    with pytest.raises(DepthCheckpointError, match=r'Missing keys \(1\): decoder\.6\.weight\.'):
        load_depth_decoder(path)
    no_codebook = {k: v for k, v in state.items() if k != CODEBOOK_KEY}
    with pytest.raises(DepthCheckpointError, match=r'_vq_vae\._embedding'):
        depth_decoder_from_state_dict(released_file_layout(no_codebook))
    encoder_only = {k: v for k, v in state.items() if k.startswith('encoder.')}
    with pytest.raises(DepthCheckpointError, match=r'Missing keys \(27\).*No decoder keys at all.*encoder\.0'):
        depth_decoder_from_state_dict(encoder_only)


def test_mismatched_checkpoints_are_reported(state, tmp_path):
    extra = dict(state, **{'decoder.15.weight': torch.zeros(1)})
    with pytest.raises(DepthCheckpointError, match=r'Unexpected decoder keys \(1\): decoder\.15\.weight'):
        depth_decoder_from_state_dict(extra)
    small = dict(state, **{CODEBOOK_KEY: torch.zeros(256, 512)})
    with pytest.raises(DepthCheckpointError,
                       match=r'_vq_vae\._embedding has shape \(256, 512\), expected \(128, 512\)'):
        depth_decoder_from_state_dict(small)
    bad = dict(state, **{'decoder.14.bias': torch.tensor([float('nan')])})
    with pytest.raises(DepthCheckpointError, match='decoder.14.bias holds non-finite'):
        depth_decoder_from_state_dict(bad)
    with pytest.raises(DepthCheckpointError, match='expected a state dict'):
        depth_decoder_from_state_dict([1, 2])
    with pytest.raises(DepthCheckpointError, match='not found.*vae-final.pt'):
        load_depth_decoder(tmp_path / 'absent.pt')
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(DepthCheckpointError, match='cannot read'):
        load_depth_decoder(tmp_path / 'junk.pt')


def test_flat_output_decodes_to_zeros(state):
    zeros = {k: torch.zeros_like(v) for k, v in state.items()}
    depth = depth_decoder_from_state_dict(zeros).decode(random_codes(5))
    assert depth.shape == (320, 320) and np.isfinite(depth).all() and not depth.any()
