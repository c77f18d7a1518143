"""Native MolmoAct image preprocessing: shapes, token layout, pooling indices, resize arithmetic, config.

Expected numbers are worked out by hand from the reference algorithm (allenai/molmoact,
olmo/hf_model/molmoact/image_processing_molmoact.py): 378 px crops of 27x27 patches of 14 px, 4+4 overlap
patches (crop window 19 patches = 266 px, margins 112 px), 2x2 pooling. Parity with the reference's own
arrays is checked out of band (the reference needs torchvision, which this project does not install).
"""

import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from molmoact_ros.model.image_processing import (
    EXTRA_TOKENS, IM_COL_TOKEN, IM_END_TOKEN, IM_START_TOKEN, IMAGE_PATCH_TOKEN, PREPROCESSOR_CONFIG_NAME,
    ImageTokenIds, MolmoActImageProcessor, MolmoActImageProcessorConfig, collate, normalization_table,
    overlap_patch_grid, patchify, pool_patch_grid, resize_bilinear_uint8, select_tiling)

PATCHES = 729  # 27 x 27 patches per crop
IDS = ImageTokenIds(start=152064, end=152065, patch=152066, col=152067)

# The file AllenAI's conversion script writes (save_pretrained of the reference processor).
RELEASED_CONFIG = {
    'auto_map': {'AutoImageProcessor': 'image_processing_molmoact.MolmoActImageProcessor',
                 'AutoProcessor': 'processing_molmoact.MolmoActProcessor'},
    'base_image_input_size': [378, 378],
    'crop_mode': 'overlap-and-resize-c2',
    'do_convert_rgb': True,
    'do_pad': True,
    'image_patch_size': 14,
    'image_pooling_h': 2,
    'image_pooling_w': 2,
    'image_processor_type': 'MolmoActImageProcessor',
    'max_crops': 8,
    'max_multi_image_crops': 4,
    'normalize_mode': 'siglip',
    'overlap_margins': [4, 4],
    'pad_value': 0.0,
    'processor_class': 'MolmoActProcessor',
    'resize_mode': 'siglip',
}


@pytest.fixture(scope='module')
def proc():
    return MolmoActImageProcessor()


def noise(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(h, w, 3), dtype=np.uint8)


@contextmanager
def torch_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def hires_side(tiles):
    """Patches along one side of the tiled image: tiles * 19 + 8."""
    return tiles * 19 + 8


def block_tokens(rows, cols):
    return 2 + rows * (cols + 1)


# --------------------------------------------------------------------------------------------------
# Shapes and token counts
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('h, w, tiling, hires_grid, n_tokens', [
    (256, 256, (1, 1), (14, 14), 424),     # small image: 1x1 tiling
    (480, 640, (2, 2), (23, 23), 766),     # VGA: (368, 528) fits 2x2 windows of 266 px
    (720, 1280, (2, 4), (23, 42), 1203),   # 720p: every tiling <= 8 downscales, 2x4 the least
    (1000, 300, (4, 1), (42, 14), 844),    # tall: (888, 188) -> 4x1 (4x2 ties, smaller area wins)
    (32, 32, (1, 1), (14, 14), 424),       # tiny: smaller than the margins
    (378, 378, (1, 1), (14, 14), 424),
    (379, 379, (2, 2), (23, 23), 766),     # one pixel over a single window
])
def test_single_image_shapes_and_token_counts(proc, h, w, tiling, hires_grid, n_tokens):
    out = proc.preprocess(noise(h, w))
    n_crops = 1 + tiling[0] * tiling[1]
    assert out.images.shape == (n_crops, PATCHES, 588) and out.images.dtype == np.float32
    assert out.image_masks.shape == (n_crops, PATCHES) and out.image_masks.dtype == np.float32
    assert np.all(out.image_masks == 1.0)  # the siglip resize never pads
    (layout,) = out.layouts
    assert layout.tiling == tiling and layout.n_crops == n_crops and layout.label is None
    assert layout.grids == ((14, 14), hires_grid)
    assert out.image_grids.tolist() == [[14, 14], list(hires_grid)] and out.image_grids.dtype == np.int64
    assert out.num_image_tokens() == n_tokens == len(out.token_strings())
    n_pooled = 14 * 14 + hires_grid[0] * hires_grid[1]
    assert out.pooled_patches_idx.shape == (n_pooled, 4) and out.pooled_patches_idx.dtype == np.int64
    assert out.num_pooled_tokens == n_pooled == layout.num_pooled_tokens
    assert not out.multi_image
    assert proc.tiling_for(h, w) == tiling


