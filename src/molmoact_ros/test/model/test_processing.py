"""Prompts, the processor's token layout, and the tiny structural model end to end through Auto classes."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import AutoModelForImageTextToText, AutoProcessor

from molmoact_ros.model import MolmoActForActionReasoning
from molmoact_ros.model.processing import (MAX_INSTRUCTION_CHARS, MolmoActProcessor, PromptVariant,
                                           build_prompt, chat_text)
from molmoact_ros.model.tiny import TINY_NORM_STATS, is_tiny_checkpoint, save_tiny_checkpoint
from molmoact_ros.model.tokenizer import (DEPTH_CODE_BASE_ID, ENDOFTEXT_ID, IM_END_ID, IM_START_ID,
                                          IMAGE_PATCH_ID, build_molmoact_tokenizer)


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp('tiny'))


@pytest.fixture(scope='module')
def processor(tiny_dir):
    return AutoProcessor.from_pretrained(tiny_dir)


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_prompts_follow_the_released_wording():
    multi = build_prompt('put the cup in the sink.', PromptVariant.MULTI_VIEW)
    assert multi.startswith('The task is put the cup in the sink. What is the action that the robot should take. '
                            'To figure out the action that the robot should take to put the cup in the sink, ')
    assert 'depth map for the first image' in multi and 'other images from different camera views' in multi
    single = build_prompt('put the cup in the sink', 'single_view')
    assert 'depth map for this image' in single and 'camera views' not in single
    steer = build_prompt('open the drawer', PromptVariant.TRAJECTORY_MULTI_VIEW)
    assert steer == ('The task is open the drawer. Notice that the trajectory of the end effector is annotated on '
                     'the first image. Based on the trajectory annotated on the image, along with other images from '
                     'different camera views as additional information, what is the action that the robot should '
                     'take?')
    assert chat_text('hi') == 'User: hi Assistant:'


@given(st.text(min_size=1, max_size=60).filter(lambda t: t.strip(' .\n\t\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0')))
def test_prompt_keeps_any_instruction_on_one_line(instruction):
    try:
        prompt = build_prompt(instruction)
    except ValueError:
        # only for instructions that are empty after normalising whitespace and the final period
        assert not ' '.join(instruction.split()).rstrip('.').strip()
        return
    task = ' '.join(instruction.split())
    task = task[:-1].rstrip() if task.endswith('.') else task
    assert prompt.count(task) >= 2 and '\n' not in prompt


def test_bad_instructions_are_refused():
    for bad in ('', '   ', '.', 'x' * (MAX_INSTRUCTION_CHARS + 1)):
        with pytest.raises(ValueError):
            build_prompt(bad)


def test_tokenizer_chat_template_matches_the_framing(processor):
    rendered = processor.tokenizer.apply_chat_template([{'role': 'user', 'content': 'pick the cup'}], tokenize=False,
                                                       add_generation_prompt=True)
    assert rendered == chat_text('pick the cup')


def test_single_image_layout(processor):
    out = processor('User: go Assistant:', rgb(256, 256))
    ids = out['input_ids'][0].tolist()
    text_ids = processor.encode_text('User: go Assistant:')
    assert ids[0] == ENDOFTEXT_ID and ids[1] == IM_START_ID
    assert len(ids) == 1 + 424 + len(text_ids) and ids[-len(text_ids):] == text_ids
    assert ids.count(IMAGE_PATCH_ID) == out['pooled_patches_idx'].shape[1] == 392
    assert ids.count(IM_START_ID) == ids.count(IM_END_ID) == 2
    assert out['images'].shape == (1, 2, 729, 588) and out['images'].dtype == torch.float32
    assert out['attention_mask'].all()


def test_two_views_get_image_labels(processor):
    out = processor('go', [rgb(480, 640), rgb(224, 224, 1)])
    ids = out['input_ids'][0].tolist()
    first = ids.index(IM_START_ID)
    assert processor.decode(ids[1:first]) == 'Image 1'
    blocks = [i for i, t in enumerate(ids) if t == IM_END_ID]
    assert len(blocks) == 4
    assert processor.decode(ids[blocks[1] + 1:ids.index(IM_START_ID, blocks[1])]) == 'Image 2'
    assert ids.count(IMAGE_PATCH_ID) == out['pooled_patches_idx'].shape[1]


def test_batch_is_left_padded_and_images_padded_with_minus_one(processor):
    out = processor(['a', 'a much longer instruction text here'], [rgb(64, 64), rgb(480, 640, 2)])
    mask = out['attention_mask']
    pad = int((mask[0] == 0).sum())
    assert pad > 0 and (mask[0, :pad] == 0).all() and (mask[0, pad:] == 1).all()
    assert (out['input_ids'][0, :pad] == ENDOFTEXT_ID).all() and out['input_ids'][0, pad] == ENDOFTEXT_ID
    assert out['images'].shape[:2] == (2, 5) and (out['images'][0, 2:] == -1).all()
    assert (out['pooled_patches_idx'][0, 392:] == -1).all()


def test_save_and_reload_keeps_encodings(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    again = MolmoActProcessor.from_pretrained(tmp_path)
    a = processor('User: x Assistant:', rgb(100, 200), return_tensors='np')
    b = again('User: x Assistant:', rgb(100, 200), return_tensors='np')
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / 'processor_config.json').read_text())['processor_class'] == 'MolmoActProcessor'


def test_decode_keeps_depth_tokens_and_drops_specials(processor):
    text = processor.decode([ENDOFTEXT_ID, DEPTH_CODE_BASE_ID - 2, DEPTH_CODE_BASE_ID + 5, DEPTH_CODE_BASE_ID - 1])
    assert text == '<DEPTH_START><DEPTH_5><DEPTH_END>'


def test_processor_from_tokenizer_without_image_processor_uses_released_defaults():
    proc = MolmoActProcessor(build_molmoact_tokenizer())
    cfg = proc.image_processor.config
    assert (cfg.max_crops, cfg.base_image_input_size, cfg.image_patch_size) == (8, (378, 378), 14)


def test_tiny_checkpoint_loads_like_a_released_one_and_generates(tiny_dir, processor):
    assert is_tiny_checkpoint(tiny_dir)
    cfg = json.loads((tiny_dir / 'config.json').read_text())
    assert cfg['model_type'] == 'molmoact' and cfg['llm_config']['vocab_size'] == 152064
    assert cfg['norm_stats']['molmoact']['action']['mask'][-1] is False
    assert cfg['norm_stats'] == json.loads(json.dumps(TINY_NORM_STATS))
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir).eval()
    assert isinstance(model, MolmoActForActionReasoning)
    inputs = processor(chat_text(build_prompt('pick up the red block')), [rgb(256, 256, 3)])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    new = out[0, inputs['input_ids'].shape[1]:]
    assert new.shape == (6,) and isinstance(processor.decode(new), str)
    # different images -> different logits (the image path is live)
    other = processor(chat_text(build_prompt('pick up the red block')), [rgb(256, 256, 4)])
    with torch.no_grad():
        a = model(**inputs).logits[0, -1]
        b = model(**other).logits[0, -1]
    assert not torch.allclose(a, b)


@settings(max_examples=10, deadline=None)
@given(h=st.integers(16, 700), w=st.integers(16, 700))
def test_patch_tokens_always_match_pooled_rows(processor, h, w):
    out = processor('x', rgb(h, w), return_tensors='np')
    assert int((out['input_ids'][0] == IMAGE_PATCH_ID).sum()) == out['pooled_patches_idx'].shape[1]


def test_released_style_processor_files_load_natively(tiny_dir, tmp_path):
    """The released processor_config.json / preprocessor_config.json point at remote code and carry the
    reference's extra attributes; AutoProcessor still returns the native processor."""
    import shutil
    shutil.copytree(tiny_dir, tmp_path / 'ckpt')
    ckpt = tmp_path / 'ckpt'
    (ckpt / 'processor_config.json').write_text(json.dumps({
        'processor_class': 'MolmoActProcessor', 'auto_map': {'AutoProcessor': 'processing_molmoact.MolmoActProcessor'},
        'use_col_tokens': True, 'prompt_templates': 'uber_model', 'message_format': 'role', 'style': 'demo'}))
    pre = json.loads((ckpt / 'preprocessor_config.json').read_text())
    pre.update(auto_map={'AutoImageProcessor': 'image_processing_molmoact.MolmoActImageProcessor'},
               image_processor_type='MolmoActImageProcessor')
    (ckpt / 'preprocessor_config.json').write_text(json.dumps(pre))
    proc = AutoProcessor.from_pretrained(ckpt)
    assert isinstance(proc, MolmoActProcessor) and proc.settings.use_col_tokens
    assert proc('x', rgb(64, 64), return_tensors='np')['input_ids'].shape[1] > 424
