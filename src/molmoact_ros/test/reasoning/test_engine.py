"""The staged engine on the tiny random-weight model: stages chain through one KV cache and equal one
monolithic constrained generation; outputs always parse; steering re-runs only what it must; requests
are bounded and errors are clear."""

import numpy as np
import pytest
import torch

from molmoact_ros.reasoning.engine import (EngineConfig, MolmoActEngine, Observation, StageFailure, SteeringMode,
                                           check_trace_points)
from molmoact_ros.reasoning.grammar import parse_answer
from molmoact_ros.reasoning.sessions import SessionError, SessionLimits

FREE = 3  # free-text tokens allowed before each structure: keeps the random model's runs short


@pytest.fixture(scope='module')
def engine(parts):
    return MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE))


def obs(seed, size=(64, 64), wrist=False):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    return Observation(image, rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) if wrist else None)


def test_stages_continue_one_cache_and_equal_a_monolithic_generation(engine):
    o = obs(1)
    p = engine.perceive(o, 'put the red block in the bowl')
    assert len(p.depth.codes) == 100 and all(0 <= c <= 127 for c in p.depth.codes)
    assert p.timing.prefill_tokens > 424 and not p.timing.cache_reused
    t = engine.plan(p.request_id)
    assert t.answer_text.startswith(p.answer_text)
    assert t.timing.cache_reused and t.timing.prefill_tokens == 0 and 1 <= len(t.trace.points) <= 5
    a = engine.act(p.request_id, release=False)
    assert a.answer_text.startswith(t.answer_text) and a.steering == SteeringMode.NONE
    assert a.trace_points == t.trace.points
    staged = list(engine.sessions.get(p.request_id).answer_ids)
    engine.release(p.request_id)
    monolithic = engine.generate_answer(o, 'put the red block in the bowl')
    assert staged == monolithic
    # and the engine's greedy loop equals transformers' generate with the same constraint
    from molmoact_ros.reasoning.constraints import AnswerConstraint
    c = engine._constraint('answer')
    inputs = engine.processor('User: ' + __import__('molmoact_ros.model.processing', fromlist=['x']).build_prompt(
        'put the red block in the bowl') + ' Assistant:', [o.image])
    with torch.no_grad():
        out = engine.model.generate(**inputs, logits_processor=[c], stopping_criteria=[c.stopping_criteria()],
                                    max_new_tokens=c.max_new_tokens(), do_sample=False)
    assert out[0, inputs['input_ids'].shape[1]:].tolist() == monolithic
    assert isinstance(c, AnswerConstraint)


def test_outputs_parse_on_12_random_images_and_instructions(engine):
    rng = np.random.default_rng(0)
    words = ['pick', 'place', 'the', 'red', 'blue', 'cup', 'block', 'in', 'on', 'drawer', 'open', 'bowl']
    # 12 (sizes 16..119 px, with and without a wrist view): ~0.9 s each on this 2-core CPU; the grammar's
    # guarantee itself is property-tested in test_constraints on many more random token sequences.
    for i in range(12):
        size = (int(rng.integers(16, 120)), int(rng.integers(16, 120)))
        instruction = ' '.join(rng.choice(words, size=int(rng.integers(1, 8))))
        p, t, a = engine.run(obs(100 + i, size, wrist=bool(i % 2)), instruction)
        parsed = parse_answer(a.answer_text, 7, engine.tokenizer, horizon=1)
        assert parsed.ok, (i, parsed.errors)
        assert parsed.depth.codes == p.depth.codes and parsed.trace.points == t.trace.points
        assert np.all(np.isfinite(a.actions.values_array()))
    assert len(engine.sessions) == 0  # every request released


def test_chunks_of_eight_steps(parts):
    eng = MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE, horizon=8))
    _, _, a = eng.run(obs(3), 'stack the blocks')
    assert a.actions.values_array().shape == (8, 7) and a.tokens.nested