def test_two_views_primary_and_wrist(proc):
    primary, wrist = noise(480, 640, 1), noise(224, 224, 2)
    out = proc.preprocess([primary, wrist])
    assert out.multi_image
    assert [lay.label for lay in out.layouts] == ['Image 1', 'Image 2']
    assert [lay.tiling for lay in out.layouts] == [(2, 2), (1, 1)]
    assert out.images.shape == (5 + 2, PATCHES, 588)
    assert out.image_grids.tolist() == [[14, 14], [23, 23], [14, 14], [14, 14]]
    assert out.num_image_tokens() == 766 + 424
    # each view's crops are the same as processing it alone (multi-image mode changes only the crop budget)
    alone = proc.preprocess([wrist])
    np.testing.assert_array_equal(out.images[5:], alone.images)
    # the prompt prefix: label text straight before each image's tokens, nothing between images
    prefix = out.prompt_prefix()
    assert prefix.startswith('Image 1' + IM_START_TOKEN + IMAGE_PATCH_TOKEN)
    assert prefix.count(IM_END_TOKEN + 'Image 2' + IM_START_TOKEN) == 1
    assert prefix.endswith(IM_COL_TOKEN + IM_END_TOKEN)


def test_multi_image_mode_uses_the_multi_image_crop_budget(proc):
    frame = noise(720, 1280, 3)
    single = proc.preprocess(frame)
    multi = proc.preprocess([frame])  # a list means multi-image mode, as the reference's images=[imgs]
    assert single.layouts[0].tiling == (2, 4) and single.layouts[0].label is None
    # at most 4 crops: 2x2 (scale min(532/608, 532/1168)) beats 1x4 (min(266/608, 1064/1168))
    assert multi.layouts[0].tiling == (2, 2) and multi.layouts[0].label == 'Image 1'
    assert multi.num_image_tokens() == 766
    forced = proc.preprocess([frame], multi_image=False)
    np.testing.assert_array_equal(forced.images, single.images)
    with pytest.raises(ValueError, match='one image'):
        proc.preprocess([frame, frame], multi_image=False)
    with pytest.raises(ValueError, match='no images'):
        proc.preprocess([])


# --------------------------------------------------------------------------------------------------
# Token layout
# --------------------------------------------------------------------------------------------------

def test_token_layout_rows_and_ids(proc):
    out = proc.preprocess(noise(480, 640))
    tokens = out.token_strings()
    assert tokens[0] == IM_START_TOKEN and tokens[-1] == IM_END_TOKEN
    # two blocks (global view, then crops), each <im_start> rows <im_end>
    first_end = tokens.index(IM_END_TOKEN)
    assert first_end == block_tokens(14, 14) - 1 and tokens[first_end + 1] == IM_START_TOKEN
    for block, (rows, cols) in zip((tokens[:first_end + 1], tokens[first_end + 1:]), ((14, 14), (23, 23))):
        body = block[1:-1]
        assert len(body) == rows * (cols + 1)
        for r in range(rows):
            row = body[r * (cols + 1):(r + 1) * (cols + 1)]
            assert row == [IMAGE_PATCH_TOKEN] * cols + [IM_COL_TOKEN]
    assert tokens.count(IMAGE_PATCH_TOKEN) == out.num_pooled_tokens
    ids = np.concatenate([s for s in out.prompt_segments(IDS) if isinstance(s, np.ndarray)])
    assert ids.dtype == np.int64 and len(ids) == 766
    lookup = {IM_START_TOKEN: IDS.start, IM_END_TOKEN: IDS.end, IMAGE_PATCH_TOKEN: IDS.patch, IM_COL_TOKEN: IDS.col}
    assert ids.tolist() == [lookup[t] for t in tokens]
    assert out.prompt_prefix() == ''.join(tokens)  # single image: no label
    # without column tokens a row is only patches
    no_col = out.layouts[0].token_strings(use_col_tokens=False)
    assert IM_COL_TOKEN not in no_col and len(no_col) == out.num_image_tokens(use_col_tokens=False) == 766 - 14 - 23


