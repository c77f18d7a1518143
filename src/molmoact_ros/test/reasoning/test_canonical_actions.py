"""Canonical tokenization of the action lists (``ActionConstraint(canonical=True)``,
``EngineConfig.canonical_actions``): the pieces derived value by value in context concatenate to the
tokenizer's own tokenization of whole lists; the grammar walks exactly those token sequences (other splits of
the same text are rejected, and accepted with the flag off); every token it allows extends some canonical list."""

import random

from hypothesis import HealthCheck, given, settings, strategies as st

from molmoact_ros.reasoning.constraints import ActionConstraint, ConstraintVocab
from molmoact_ros.reasoning.grammar import ACTION_TOKEN_STRINGS

WIDTH = 152064


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def list_text(steps, spaces):
    sep = ', ' if spaces else ','
    lists = ['[' + sep.join(s) + ']' for s in steps]
    return lists[0] if len(steps) == 1 else '[' + sep.join(lists) + ']'


def random_steps(rng, horizon, dim=7):
    return [[rng.choice(ACTION_TOKEN_STRINGS) for _ in range(dim)] for _ in range(horizon)]


def test_whole_lists_tokenize_as_the_concatenated_pieces_for_every_value_in_every_context(parts):
    tok = parts[1].tokenizer
    vocab = ConstraintVocab.from_tokenizer(tok)
    rng = random.Random(1)
    for spaces in (True, False):
        pieces = vocab.action_pieces(spaces)
        index = {}
        for (ci, kind), table in pieces.pieces.items():
            for seq, (vi, c_out, period) in table.items():
                index[(ci, kind, vi, period)] = (seq, c_out)
        for vi, value in enumerate(ACTION_TOKEN_STRINGS):
            for horizon in (1, 2):
                for pos in range(2 * horizon):  # value first / last of its step, in each step
                    steps = random_steps(rng, horizon, dim=2)
                    steps[pos // 2][pos % 2] = value
                    for period in (False, True):
                        text = list_text(steps, spaces) + ('.' if period else '')
                        expected, ci = [], 0
                        flat = [v for s in steps for v in s]
                        for j, v in enumerate(flat):
                            last_in_step, last = j % 2 == 1, j == len(flat) - 1
                            kind = (2 if horizon == 1 else 3) if last else (1 if last_in_step else 0)
                            seq, ci_next = index[(ci, kind, ACTION_TOKEN_STRINGS.index(v), period and last)]
                            expected += seq
                            ci = ci_next
                        opener = enc(tok, ' [' if horizon == 1 else ' [[')
                        assert enc(tok, ' ' + text) == opener + expected, text


def canonical_ids(tok, steps, spaces, period):
    return enc(tok, ' The action is ' + list_text(steps, spaces) + ('.' if period else ''))


def test_canonical_lists_walk_to_completion_and_other_splits_are_rejected(parts):
    tok = parts[1].tokenizer
    vocab = ConstraintVocab.from_tokenizer(tok)
    rng = random.Random(2)
    for spaces in (True, False):
        for horizon in (1, 8):
            canon = ActionConstraint(vocab, horizon=horizon, max_free_tokens=8, spaces=spaces, canonical=True)
            loose = ActionConstraint(vocab, horizon=horizon, max_free_tokens=8, spaces=spaces)
            byte_id = {bs[0]: i for i, bs in enumerate(vocab.token_bytes) if bs is not None and len(bs) == 1}
            for _ in range(12):
                steps = random_steps(rng, horizon)
                period = rng.random() < 0.5
                ids = canonical_ids(tok, steps, spaces, period)
                assert canon.is_done(ids) and loose.is_done(ids)
                # the same text with one multi-byte token of the list split into its single bytes
                opener = enc(tok, ' The action is ' + ('[' if horizon == 1 else '[['))
                assert ids[:len(opener)] == opener
                start = len(opener)
                j = rng.choice([j for j in range(start, len(ids)) if len(vocab.token_bytes[ids[j]]) > 1])
                split = ids[:j] + [byte_id[b] for b in vocab.token_bytes[ids[j]]] + ids[j + 1:]
                assert loose.is_done(split)
                assert not canon.accepts(split)
                # a separate '.' after the list is not the tokenizer's ('].' is one token)
                if not period:
                    assert not canon.accepts(ids + enc(tok, '.')) and loose.is_done(ids + enc(tok, '.'))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31 - 1), horizon=st.sampled_from([1, 2]), spaces=st.booleans(),
       dim=st.sampled_from([1, 3, 7]))