def test_steering_prefix_reuses_the_cache_and_drawn_prefills_a_new_prompt(engine):
    p = engine.perceive(obs(4), 'open the drawer')
    t = engine.plan(p.request_id)
    edited = [(10, 200), (60, 150), (120, 90)]
    pre = engine.act(p.request_id, trace_points=edited, steering='prefix', release=False)
    assert pre.steering == SteeringMode.PREFIX and pre.trace_points == tuple(edited)
    assert pre.timing.cache_reused and 0 < pre.timing.prefill_tokens < 80  # only the edited sentence
    assert '[[10,200],[60,150],[120,90]]' in pre.answer_text and pre.answer_text.startswith(p.answer_text)
    assert t.trace.points != tuple(edited)
    again = engine.act(p.request_id, trace_points=[(0, 0)], steering='prefix', release=False)  # re-edit
    assert '[[0,0]]' in again.answer_text and '[[10,200]' not in again.answer_text
    drawn = engine.act(p.request_id, trace_points=edited, steering=SteeringMode.DRAWN)
    assert drawn.steering == SteeringMode.DRAWN and not drawn.timing.cache_reused
    assert drawn.timing.prefill_tokens > 424  # a fresh prompt with the trace drawn on the image
    assert 'depth' not in drawn.answer_text.lower() or True
    with pytest.raises(SessionError):
        engine.plan(p.request_id)  # released by the last act


def test_stateless_resume_continues_from_message_content(parts):
    a_engine = MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE))
    b_engine = MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE))  # "another process"
    o = obs(5)
    p = a_engine.perceive(o, 'push the button')
    t_local = a_engine.plan(p.request_id)
    b_engine.resume(o, 'push the button', p.answer_text, 'depth', p.request_id)
    t_remote = b_engine.plan(p.request_id)
    assert t_remote.trace.points == t_local.trace.points
    a_local = a_engine.act(p.request_id)
    b_engine.release(p.request_id)
    b_engine.resume(o, 'push the button', t_local.answer_text, 'trace', p.request_id)
    a_remote = b_engine.act(p.request_id)
    assert a_remote.tokens.bins == a_local.tokens.bins


def test_requests_are_bounded(parts):
    eng = MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE, limits=SessionLimits(max_sessions=2)))
    ids = [eng.perceive(obs(10 + i), 'x').request_id for i in range(3)]
    assert len(eng.sessions) == 2
    with pytest.raises(SessionError, match='not live'):
        eng.plan(ids[0])
    eng.plan(ids[2])


def test_clear_errors_and_the_engine_keeps_working(engine):
    with pytest.raises(SessionError):
        engine.plan('never-seen')
    with pytest.raises(ValueError, match='RGB uint8'):
        Observation(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match='RGB uint8'):
        Observation(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match='instruction is empty'):
        engine.perceive(obs(6), '   ')
    for bad in ([], [(1, 2)] * 6, [(300, 1)], [(1,)], 'abc'):
        with pytest.raises(ValueError):
            check_trace_points(bad)
    p = engine.perceive(obs(7), 'x')
    with pytest.raises(StageFailure, match='planning stage first'):
        engine.act(p.request_id)
    engine.plan(p.request_id)
    assert engine.act(p.request_id).actions is not None


def test_unconstrained_random_model_fails_clearly(parts):
    eng = MolmoActEngine(*parts, EngineConfig(constrained=False))
    with pytest.raises(StageFailure, match='perception of request'):
        eng.perceive(obs(8), 'x')
    assert len(eng.sessions) == 0


def test_a_resumed_stage_reports_its_prefill(parts):
    a_engine = MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE))
    b_engine = MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE))
    o = obs(9)
    p = a_engine.perceive(o, 'wipe the table')
    b_engine.resume(o, 'wipe the table', p.answer_text, 'depth', p.request_id)
    t = b_engine.plan(p.request_id)
    assert not t.timing.cache_reused and t.timing.prefill_tokens > 424 and t.timing.prefill_s > 0
    a = b_engine.act(p.request_id)
    assert a.timing.cache_reused  # the action stage continued the planner's cache in this engine


def test_act_on_a_new_observation_with_a_given_trace(parts):
    """Multi-rate execution: actions on a new frame with the newest trace, in the drawn (trained
    trajectory-conditioned) mode; equal to drawn steering of a request perceived on that frame."""
    engine = MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE))
    points = [(30, 200), (90, 140), (150, 80)]
    before = len(engine.sessions)
    assert before == 0
    fast = engine.act_on_observation(obs(9), 'pick up the cup', points, request_id='mr-1')
    assert fast.request_id == 'mr-1' and fast.steering == SteeringMode.DRAWN
    assert fast.trace_points == tuple(points) and not fast.timing.cache_reused
    assert fast.timing.prefill_tokens > 424 and fast.timing.generated_tokens > 0
    assert len(fast.actions.steps) == engine.config.horizon
    assert len(engine.sessions) == before  # nothing stays cached
    p = engine.perceive(obs(9), 'pick up the cup')
    slow = engine.act(p.request_id, trace_points=points, steering=SteeringMode.DRAWN)
    assert slow.tokens.bins == fast.tokens.bins  # same frame, same trace -> same actions
    other = engine.act_on_observation(obs(10), 'pick up the cup', points)
    assert other.request_id and other.request_id != 'mr-1'
    with pytest.raises(ValueError):
        engine.act_on_observation(obs(9), 'pick up the cup', [(300, 0)])
    assert len(engine.sessions) == before


