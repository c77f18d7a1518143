"""Grammar fast-forwarding: the forced runs of the constraints (every token of a run is the only token the
grammar allows where it stands, and a run stops where two or more are allowed or the stages are complete),
and the engine feeding a chosen token plus its forced run in one forward pass: the same token ids and
results as one token per pass, for every stage, in fewer passes."""

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from molmoact_ros.reasoning.constraints import (ActionConstraint, AnswerConstraint, ConstraintVocab, DepthConstraint,
                                                TraceConstraint)
from molmoact_ros.reasoning.engine import EngineConfig, MolmoActEngine, Observation, StageFailure, SteeringMode
from molmoact_ros.reasoning.grammar import ACTION_TOKEN_STRINGS

FREE = 3
WIDTH = 152064
LAST_STAGES = {'actions', 'actions_forced', 'answer'}


@pytest.fixture(scope='module')
def tok(parts):
    return parts[1].tokenizer


@pytest.fixture(scope='module')
def vocab(tok):
    return ConstraintVocab.from_tokenizer(tok)


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def allowed(proc, ids):
    return set(proc.allowed_token_ids(ids, WIDTH).tolist())


# -- the forced-run computation ---------------------------------------------------------------------

def test_forced_runs_of_markers_and_separators(tok, vocab):
    depth = DepthConstraint(vocab, max_free_tokens=2)
    assert depth.forced_run(enc(tok, ' hello there')) == [vocab.depth_start_id]  # free budget spent
    assert depth.forced_run(enc(tok, ' hello')) == []  # free text: many tokens allowed
    codes = enc(tok, ' a b') + [vocab.depth_start_id] + [vocab.depth_code_id(3)] * 100
    assert depth.forced_run(codes) == [vocab.depth_end_id]
    assert depth.forced_run(codes[:-1]) == []  # a code still to choose
    assert depth.forced_run(codes + [vocab.depth_end_id]) == []  # complete: never EOS or '.'
    assert DepthConstraint(vocab, max_free_tokens=0).forced_run([]) == [vocab.depth_start_id]
    actions = ActionConstraint(vocab, max_free_tokens=0)
    value = '[' + ACTION_TOKEN_STRINGS[3]
    assert actions.forced_run(enc(tok, value + ' ')) == enc(tok, ',')  # a space after a value: ',' next
    assert actions.forced_run(enc(tok, value)) == []  # ',', ' ' or ']'... are open
    two = ActionConstraint(vocab, max_free_tokens=0, horizon=2)
    last = '[[' + ', '.join(ACTION_TOKEN_STRINGS[:7]) + ' '
    assert len(allowed(two, enc(tok, last))) >= 2 and two.forced_run(enc(tok, last)) == []  # ']', '],', ']]'
    run = two.forced_run(enc(tok, last[:-1] + ']'))  # a step closed: ',' or ']' or ' ' next
    assert run == [] and len(allowed(two, enc(tok, last[:-1] + ']'))) >= 2
    mid = '[' + ', '.join(ACTION_TOKEN_STRINGS[:3]) + ' '
    assert actions.forced_run(enc(tok, mid)) == enc(tok, ',') and actions.forced_run(enc(tok, mid), max_len=0) == []
    assert actions.forced_run(enc(tok, ' ]')) == []  # off-grammar ids: no run


def random_walk_ids(proc, rng, steps):
    """Tokens sampled uniformly among those the grammar allows (no model), until complete."""
    ids = []
    for _ in range(steps):
        if proc.is_done(ids):
            break
        ids.append(rng.choice(sorted(allowed(proc, ids))))
    return ids


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31 - 1), free=st.sampled_from([0, 1, 3]), horizon=st.sampled_from([1, 2]),
       action_dim=st.sampled_from([2, 7]), num_traces=st.sampled_from([1, 2]), spaces=st.booleans())
def test_every_token_of_a_forced_run_is_the_only_one_allowed(vocab, seed, free, horizon, action_dim, num_traces,
                                                              spaces):
    proc = AnswerConstraint(vocab, (DepthConstraint(vocab, max_free_tokens=free),
                                    TraceConstraint(vocab, max_free_tokens=free, num_traces=num_traces,
                                                    spaces=spaces),
                                    ActionConstraint(vocab, action_dim=action_dim, horizon=horizon,
                                                     max_free_tokens=free, spaces=spaces)))
    rng = random.Random(seed)
    ids = random_walk_ids(proc, rng, proc.max_new_tokens())
    assert proc.is_done(ids)
    forced_total = 0
    for n in range(len(ids) + 1):
        prefix = ids[:n]
        run = proc.forced_run(prefix)
        seq = list(prefix)
        for t in run:  # each token is the only one allowed at its place
            assert allowed(proc, seq) == {t}
            assert not proc.is_done(seq)
            seq.append(t)
        # the run stops where 2+ tokens are allowed or the stages are complete (EOS / '.' never forced)
        assert proc.is_done(seq) or len(allowed(proc, seq)) >= 2
        if len(allowed(proc, prefix)) == 1 and not proc.is_done(prefix):
            assert run and run[0] in allowed(proc, prefix)
            forced_total += 1
        bounded = proc.forced_run(prefix, max_len=1)
        assert bounded == run[:1]
    assert forced_total >= 1 + (free > 0)  # at least the depth markers' END (and START after free text)