def test_prompt_segments_interleave_labels_and_ids(proc):
    out = proc.preprocess([noise(64, 64), noise(100, 50)])
    segments = out.prompt_segments(IDS)
    assert [type(s) for s in segments] == [str, np.ndarray, str, np.ndarray]
    assert segments[0] == 'Image 1' and segments[2] == 'Image 2'
    assert segments[1][0] == IDS.start and segments[3][-1] == IDS.end


def test_token_ids_from_tokenizer():
    class FakeTokenizer:
        unk_token_id = 0
        vocab = {tok: 152064 + i for i, tok in enumerate(EXTRA_TOKENS)}

        def convert_tokens_to_ids(self, token):
            return self.vocab.get(token, 0)

    assert ImageTokenIds.from_tokenizer(FakeTokenizer()) == IDS  # start, end, patch, col appended in order
    broken = FakeTokenizer()
    broken.vocab = {IM_START_TOKEN: 5}
    with pytest.raises(ValueError, match='no id'):
        ImageTokenIds.from_tokenizer(broken)


# --------------------------------------------------------------------------------------------------
# Pooling indices
# --------------------------------------------------------------------------------------------------

def test_pooling_indices_global_view_and_padding(proc):
    out = proc.preprocess(noise(256, 256))
    idx = out.pooled_patches_idx
    assert idx.min() == -1 and idx.max() < out.images.shape[0] * PATCHES
    glob = idx[:196].reshape(14, 14, 4)
    # token (a, b) pools patches (2a, 2b), (2a, 2b+1), (2a+1, 2b), (2a+1, 2b+1) of the 27x27 grid
    assert glob[0, 0].tolist() == [0, 1, 27, 28]
    assert glob[3, 5].tolist() == [6 * 27 + 10, 6 * 27 + 11, 7 * 27 + 10, 7 * 27 + 11]
    # 27 is odd: the padding row/column goes after the grid (floor half before, rest after)
    assert glob[13, 0].tolist() == [26 * 27, 26 * 27 + 1, -1, -1]
    assert glob[0, 13].tolist() == [26, -1, 53, -1]
    assert glob[13, 13].tolist() == [26 * 27 + 26, -1, -1, -1]
    assert (glob == -1).sum() == 14 * 2 + 14 * 2 - 1 == 55
    assert sorted(glob[glob >= 0].tolist()) == list(range(PATCHES))
    # 1x1 tiling: the crop (patches 729..1457) is pooled the same way
    crop = idx[196:].reshape(14, 14, 4)
    np.testing.assert_array_equal(np.where(crop >= 0, crop - PATCHES, -1), glob)


def test_pooling_indices_skip_overlap_margins(proc):
    out = proc.preprocess(noise(480, 640))  # 2x2 crops, 46x46 patch grid: no padding
    hires = out.pooled_patches_idx[196:]
    assert (hires >= 0).all() and len(hires) == 23 * 23
    used = hires.ravel() - PATCHES
    assert len(np.unique(used)) == used.size == 46 * 46  # every patch of the tiled image exactly once
    crop, local = np.divmod(used, PATCHES)
    row, col = np.divmod(local, 27)
    # crop 0 (top left) keeps local rows/cols 0..22, crop 3 (bottom right) 4..26
    assert row[crop == 0].max() == 22 and col[crop == 0].max() == 22
    assert row[crop == 3].min() == 4 and col[crop == 3].min() == 4 and row[crop == 3].max() == 26
    # crop 1 (top right): rows 0..22, cols 4..26
    assert (row[crop == 1].min(), row[crop == 1].max(), col[crop == 1].min(), col[crop == 1].max()) == (0, 22, 4, 26)
    # first pooled token of the crops block: top-left 2x2 patches of crop 0
    assert hires[0].tolist() == [729, 730, 729 + 27, 729 + 28]


