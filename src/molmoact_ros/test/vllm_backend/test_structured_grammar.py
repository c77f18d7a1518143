"""The answer grammar for vLLM's structured outputs (molmoact_ros.vllm_plugin.structured): the depth
stage's llguidance grammar admits exactly the native DepthConstraint's tokens in every state.

The mask comparison needs llguidance (installed with vLLM: .venv-vllm) and no engine; it is skipped where
llguidance is missing. End-to-end greedy decoding under the grammar is in test_vllm_parity.py.
"""

import importlib.util

import numpy as np
import pytest
import torch

from molmoact_ros.vllm_plugin.structured import depth_grammar, id_ranges, token_set

needs_llguidance = pytest.mark.skipif(importlib.util.find_spec('llguidance') is None,
                                      reason='llguidance comes with vLLM (.venv-vllm)')


def test_id_ranges_and_token_sets():
    assert id_ranges([7, 3, 4, 5, 9, 4]) == [(3, 5), (7, 7), (9, 9)]
    assert token_set([7, 3, 4, 5, 9]) == '<[3-5,7,9]>'
    with pytest.raises(ValueError):
        token_set([])


@pytest.fixture(scope='module')
def vocab():
    from molmoact_ros.model.tokenizer import build_molmoact_tokenizer
    from molmoact_ros.reasoning.constraints import ConstraintVocab

    tokenizer = build_molmoact_tokenizer()
    return tokenizer, ConstraintVocab.from_tokenizer(tokenizer)


@needs_llguidance
@pytest.mark.parametrize('free_tokens', [0, 5, 64])
def test_depth_grammar_masks_equal_the_native_constraint(vocab, free_tokens):
    import llguidance
    import llguidance.hf

    from molmoact_ros.reasoning.constraints import DepthConstraint

    tokenizer, v = vocab
    matcher = llguidance.LLMatcher(llguidance.hf.from_tokenizer(tokenizer),
                                   llguidance.LLMatcher.grammar_from_lark(depth_grammar(v)))
    assert not matcher.is_error(), matcher.get_error()
    native = DepthConstraint(v)
    native.reset()
    width = 152064  # the LLM's logits (the tokenizer's added tokens beyond it are never allowed)
    seq = [v.eos_id]  # a prompt
    rng = np.random.default_rng(free_tokens)
    for step in range(64 + 102):
        allowed_native = (native(torch.tensor([seq]), torch.zeros(1, width))[0] > -float('inf')).numpy()
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder='little')
        assert not bits[width:].any()
        np.testing.assert_array_equal(bits[:width].astype(bool), allowed_native, err_msg=f'step {step}')
        allowed = np.nonzero(allowed_native)[0]
        # Random free text (any allowed token: byte pieces of any kind), then the block.
        token = v.depth_start_id if step == free_tokens and v.depth_start_id in allowed else int(rng.choice(allowed))
        assert matcher.consume_token(token), matcher.get_error()
        seq.append(token)
        if token == v.depth_end_id:
            break
    assert seq[-1] == v.depth_end_id and matcher.is_stopped()
    assert seq.count(v.depth_start_id) == 1 and len(seq) - seq.index(v.depth_start_id) == 102