def test_forced_runs_are_cached_per_mask_key_and_stable(vocab, tok):
    proc = ActionConstraint(vocab, max_free_tokens=0, horizon=2)
    text = '[[' + ', '.join(ACTION_TOKEN_STRINGS[10:14]) + ' '
    first = proc.forced_run(enc(tok, text))
    again = ActionConstraint(vocab, max_free_tokens=0, horizon=2).forced_run(enc(tok, text))
    assert first == again == enc(tok, ',')
    state = proc.state_of(enc(tok, text))
    key = proc.grammar.mask_key(state)
    assert proc.grammar._forced[key] == first[0]


# -- the engine -------------------------------------------------------------------------------------

class PassCounter:
    """Counts the model's forward passes (prefill: with images; decode: without)."""

    def __init__(self, model):
        self.model, self.inner = model, model.forward
        self.prefill = self.decode = 0
        model.forward = self

    def __call__(self, *args, **kwargs):
        if kwargs.get('images') is not None:
            self.prefill += 1
        else:
            self.decode += 1
        return self.inner(*args, **kwargs)

    def close(self):
        del self.model.forward


def record_decodes(engine):
    """Wrap the engine's decode loop: the (stage, generated ids) of every call; the decode passes each
    call reported go to ``engine.reported_passes``."""
    calls = []
    inner = engine._decode
    engine.reported_passes = []

    def wrapped(session, stage):
        new, seconds = inner(session, stage)
        calls.append((stage, list(new)))
        engine.reported_passes.append(session.data['decode_passes'])
        return new, seconds

    engine._decode = wrapped
    return calls


def observation(seed, size, wrist=False):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    return Observation(image, rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) if wrist else None)


def every_stage(engine, o, instruction, edit, full=True):
    """The engine's entry points on one observation (``full``: all of them; else the model's own answer
    and act_on_observation); returns comparable values and the results."""
    p = engine.perceive(o, instruction)
    t = engine.plan(p.request_id)
    a = engine.act(p.request_id, release=not full)
    out = [p.depth.codes, p.answer_text, t.trace.points, t.answer_text, a.tokens.token_ids, a.answer_text,
           a.actions.values_array().tolist()]
    results = [p, t, a]
    if full:
        prefix = engine.act(p.request_id, edit, steering=SteeringMode.PREFIX, release=False)
        drawn = engine.act(p.request_id, edit, steering=SteeringMode.DRAWN)
        out += [prefix.tokens.token_ids, prefix.answer_text, drawn.tokens.token_ids, drawn.answer_text]
        results += [prefix, drawn]
    obs = engine.act_on_observation(o, instruction, edit)
    out += [obs.tokens.token_ids, obs.answer_text, obs.actions.values_array().tolist()]
    results.append(obs)
    if full:
        out.append(engine.generate_answer(o, instruction))
    return out, results


CASES = [(11, (72, 96), False, 'put the red block in the bowl', [(10, 200), (120, 100)]),
         (12, (50, 70), True, 'open the top drawer', [(200, 30)]),
         (13, (96, 64), False, 'stack the cups', [(5, 5), (60, 90), (128, 128), (250, 3), (7, 255)]),
         (14, (33, 41), True, 'wipe the table with a sponge', [(100, 100), (101, 150)])]


