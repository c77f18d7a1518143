"""Grammar-constrained decoding: the per-stage logits processors with the real tokenizer and the tiny model."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from molmoact_ros.model.loading import LoadOptions, load_model
from molmoact_ros.model.processing import MolmoActProcessor, PromptVariant, build_prompt, chat_text
from molmoact_ros.model.tiny import save_tiny_checkpoint
from molmoact_ros.reasoning.constraints import (ActionConstraint, AnswerConstraint, ConstraintVocab, DepthConstraint,
                                                TraceConstraint)
from molmoact_ros.reasoning.grammar import (ACTION_PREFIX_MULTI_VIEW, ACTION_TOKEN_STRINGS, DEPTH_PREFIX_MULTI_VIEW,
                                            TEMPLATES, TRACE_PREFIX_MULTI_VIEW, format_actions, format_depth,
                                            format_trace, parse_actions, parse_answer, parse_trace)

NEG = float('-inf')
WIDTH = 152064  # the LM head


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp('tiny-reasoning'))


@pytest.fixture(scope='module')
def processor(tiny_dir):
    return MolmoActProcessor.from_pretrained(tiny_dir)


@pytest.fixture(scope='module')
def tok(processor):
    return processor.tokenizer


@pytest.fixture(scope='module')
def vocab(tok):
    return ConstraintVocab.from_tokenizer(tok)


@pytest.fixture(scope='module')
def model(tiny_dir):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_model(tiny_dir, LoadOptions(dtype='float32', device='cpu'))


def answer_constraint(vocab, template, horizon, action_dim=7, free=64):
    stages = []
    if template.depth_sentence:
        stages.append(DepthConstraint(vocab, max_free_tokens=free))
    if template.trace_sentences:
        stages.append(TraceConstraint(vocab, max_free_tokens=free, num_traces=len(template.trace_sentences)))
    stages.append(ActionConstraint(vocab, action_dim=action_dim, horizon=horizon, max_free_tokens=free))
    return AnswerConstraint(vocab, stages)


def first_rejected(proc, ids, prompt=(5, 6, 7)):
    """Teacher-force ``ids`` through the processor (one call per step, as generate does); the index of the
    first token it masks, or None."""
    proc.reset()
    seq = list(prompt)
    for j, t in enumerate(ids):
        scores = proc(torch.tensor([seq]), torch.zeros(1, WIDTH))
        if scores[0, t] == NEG:
            return j
        seq.append(t)
    return None


def test_vocab_is_built_once_per_tokenizer_and_matches_the_grammar(tok, vocab):
    assert ConstraintVocab.from_tokenizer(tok) is vocab
    assert vocab.action_values == tuple(s.encode('utf-8') for s in ACTION_TOKEN_STRINGS)
    assert vocab.token_bytes[tok.convert_tokens_to_ids('],[')] == b'],['
    assert vocab.token_bytes[vocab.eos_id] is None and vocab.token_bytes[vocab.depth_start_id] is None
    # Context-dependent merges are why the grammar runs on bytes: ", ð" is ',' 'ĠÃ' '°' in an answer.
    ids = tok.encode('[' + ', '.join(ACTION_TOKEN_STRINGS[:2]) + ']', add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids)[:6] == ['[', 'Ã°', 'Åģ', 'Ä°', 'Ä³', ',']
    assert 'ĠÃ' in tok.convert_ids_to_tokens(ids)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(TEMPLATES)), horizon=st.sampled_from([1, 8]), spaced=st.booleans(),
       codes=st.lists(st.integers(0, 127), min_size=100, max_size=100),
       points=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=5),
       data=st.data())
def test_well_formed_answers_are_never_masked(tok, vocab, name, horizon, spaced, codes, points, data):
    template = TEMPLATES[name]
    bins = [data.draw(st.lists(st.integers(0, 254), min_size=7, max_size=7)) for _ in range(horizon)]
    text = template.format(bins, codes, points, spaced=spaced)
    ids = tok.encode(text, add_special_tokens=False)
    proc = answer_constraint(vocab, template, horizon)
    assert first_rejected(proc, ids + [vocab.eos_id]) is None
    assert proc.is_done(ids) and not proc.is_done(ids[:-2])


def test_each_stage_accepts_its_part_after_a_forced_prefix(tok, vocab):
    depth = ' ' + format_depth(range(100))
    trace = ' ' + format_trace([(0, 0), (255, 9), (10, 100), (59, 153), (74, 120)]) + '.'
    actions = ' ' + format_actions([[0, 254, 1, 253, 2, 252, 128]] * 8) + '.'
    for proc, text in ((DepthConstraint(vocab), depth), (TraceConstraint(vocab), trace),
                       (ActionConstraint(vocab, horizon=8), actions)):
        ids = tok.encode(text, add_special_tokens=False)
        assert first_rejected(proc, ids + [vocab.eos_id]) is None, text
        assert proc.is_done(ids) and not proc.is_done(ids[:-2])


def allowed(proc, tok, text, prefix_ids=()):
    ids = list(prefix_ids) + tok.encode(text, add_special_tokens=False)
    return set(proc.allowed_token_ids(ids, WIDTH).tolist())


def test_depth_block_admits_only_codes_then_only_depth_end(tok, vocab):
    proc = DepthConstraint(vocab)
    start = [vocab.depth_start_id]
    inside = allowed(proc, tok, '', start)
    assert inside == set(range(vocab.depth_code_base_id, vocab.depth_code_base_id + 128))
    assert allowed(proc, tok, '', start + [vocab.depth_code_base_id] * 100) == {vocab.depth_end_id}
    done = start + [vocab.depth_code_base_id] * 100 + [vocab.depth_end_id]
    assert allowed(proc, tok, '', done) == {vocab.eos_id} and proc.is_done(done)
    free = allowed(proc, tok, ' The depth map is')
    assert vocab.depth_start_id in free and vocab.eos_id not in free and len(free) > 100000
    assert tok.convert_tokens_to_ids('Ġ[') not in free  # no brackets before the structure
    assert allowed(DepthConstraint(vocab, max_free_tokens=2), tok, ' The depth') == {vocab.depth_start_id}


def test_trace_grammar_limits_values_points_and_spacing(tok, vocab):
    proc = TraceConstraint(vocab)
    digits = {tok.convert_tokens_to_ids(str(d)): d for d in range(10)}
    after = lambda text: {digits[i] for i in allowed(proc, tok, text) if i in digits}  # noqa: E731
    assert after(' is [[2') == set(range(10)) and after(' is [[25') == set(range(6))
    assert after(' is [[26') == set() and after(' is [[0') == set() and after(' is [[255') == set()
    five = ' is [' + ','.join(['[1,2]'] * 5)
    assert tok.convert_tokens_to_ids(',') not in allowed(proc, tok, five)
    assert tok.convert_tokens_to_ids(']') in allowed(proc, tok, five)
    four = ' is [' + ','.join(['[1,2]'] * 4)[:-1]
    assert {tok.convert_tokens_to_ids(t) for t in (']', '],[', '],', ']]', ']].')} <= allowed(proc, tok, four)
    assert tok.convert_tokens_to_ids('Ġ') not in allowed(proc, tok, ' is [[1, ')  # one space at most
    assert vocab.eos_id not in allowed(proc, tok, ' is [[1,2]')
    assert allowed(proc, tok, ' is [[1,2]].') == {vocab.eos_id}
    two = TraceConstraint(vocab, num_traces=2)
    assert not two.is_done(tok.encode(' left [[1, 2]]', add_special_tokens=False))
    assert two.is_done(tok.encode(' left [[1, 2]]. The right one is [[1, 2]]', add_special_tokens=False))


def test_action_grammar_counts_values_and_steps(tok, vocab):
    one = ActionConstraint(vocab, action_dim=3, horizon=1)
    comma, close = tok.convert_tokens_to_ids(','), tok.convert_tokens_to_ids(']')
    three = ' is [' + ', '.join(ACTION_TOKEN_STRINGS[:3])
    assert comma not in allowed(one, tok, three) and close in allowed(one, tok, three)
    two = ' is [' + ', '.join(ACTION_TOKEN_STRINGS[:2])
    assert comma in allowed(one, tok, two) and close not in allowed(one, tok, two)
    # Inside a value only continuations of one of the 256 strings: 'ðĸ¥' may end or go on to 'ðĸ¥¨'.
    mid = allowed(one, tok, ' is [' + ACTION_TOKEN_STRINGS[0][:2])
    assert mid and all(vocab.token_bytes[i][:1] in (b'\xc5', b'\xc4') for i in mid)
    both = allowed(one, tok, ' is [ðĸ¥')
    assert comma in both and any(vocab.token_bytes[i].startswith('¨'.encode()) for i in both)
    chunk = ActionConstraint(vocab, action_dim=2, horizon=2)
    row = '[' + ', '.join(ACTION_TOKEN_STRINGS[:2]) + ']'
    last = f' is [{row}, [' + ', '.join(ACTION_TOKEN_STRINGS[:2])
    assert tok.convert_tokens_to_ids(']].') in allowed(chunk, tok, last)
    assert close not in allowed(chunk, tok, f' is [{row}')  # a second step is required
    assert chunk.is_done(tok.encode(f' is [{row}, {row}]', add_special_tokens=False))
    assert not chunk.accepts(tok.encode(f' is [{row}, {row}, {row}]', add_special_tokens=False))
    assert not chunk.accepts(tok.encode(' is [[é, ' + ACTION_TOKEN_STRINGS[0], add_special_tokens=False))


def test_rows_are_tracked_per_batch_row_and_reordering_is_handled(tok, vocab):
    proc = TraceConstraint(vocab)
    a = tok.encode(' is [[25', add_special_tokens=False)
    b = tok.encode(' x y z [[', add_special_tokens=False)
    n = max(len(a), len(b))
    a, b = [9] * (n - len(a)) + a, [9] * (n - len(b)) + b  # same length: left context differs only
    proc.reset()
    seq = torch.tensor([[1, 2], [1, 2]])
    for j in range(n):
        proc(seq, torch.zeros(2, WIDTH))
        seq = torch.cat([seq, torch.tensor([[a[j]], [b[j]]])], 1)
    scores = proc(seq, torch.zeros(2, WIDTH))
    five = tok.convert_tokens_to_ids('5')
    assert scores[0, five] == 0 and scores[1, five] == 0
    assert scores[0, tok.convert_tokens_to_ids('6')] == NEG and scores[1, tok.convert_tokens_to_ids('6')] == 0
    swapped = seq[[1, 0]]  # beam search may reorder rows between steps
    scores = proc(torch.cat([swapped, torch.tensor([[five], [five]])], 1), torch.zeros(2, WIDTH))
    assert scores[1, five] == NEG  # row 1 is now "[[255": no 4th digit
    assert scores[0, five] == 0  # row 0 is now "[[5"


def random_walk(proc, vocab, rows, steps, gen):
    """Sample uniformly among the allowed tokens (random logits walk, no model)."""
    proc.reset()
    seq = torch.ones(rows, 3, dtype=torch.long)
    for _ in range(steps):
        scores = proc(seq, torch.rand(rows, WIDTH, generator=gen) * 4)
        nxt = scores.argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
        if (nxt == vocab.eos_id).all():
            break
    return seq[:, 3:]


@pytest.mark.parametrize('horizon,action_dim,num_traces,free', [(1, 7, 1, 0), (8, 7, 1, 3), (2, 3, 2, 2)])
def test_random_constrained_walks_always_parse(tok, vocab, horizon, action_dim, num_traces, free):
    proc = AnswerConstraint(vocab, (DepthConstraint(vocab, max_free_tokens=free),
                                    TraceConstraint(vocab, max_free_tokens=free, num_traces=num_traces),
                                    ActionConstraint(vocab, action_dim=action_dim, horizon=horizon,
                                                     max_free_tokens=free)))
    out = random_walk(proc, vocab, 3, proc.max_new_tokens(), torch.Generator().manual_seed(horizon))
    for row in out.tolist():
        assert row[-1] == vocab.eos_id and proc.is_done([t for t in row if t != vocab.eos_id])
        text = tok.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        got = parse_answer(text, action_dim, horizon=horizon)
        assert got.ok, (text, got.errors)
        assert len(got.traces) == num_traces and not got.repairs


def images_and_prompts(n, seed=0):
    rng = np.random.default_rng(seed)
    verbs = ['pick up', 'push', 'open', 'close', 'put away', 'stack', 'wipe']
    objects = ['the red block', 'the drawer', 'the mug', 'the blue bowl', 'a sponge']
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (int(rng.integers(24, 80)), int(rng.integers(24, 80)), 3), dtype=np.uint8)
        out.append((img, f'{verbs[i % len(verbs)]} {objects[i % len(objects)]}'))
    return out


def generate(model, processor, texts, images, proc, **kwargs):
    inputs = processor(texts, images)
    with torch.no_grad():
        out = model.generate(**inputs, logits_processor=[proc], stopping_criteria=[proc.stopping_criteria()],
                             max_new_tokens=proc.max_new_tokens(), **kwargs)
    assert proc.violations == 0
    return out[:, inputs['input_ids'].shape[1]:]


def test_constrained_generate_with_the_tiny_model_always_parses(model, processor, vocab):
    """Full answers (depth, trace, actions in one generation), sampled, for 6 random images and
    instructions in one batch; a short free-text budget so the random model reaches the structures quickly."""
    torch.manual_seed(0)
    cases = images_and_prompts(6)
    proc = AnswerConstraint(vocab, (DepthConstraint(vocab, max_free_tokens=3),
                                    TraceConstraint(vocab, max_free_tokens=3),
                                    ActionConstraint(vocab, action_dim=7, horizon=1, max_free_tokens=3)))
    new = generate(model, processor, [chat_text(build_prompt(t, PromptVariant.MULTI_VIEW)) for _, t in cases],
                   [[img] for img, _ in cases], proc, do_sample=True)
    for row in new:
        text = processor.decode(row)
        got = parse_answer(text, 7, horizon=1)
        assert got.ok, (text, got.errors)
        assert len(got.depth.codes) == 100 and 1 <= len(got.trace.points) <= 5 and got.actions.horizon == 1


def test_stage_by_stage_with_prefix_forcing(model, processor, vocab):
    """The trace and action stages alone, each from a prompt that already holds the earlier parts (prefix
    forcing), for 14 more random images and instructions, batched; greedy for one batch, sampled for the other."""
    torch.manual_seed(1)
    cases = images_and_prompts(14, seed=1)
    depth_text = ' ' + DEPTH_PREFIX_MULTI_VIEW + ' ' + format_depth([7] * 100) + '.'
    trace_text = ' ' + TRACE_PREFIX_MULTI_VIEW + ' ' + format_trace([(59, 153), (74, 120)]) + '.'
    runs = [
        (TraceConstraint(vocab, max_free_tokens=2), depth_text + ' ' + TRACE_PREFIX_MULTI_VIEW, parse_trace),
        (ActionConstraint(vocab, horizon=2, max_free_tokens=2),
         depth_text + trace_text + ' ' + ACTION_PREFIX_MULTI_VIEW, lambda t: parse_actions(t, 7, horizon=2)),
    ]
    for b, batch in enumerate((cases[:7], cases[7:])):
        for proc, forced, parse in runs:
            proc.reset()
            new = generate(model, processor, [chat_text(build_prompt(t)) + forced for _, t in batch],
                           [[img] for img, _ in batch], proc, do_sample=bool(b))
            for row in new:
                assert proc.is_done([t for t in row.tolist() if t != vocab.eos_id])
                got = parse(processor.decode(row))
                assert not hasattr(got, 'code'), got


def test_depth_stage_stops_right_after_depth_end(model, processor, vocab):
    img, text = images_and_prompts(1, seed=2)[0]
    inputs = processor(chat_text(build_prompt(text)) + ' ' + DEPTH_PREFIX_MULTI_VIEW, [img])
    proc = DepthConstraint(vocab, max_free_tokens=1)
    with torch.no_grad():
        out = model.generate(**inputs, logits_processor=[proc], stopping_criteria=[proc.stopping_criteria()],
                             max_new_tokens=200, do_sample=False)
    new = out[0, inputs['input_ids'].shape[1]:].tolist()
    assert new[-1] == vocab.depth_end_id and len(new) <= 103 and new.count(vocab.depth_start_id) == 1


def test_is_done_walks_only_new_tokens_and_handles_other_sequences(tok, vocab):
    proc = TraceConstraint(vocab)
    ids = tok.encode(' is [[1,2]].', add_special_tokens=False)
    assert [proc.is_done(ids[:n]) for n in range(len(ids) + 1)] == [False] * len(ids) + [True]
    assert not proc.accepts(tok.encode(' is ]', add_special_tokens=False))
    assert proc.is_done(ids) and proc.accepts(ids[:3]) and not proc.is_done(ids[:3])