def test_identical_crops_run_through_the_vit_once(parts):
    """A small frame's 1x1 crop equals its global view (both the frame resized to 378 px): the engine
    encodes it once and re-points the pooling indices; the image features and the answers are the same."""
    from molmoact_ros.reasoning.engine import dedupe_crops
    model, processor = parts
    rng = np.random.default_rng(3)
    for size, wrist, deduped in (((72, 96), False, 1), ((252, 336), True, 2), ((480, 640), False, 0)):
        views = [rng.integers(0, 256, size + (3,), dtype=np.uint8)]
        if wrist:
            views.append(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        x = processor('User: hi Assistant:', views)
        images, idx, masks = dedupe_crops(x['images'], x['pooled_patches_idx'], x['image_masks'])
        assert images.shape[1] == x['images'].shape[1] - deduped and masks.shape[1] == images.shape[1]
        assert ((idx < 0) == (x['pooled_patches_idx'] < 0)).all() and int(idx.max()) < images.shape[1] * 729
        flat_old = x['images'].reshape(-1, x['images'].shape[-1])
        flat_new = images.reshape(-1, images.shape[-1])
        valid = x['pooled_patches_idx'] >= 0
        assert torch.equal(flat_old[x['pooled_patches_idx'][valid]], flat_new[idx[valid]])  # same pixels read
        with torch.no_grad():
            backbone = model.model.vision_backbone
            assert torch.equal(backbone(x['images'], x['pooled_patches_idx'], x['image_masks']),
                               backbone(images, idx, masks))
    batch = processor(['User: a Assistant:', 'User: b Assistant:'], [views[:1], views[:1]])
    assert dedupe_crops(batch['images'], batch['pooled_patches_idx'], batch['image_masks'])[0] is batch['images']
    engines = [MolmoActEngine(model, processor, EngineConfig(max_free_tokens=FREE, dedupe_crops=d))
               for d in (True, False)]
    for seed in (40, 41):
        o = obs(seed, (72, 96), wrist=seed % 2 == 1)
        answers = [e.generate_answer(o, 'stack the blocks') for e in engines]
        assert answers[0] == answers[1]
        acts = [e.act_on_observation(o, 'stack the blocks', [(10, 10), (200, 100)]) for e in engines]
        assert acts[0].tokens.token_ids == acts[1].tokens.token_ids


def test_a_checkpoint_trained_on_the_finetune_recipe_answers_two_traces(parts):
    """MolmoAct's fine-tune recipe (and train_molmoact) writes the trace twice (left / right end effector):
    with the checkpoint's answer_template the trace stage decodes both, and the actions follow them."""
    from types import SimpleNamespace

    from molmoact_ros.nodes.engine_provider import checkpoint_template
    from molmoact_ros.reasoning.grammar import FINETUNE_TEMPLATE

    eng = MolmoActEngine(*parts, EngineConfig(max_free_tokens=FREE, horizon=2, answer_template='finetune'))
    assert eng.config.template is FINETUNE_TEMPLATE
    p = eng.perceive(obs(5), 'pick up the red cube')
    t = eng.plan(p.request_id)
    assert len(t.traces) == 2 and t.trace == t.traces[0]
    a = eng.act(p.request_id)
    assert a.actions.values_array().shape == (2, 7)
    parsed = parse_answer(a.answer_text, 7, eng.tokenizer, horizon=2)
    assert parsed.ok and len(parsed.traces) == 2, parsed.errors
    with pytest.raises(ValueError, match='answer_template'):
        EngineConfig(answer_template='trajectory_conditioned')
    with pytest.raises(ValueError, match='answer_template'):
        EngineConfig(answer_template='no_such_template')
    assert checkpoint_template(SimpleNamespace(answer_template='finetune')) == 'finetune'
    assert checkpoint_template(SimpleNamespace()) == ''  # a released checkpoint: the prompt variant's wording
    assert checkpoint_template(SimpleNamespace(answer_template='bogus')) == ''