@pytest.mark.parametrize('horizon', [1, 8])
def test_fast_forward_gives_the_same_tokens_in_fewer_passes(parts, horizon):
    model, processor = parts
    engines = {ff: MolmoActEngine(model, processor, EngineConfig(max_free_tokens=FREE, horizon=horizon,
                                                                 fast_forward=ff)) for ff in (True, False)}
    cases = CASES if horizon == 1 else CASES[:1]  # 8-step chunks: the model's answer and act_on_observation
    results, decodes, passes = {}, {}, {}
    for ff, engine in engines.items():
        calls = record_decodes(engine)
        counter = PassCounter(model)
        try:
            results[ff] = [every_stage(engine, observation(seed, size, wrist), ins, edit, full=horizon == 1)
                           for seed, size, wrist, ins, edit in cases]
        finally:
            counter.close()
        decodes[ff], passes[ff] = calls, (counter.prefill, counter.decode)
        assert len(engine.sessions) == 0
    # identical token ids, stage by stage (depth, trace, actions, prefix / drawn acts, act_on_observation,
    # one monolithic answer), and identical parsed results
    assert [s for s, _ in decodes[True]] == [s for s, _ in decodes[False]]
    assert {'depth', 'trace', 'actions', 'actions_forced'} | ({'answer'} if horizon == 1 else set()) \
        == {s for s, _ in decodes[True]}
    for (stage, on), (_, off) in zip(decodes[True], decodes[False]):
        assert on == off, stage
    for (on, _), (off, _) in zip(results[True], results[False]):
        assert on == off
    # same prefills; fewer decode passes with fast-forwarding, and one pass per token without it
    tokens = sum(len(ids) for _, ids in decodes[True])
    finished = sum(stage in LAST_STAGES for stage, _ in decodes[True])  # answers whose last chunk is not fed
    # prefix steering: a re-feed after the rewind + the edited trace's prefill, per case
    steered = 2 * len(cases) if horizon == 1 else 0
    assert passes[True][0] == passes[False][0]
    assert passes[False][1] == tokens - finished + steered
    for ff, engine in engines.items():  # the engine reports the passes it made
        assert passes[ff][1] == sum(engine.reported_passes) + steered
    assert passes[True][1] < passes[False][1] - 6 * len(cases)  # at least the markers and separators
    # the reported decode passes are the counted ones, and fewer than the tokens where runs were forced
    for (_, r_on), (_, r_off) in zip(results[True], results[False]):
        for s_on, s_off in zip(r_on, r_off):
            assert s_off.timing.decode_passes == s_off.timing.generated_tokens - (s_off.timing.stage == 'action')
            assert s_on.timing.generated_tokens == s_off.timing.generated_tokens
            assert s_on.timing.decode_passes <= s_on.timing.generated_tokens
        p, obs = r_on[0], r_on[-1]
        assert p.timing.decode_passes < p.timing.generated_tokens  # <DEPTH_START> (free text spent) and <DEPTH_END>
        assert obs.timing.decode_passes < obs.timing.generated_tokens


def test_fast_forward_has_no_effect_unconstrained(parts):
    model, processor = parts
    got = {}
    for ff in (True, False):
        engine = MolmoActEngine(model, processor, EngineConfig(max_free_tokens=FREE, constrained=False,
                                                               fast_forward=ff))
        calls = record_decodes(engine)
        counter = PassCounter(model)
        try:
            with pytest.raises(StageFailure):  # the random model writes no depth block unconstrained
                engine.perceive(observation(21, (40, 40)), 'push the mug')
        finally:
            counter.close()
        got[ff] = (calls, counter.decode)
        assert counter.decode == sum(len(ids) for _, ids in calls)  # one pass per token
    assert got[True] == got[False]


def test_a_finished_answer_skips_its_last_pass_and_later_stages_resync(parts):
    """The chunk that ends an answer is not fed (its logits would be unused); acting again on the request
    re-syncs the cache and gives what a fresh request gives."""
    model, processor = parts
    engine = MolmoActEngine(model, processor, EngineConfig(max_free_tokens=FREE))
    o, instruction, edit = observation(31, (60, 80)), 'put the cup on the plate', [(20, 30), (200, 220)]
    p = engine.perceive(o, instruction)
    engine.plan(p.request_id)
    first = engine.act(p.request_id, release=False)
    session = engine.sessions.get(p.request_id)
    assert session.data['next_logits'] is None
    assert 0 < session.length - session.cache.get_seq_length() <= first.timing.generated_tokens
    again = engine.act(p.request_id, release=False)
    assert (again.tokens.token_ids, again.answer_text) == (first.tokens.token_ids, first.answer_text)
    edited = engine.act(p.request_id, edit, steering=SteeringMode.PREFIX, release=False)
    re_edited = engine.act(p.request_id, edit, steering=SteeringMode.PREFIX)
    q = engine.perceive(o, instruction)
    engine.plan(q.request_id)
    fresh = engine.act(q.request_id, edit, steering=SteeringMode.PREFIX)
    assert edited.tokens.token_ids == re_edited.tokens.token_ids == fresh.tokens.token_ids
    assert edited.answer_text == re_edited.answer_text == fresh.answer_text
    assert len(engine.sessions) == 0