def test_overlap_patch_grid_interior_crops():
    grid = overlap_patch_grid((3, 1), crop_patches=27, margins=(4, 4))
    assert grid.shape == (hires_side(3), hires_side(1))
    crop_of_row = grid[:, 0] // PATCHES
    # crop 0 owns rows 0..22, the middle crop rows 23..41 (its local 4..22), the last 42..64 (local 4..26)
    assert crop_of_row.tolist() == [0] * 23 + [1] * 19 + [2] * 23
    assert (grid[23, 0] % PATCHES) // 27 == 4 and (grid[41, 0] % PATCHES) // 27 == 22
    assert (grid[-1, 0] % PATCHES) // 27 == 26


def test_multi_image_indices_are_offset_like_the_reference(proc):
    out = proc.preprocess([noise(480, 640, 1), noise(224, 224, 2)])
    first = 196 + 23 * 23  # pooled tokens of image 1 (global view + 2x2 crops)
    idx = out.pooled_patches_idx
    offset = 5 * PATCHES
    np.testing.assert_array_equal(idx[:first], proc.preprocess([noise(480, 640, 1)]).pooled_patches_idx)
    second = idx[first:]
    # image 2's patches are numbered after image 1's five crops ...
    assert second.max() == offset + 2 * PATCHES - 1  # row 26, col 26 of its single crop
    assert second[0].tolist() == [offset, offset + 1, offset + 27, offset + 28]
    # ... and, as in the reference (and AllenAI's training code), the offset is added to the -1 padding too
    alone = proc.preprocess(noise(224, 224, 2)).pooled_patches_idx
    np.testing.assert_array_equal(second, alone + offset)
    assert (second == offset - 1).sum() == 2 * 55 and (second == -1).sum() == 0
    assert (idx[:first] == -1).sum() == 55  # image 1: only its global view (27 patches) is padded


# --------------------------------------------------------------------------------------------------
# Pixels: normalization, patch layout, resize arithmetic
# --------------------------------------------------------------------------------------------------

def test_normalization_range_and_levels(proc):
    out = proc.preprocess(noise(300, 500))
    assert out.images.min() >= -1.0 and out.images.max() <= 1.0
    levels = normalization_table('siglip')[:, 0]
    assert np.isin(out.images, levels).all()
    assert levels[0] == -1.0 and levels[255] == 1.0 and np.all(np.diff(levels) > 0)
    np.testing.assert_allclose(levels, np.arange(256) / 255.0 * 2 - 1, atol=2e-7)
    black = proc.preprocess(np.zeros((100, 700, 3), np.uint8)).images
    white = proc.preprocess(np.full((100, 700, 3), 255, np.uint8)).images
    assert np.all(black == -1.0) and np.all(white == 1.0)


def test_openai_normalization_table():
    table = normalization_table('openai')
    expected = (np.arange(256)[:, None] / 255.0 - [0.48145466, 0.4578275, 0.40821073]) / [
        0.26862954, 0.26130258, 0.27577711]
    np.testing.assert_allclose(table, expected, rtol=0, atol=1e-6)