def test_every_allowed_token_extends_a_canonical_list(parts, seed, horizon, spaces, dim):
    """Walk a random canonical list; at each reachable state inside the list, every allowed token t extends
    some canonical tokenization: the prefix + t is a prefix of the tokenization of a list (found by completing
    t's piece with the value whose piece starts that way)."""
    tok = parts[1].tokenizer
    vocab = ConstraintVocab.from_tokenizer(tok)
    rng = random.Random(seed)
    proc = ActionConstraint(vocab, action_dim=dim, horizon=horizon, max_free_tokens=0, spaces=spaces, canonical=True)
    loose = ActionConstraint(vocab, action_dim=dim, horizon=horizon, max_free_tokens=0, spaces=spaces)
    steps = random_steps(rng, horizon, dim)
    period = rng.random() < 0.5
    ids = enc(tok, list_text(steps, spaces) + ('.' if period else ''))
    opener = len(enc(tok, '[' if horizon == 1 else '[['))
    assert proc.is_done(ids)
    checked_others = 0
    for n in [opener] + rng.sample(range(opener + 1, len(ids)), min(4, len(ids) - opener - 1)):
        prefix = ids[:n]
        allowed = proc.allowed_token_ids(prefix, WIDTH).tolist()
        assert ids[n] in allowed
        for t in rng.sample(allowed, min(6, len(allowed))):
            assert extends_canonical(tok, prefix + [t], dim, horizon, spaces), (prefix, t)
        # the check can fail: tokens the loose grammar allows here (other splits) extend no canonical list
        others = sorted(set(loose.allowed_token_ids(prefix, WIDTH).tolist()) - set(allowed) - {vocab.eos_id})
        for t in rng.sample(others, min(3, len(others))):
            assert not extends_canonical(tok, prefix + [t], dim, horizon, spaces), (prefix, t)
            checked_others += 1
    assert checked_others > 0


def extends_canonical(tok, ids, dim, horizon, spaces):
    """Is ``ids`` a prefix of the tokenization of some list? The bytes so far are split into the values
    written, and a partial value completed every way it can be (the rest filled with one value)."""
    vocab = ConstraintVocab.from_tokenizer(tok)
    data = b''.join(vocab.token_bytes[i] for i in ids)
    for values in _completions(data, dim, horizon, spaces):
        for period in (False, True):
            full = enc(tok, list_text([values[i * dim:(i + 1) * dim] for i in range(horizon)], spaces)
                       + ('.' if period else ''))
            if full[:len(ids)] == ids:
                return True
    return False


def _completions(data, dim, horizon, spaces):
    """Value lists whose list text starts with the bytes ``data``."""
    sep = b', ' if spaces else b','
    body = data.lstrip(b'[').replace(b'], [', sep).replace(b'],[', sep)
    parts = body.split(sep)
    done = [p.decode('utf-8') for p in parts[:-1]]
    partial = parts[-1].strip(b'[],. ')
    n_vals = dim * horizon
    fill = ACTION_TOKEN_STRINGS[0]
    for v in ACTION_TOKEN_STRINGS:
        if v.encode('utf-8').startswith(partial):
            vals = done + [v]
            if len(vals) <= n_vals:
                yield vals + [fill] * (n_vals - len(vals))
