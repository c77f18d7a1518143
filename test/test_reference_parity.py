"""Parity with AllenAI's reference MolmoAct, re-checked on every run from a stored fixture.

test/fixtures/molmoact_reference_tiny/ holds a tiny random-weight checkpoint saved by the reference code
(allenai/molmoact @622ad08 under transformers 4.57.6) and the reference's outputs for four cases: its
preprocessing (as SHA-256 digests), image features, logits and 16 greedy tokens (see its README). The
native implementation must reproduce them: preprocessing bit for bit, logits within 1e-4 (they matched
to 0.0 when the fixture was made), identical argmax and generated tokens.
"""

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from molmoact_ros.model import MolmoActForActionReasoning
from molmoact_ros.model.image_processing import ImageTokenIds, MolmoActImageProcessor, collate

FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'molmoact_reference_tiny'
TINY_IDS = ImageTokenIds(start=512, end=513, patch=514, col=515)
BOS = 500
LABEL_IDS = {f'Image {n}': [300, 301, 302 + n] for n in range(1, 10)}  # the fixture's placeholder ids
ATOL = 1e-4


@pytest.fixture(scope='module')
def cases():
    return np.load(FIXTURE / 'cases.npz')


@pytest.fixture(scope='module')
def model():
    m = MolmoActForActionReasoning.from_pretrained(FIXTURE, dtype=torch.float32).eval()
    return m


@pytest.fixture(scope='module')
def image_processor():
    return MolmoActImageProcessor.from_pretrained(FIXTURE)


@contextlib.contextmanager
def torch_threads_at_least(n: int):
    """torch's bilinear resize uses another kernel on one thread (ties can round differently); the
    fixture was made with 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(before, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sha(array: np.ndarray, dtype) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=dtype).tobytes()).hexdigest()


def preprocess(case, cases, image_processor):
    """The project's preprocessing of a case's raw images, batched like the reference's output."""
    with torch_threads_at_least(2):
        if case == 'multi120x160_64x64':
            items = [image_processor.preprocess([cases[f'{case}__image1'], cases[f'{case}__image2']],
                                                multi_image=True)]
        elif case == 'batch2leftpad':
            items = [image_processor.preprocess(cases[f'{c}__image'], multi_image=False)
                     for c in ('single96x128', 'single380x700')]
        else:
            items = [image_processor.preprocess(cases[f'{case}__image'], multi_image=False)]
    return items, collate(items)


def expected_ids(items, prompt_ids):
    rows = []
    for item in items:
        ids = [BOS]
        for segment in item.prompt_segments(TINY_IDS):
            ids.extend(LABEL_IDS[segment] if isinstance(segment, str) else segment.tolist())
        rows.append(ids + prompt_ids.tolist())
    return rows


CASES = ['single96x128', 'single380x700', 'multi120x160_64x64', 'batch2leftpad']


@pytest.mark.parametrize('case', CASES)
def test_preprocessing_and_token_layout_are_identical(case, cases, image_processor):
    items, arrays = preprocess(case, cases, image_processor)
    for name, dtype in (('images', np.float32), ('pooled_patches_idx', np.int64), ('image_masks', np.float32),
                        ('image_grids', np.int64)):
        assert tuple(arrays[name].shape) == tuple(cases[f'{case}__{name}_shape']), name
        assert sha(arrays[name], dtype) == str(cases[f'{case}__{name}_sha256']), f'{name} differs from the reference'
    assert np.array_equal(arrays['pooled_patches_idx'], cases[f'{case}__pooled_patches_idx'].astype(np.int64))
    stored = cases[f'{case}__input_ids'].astype(np.int64)
    mask = cases[f'{case}__attention_mask'].astype(bool)
    for row, ids in zip(range(stored.shape[0]), expected_ids(items, cases['prompt_ids'])):
        assert stored[row][mask[row]].tolist() == ids


@pytest.mark.parametrize('case', CASES)
def test_features_logits_and_greedy_tokens_match_the_reference(case, cases, model, image_processor):
    _, arrays = preprocess(case, cases, image_processor)
    ids = torch.from_numpy(cases[f'{case}__input_ids'].astype(np.int64))
    mask = torch.from_numpy(cases[f'{case}__attention_mask'].astype(np.int64))
    inputs = dict(input_ids=ids, attention_mask=mask, images=torch.from_numpy(arrays['images']),
                  pooled_patches_idx=torch.from_numpy(arrays['pooled_patches_idx']),
                  image_masks=torch.from_numpy(arrays['image_masks']))
    position_ids = (torch.from_numpy(cases[f'{case}__position_ids'].astype(np.int64))
                    if f'{case}__position_ids' in cases.files else None)
    with torch.no_grad():
        out = model(**inputs, position_ids=position_ids, use_cache=False)
    feats = out.image_hidden_states
    assert tuple(feats.shape) == tuple(cases[f'{case}__image_features_shape'])
    rows_idx = torch.from_numpy(cases[f'{case}__image_features_rows_idx'].astype(np.int64))
    assert (feats[rows_idx] - torch.from_numpy(cases[f'{case}__image_features_rows'])).abs().max() < ATOL
    assert (feats[:, :8] - torch.from_numpy(cases[f'{case}__image_features_cols8'])).abs().max() < ATOL

    at = cases[f'{case}__logits_at']
    got = out.logits[torch.from_numpy(at[:, 0].astype(np.int64)), torch.from_numpy(at[:, 1].astype(np.int64))]
    assert (got - torch.from_numpy(cases[f'{case}__logits_rows'])).abs().max() < ATOL
    valid = mask.bool()
    logits = out.logits.float()
    assert torch.equal(logits.argmax(-1)[valid],
                       torch.from_numpy(cases[f'{case}__logits_argmax'].astype(np.int64))[valid])
    assert (logits.max(-1).values[valid] - torch.from_numpy(cases[f'{case}__logits_max'])[valid]).abs().max() < ATOL
    assert (torch.logsumexp(logits, -1)[valid]
            - torch.from_numpy(cases[f'{case}__logits_logsumexp'])[valid]).abs().max() < ATOL

    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                                   pad_token_id=BOS, eos_token_id=BOS)
    assert generated[:, ids.shape[1]:].tolist() == cases[f'{case}__generated_ids'].astype(np.int64).tolist()


def test_fixture_is_the_released_checkpoint_layout():
    cfg = json.loads((FIXTURE / 'config.json').read_text())
    assert cfg['model_type'] == 'molmoact' and cfg['architectures'] == ['MolmoActForActionReasoning']
    assert 'auto_map' in cfg and not list(FIXTURE.glob('*.py'))  # remote code named, none present
    m, info = MolmoActForActionReasoning.from_pretrained(FIXTURE, output_loading_info=True)
    assert not info['missing_keys'] and not info['unexpected_keys'] and not info['mismatched_keys']