def test_global_view_of_a_378_image_is_the_image_itself(proc):
    yy, xx = np.mgrid[0:378, 0:378]
    img = np.stack([yy % 256, xx % 256, (yy // 2 + xx) % 256], -1).astype(np.uint8)
    out = proc.preprocess(img)
    levels = normalization_table('siglip')[:, 0]
    # patch 27*3 + 5 covers rows 42..55, cols 70..83; values flattened (row, col, channel)
    patch = out.images[0, 27 * 3 + 5].reshape(14, 14, 3)
    np.testing.assert_array_equal(patch, levels[img[42:56, 70:84]])
    # and the single crop of a 1x1 tiling is the same 378x378 image
    np.testing.assert_array_equal(out.images[1], out.images[0])


def test_crops_overlap_by_the_margins(proc):
    out = proc.preprocess(noise(480, 640))
    crops = out.images[1:].reshape(4, 27, 27, 14, 14, 3).transpose(0, 1, 3, 2, 4, 5).reshape(4, 378, 378, 3)
    # windows start 266 px apart, so neighbours share 112 px
    np.testing.assert_array_equal(crops[0][:, 266:], crops[1][:, :112])
    np.testing.assert_array_equal(crops[0][266:, :], crops[2][:112, :])
    np.testing.assert_array_equal(crops[1][266:, :], crops[3][:112, :])
    assert not np.array_equal(crops[0][:, 265:377], crops[1][:, :112])  # and not by a pixel more


@pytest.mark.parametrize('threads', [1, 2])
def test_resize_by_hand(threads):
    # torch picks a different bilinear kernel for one thread than for several (as the reference does);
    # on values whose interpolation is exact both must give these numbers.
    with torch_threads(threads):
        row = np.array([0, 100, 40], np.uint8)[None, :, None].repeat(3, axis=2)
        up = resize_bilinear_uint8(row, 1, 6)
        # half-pixel centres: x_src = (x + 0.5) / 2 - 0.5 = -0.25 (clamped), 0.25, 0.75, 1.25, 1.75, 2.25
        assert up[0, :, 0].tolist() == [0, 25, 75, 85, 55, 40]
        # exact .5 results round half to even: 0.5 -> 0, 1.5 -> 2, 35.5 -> 36
        assert resize_bilinear_uint8(np.array([[[0] * 3, [2] * 3]], np.uint8), 1, 4)[0, :, 0].tolist() == [0, 0, 2, 2]
        down = resize_bilinear_uint8(np.array([[10, 20, 30, 41]], np.uint8)[:, :, None].repeat(3, 2), 1, 2)
        assert down[0, :, 1].tolist() == [15, 36]
        # 2-D: bilinear in both axes
        square = np.array([[0, 80], [40, 120]], np.uint8)[:, :, None].repeat(3, 2)
        out = resize_bilinear_uint8(square, 4, 4)[:, :, 2]
        assert out.tolist() == [[0, 20, 60, 80], [10, 30, 70, 90], [30, 50, 90, 110], [40, 60, 100, 120]]
        constant = np.full((37, 91, 3), 77, np.uint8)
        for size in ((378, 378), (644, 1176), (5, 3)):
            assert np.all(resize_bilinear_uint8(constant, *size) == 77)


def test_resize_keeps_same_size_input_and_accepts_views():
    img = noise(50, 60)
    assert resize_bilinear_uint8(img, 50, 60) is img  # torchvision returns the input untouched
    flipped = img[::-1, ::2]  # negative and non-unit strides
    np.testing.assert_array_equal(resize_bilinear_uint8(flipped, 20, 20),
                                  resize_bilinear_uint8(np.ascontiguousarray(flipped), 20, 20))


def test_determinism_and_input_types(proc):
    img = noise(333, 517, 4)
    a, b = proc.preprocess(img), proc.preprocess(img.copy())
    for key in ('images', 'image_masks', 'pooled_patches_idx', 'image_grids'):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert not getattr(a, key).flags.writeable
    from_pil = proc.preprocess(Image.fromarray(img))
    np.testing.assert_array_equal(from_pil.images, a.images)
    readonly = img.copy()
    readonly.setflags(write=False)
    np.testing.assert_array_equal(proc.preprocess(readonly).images, a.images)
    np.testing.assert_array_equal(img, noise(333, 517, 4))  # the input is not modified
    # non-RGB PIL images are converted with convert('RGB'): alpha is dropped
    rgba = Image.fromarray(np.dstack([img, np.full(img.shape[:2], 7, np.uint8)]), 'RGBA')
    np.testing.assert_array_equal(proc.preprocess(rgba).images, a.images)
    with pytest.raises(ValueError, match='not RGB'):
        MolmoActImageProcessor(do_convert_rgb=False).preprocess(rgba)


@pytest.mark.parametrize('bad, error', [
    (np.zeros((10, 10), np.uint8), ValueError),
    (np.zeros((10, 10, 4), np.uint8), ValueError),
    (np.zeros((10, 10, 3), np.float32), TypeError),
    (np.zeros((0, 10, 3), np.uint8), ValueError),
    ([[1, 2, 3]], TypeError),
])
def test_rejects_bad_images(proc, bad, error):
    with pytest.raises(error):
        proc.preprocess(bad)


# --------------------------------------------------------------------------------------------------
# Tiling selection and helpers
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('h, w, max_crops, expected', [
    (144, 144, 8, (1, 1)),
    (368, 528, 8, (2, 2)),
    (608, 1168, 8, (2, 4)),
    (608, 1168, 4, (2, 2)),
    (888, 188, 8, (4, 1)),
    (-80, -80, 8, (1, 1)),    # image smaller than the margins
    (0, 0, 8, (1, 1)),        # scales are inf: the first candidate
    (-62, 1168, 8, (1, 1)),   # negative height: every scale < 0, ties go to the first (smallest)
    (266, 266, 8, (1, 1)),    # exact fit
    (267, 266, 8, (2, 1)),    # one pixel more needs two rows (2x1 listed before 1x2)
    (5000, 5000, 8, (2, 2)),  # all downscale: 2x2 keeps the largest scale (532/5000)
])
def test_select_tiling(h, w, max_crops, expected):
    assert select_tiling(h, w, 266, max_crops) == expected


def test_pool_patch_grid_and_patchify():
    grid = np.arange(15).reshape(3, 5)
    pooled = pool_patch_grid(grid, 2, 2)
    assert pooled.shape == (2, 3, 4)
    assert pooled[0, 0].tolist() == [0, 1, 5, 6] and pooled[1, 2].tolist() == [14, -1, -1, -1]
    views = np.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    patches = patchify(views, 2)
    assert patches.shape == (2, 6, 12)
    assert patches[1, 4].tolist() == views[1, 2:4, 2:4].ravel().tolist()


def test_collate_pads_like_the_reference(proc):
    small, large = proc.preprocess(noise(256, 256)), proc.preprocess(noise(480, 640))
    batch = collate([small, large])
    assert batch['images'].shape == (2, 5, PATCHES, 588)
    assert np.all(batch['images'][0, 2:] == -1) and np.all(batch['image_masks'][0, 2:] == -1)
    assert batch['pooled_patches_idx'].shape == (2, 725, 4) and np.all(batch['pooled_patches_idx'][0, 392:] == -1)
    np.testing.assert_array_equal(batch['images'][1], large.images)
    assert batch['image_grids'].tolist() == [[[14, 14], [14, 14]], [[14, 14], [23, 23]]]
    with pytest.raises(ValueError):
        collate([])


def test_other_crop_modes():
    resize_only = MolmoActImageProcessor(crop_mode='resize').preprocess(noise(480, 640))
    assert resize_only.images.shape == (1, PATCHES, 588) and resize_only.num_image_tokens() == 212
    assert resize_only.layouts[0].tiling is None
    crops_only = MolmoActImageProcessor(crop_mode='overlap-and-resize').preprocess(noise(480, 640))
    assert crops_only.images.shape == (4, PATCHES, 588) and crops_only.image_grids.tolist() == [[23, 23]]
    assert crops_only.pooled_patches_idx.min() == 0 and crops_only.num_image_tokens() == 554


# --------------------------------------------------------------------------------------------------
# Property test over random sizes
# --------------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(h=st.integers(4, 700), w=st.integers(4, 700), multi=st.booleans())
def test_invariants_over_random_sizes(proc, h, w, multi):
    img = np.random.RandomState(h * 1000 + w).randint(0, 256, size=(h, w, 3), dtype=np.uint8)
    out = proc.preprocess([img] if multi else img)
    (layout,) = out.layouts
    rows, cols = layout.tiling
    assert rows * cols <= (4 if multi else 8)
    assert out.images.shape == (1 + rows * cols, PATCHES, 588)
    pr, pc = hires_side(rows), hires_side(cols)
    assert layout.grids == ((14, 14), ((pr + 1) // 2, (pc + 1) // 2))
    assert out.num_pooled_tokens == out.pooled_patches_idx.shape[0] == sum(a * b for a, b in layout.grids)
    assert out.num_image_tokens() == sum(block_tokens(a, b) for a, b in layout.grids)
    assert out.token_strings().count(IMAGE_PATCH_TOKEN) == out.num_pooled_tokens
    idx = out.pooled_patches_idx
    valid = idx[idx >= 0]
    assert idx.min() >= -1 and valid.max() < out.images.shape[0] * PATCHES
    assert len(np.unique(valid)) == valid.size == PATCHES + pr * pc  # each used patch once
    n_pad = (28 * 28 - PATCHES) + (2 * ((pr + 1) // 2) * 2 * ((pc + 1) // 2) - pr * pc)
    assert (idx == -1).sum() == n_pad
    assert out.images.min() >= -1.0 and out.images.max() <= 1.0
    assert (layout.label == 'Image 1') == multi


# --------------------------------------------------------------------------------------------------
# Configuration json
# --------------------------------------------------------------------------------------------------

def test_released_config_round_trips(tmp_path):
    path = tmp_path / PREPROCESSOR_CONFIG_NAME
    path.write_text(json.dumps(RELEASED_CONFIG, indent=2))
    proc = MolmoActImageProcessor.from_pretrained(tmp_path)
    cfg = proc.config
    assert cfg == MolmoActImageProcessorConfig(extra={k: RELEASED_CONFIG[k] for k in (
        'auto_map', 'image_processor_type', 'processor_class')})
    assert cfg.base_image_input_size == (378, 378) and cfg.overlap_margins == (4, 4)
    assert (cfg.crop_window_pixels, cfg.margin_pixels, cfg.patches_per_crop, cfg.patch_dim) == (266, 112, 729, 588)
    assert proc.to_dict() == RELEASED_CONFIG
    saved = proc.save_pretrained(tmp_path / 'out')
    assert json.loads(saved.read_text()) == RELEASED_CONFIG
    assert MolmoActImageProcessor.from_pretrained(saved).config == cfg  # a json file path works too
    assert MolmoActImageProcessor.from_dict(RELEASED_CONFIG).to_dict() == RELEASED_CONFIG


def test_config_overrides_and_validation(tmp_path):
    proc = MolmoActImageProcessor(max_crops=12, overlap_margins=[3, 5])
    assert proc.config.max_crops == 12 and proc.config.overlap_margins == (3, 5)
    assert MolmoActImageProcessor.from_dict(proc.to_dict()).config == proc.config
    hash(proc.config)
    for bad in (dict(crop_mode='pad'), dict(resize_mode='metaclip'), dict(normalize_mode='imagenet'),
                dict(max_crops=0), dict(overlap_margins=[14, 14]), dict(base_image_input_size=[378, 336]),
                dict(base_image_input_size=[380, 380]), dict(overlap_margins='wide')):
        with pytest.raises(ValueError):
            MolmoActImageProcessorConfig.from_dict(bad)
    with pytest.raises(FileNotFoundError):
        MolmoActImageProcessor.from_pretrained(tmp_path / 'missing')


@settings(max_examples=25, deadline=None)
@given(max_crops=st.integers(1, 16), multi=st.integers(1, 16), lead=st.integers(0, 6), trail=st.integers(0, 6),
       pad=st.floats(-1, 1, allow_nan=False), extra=st.dictionaries(st.text(min_size=1, max_size=8).filter(
           lambda k: k not in MolmoActImageProcessorConfig.__dataclass_fields__), st.integers(), max_size=3))
def test_config_dict_round_trip_property(max_crops, multi, lead, trail, pad, extra):
    cfg = MolmoActImageProcessorConfig(max_crops=max_crops, max_multi_image_crops=multi,
                                       overlap_margins=(lead, trail), pad_value=pad, extra=extra)
    data = json.loads(cfg.to_json_string())
    assert MolmoActImageProcessorConfig.from_dict(data) == cfg
    assert {k: data[k] for k in extra} == extra
