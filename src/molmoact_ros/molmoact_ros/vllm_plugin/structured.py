"""The answer grammar as llguidance grammars, for vLLM's structured outputs (``backend='guidance'``).

The native constraints (:mod:`molmoact_ros.reasoning.constraints`) work on token ids: free text is any
regular (byte-level) token without a bracket, at most ``max_free_tokens`` of them; the structure's markers
and codes are single token ids. A grammar over *text* (a regex, or xgrammar's EBNF) cannot say that: it
would also accept ``<DEPTH_START>`` spelled with several byte tokens, and it restricts free text to valid
UTF-8. llguidance's Lark dialect names token ids (``<[id]>``, ranges ``<[a-b,c-d]>``), so the grammars
here are written at the token level and admit exactly the native constraint's tokens in every state.

So far: the depth stage (:func:`depth_grammar`). Pass it as
``SamplingParams(structured_outputs=StructuredOutputsParams(grammar=depth_grammar(vocab)))`` to an engine
started with ``structured_outputs_config={'backend': 'guidance'}``.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

from ..reasoning.constraints import ConstraintVocab
from ..reasoning.grammar import N_DEPTH_CODES_PER_IMAGE
from ..model.tokenizer import NUM_DEPTH_CODES


def id_ranges(ids: Iterable[int]) -> List[Tuple[int, int]]:
    """Sorted token ids as inclusive (first, last) runs."""
    runs: List[Tuple[int, int]] = []
    for i in sorted(set(int(i) for i in ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def token_set(ids: Iterable[int]) -> str:
    """An llguidance token-set lexeme, e.g. ``<[5-9,12]>``."""
    runs = id_ranges(ids)
    if not runs:
        raise ValueError('empty token set')
    return '<[' + ','.join(f'{a}-{b}' if a != b else f'{a}' for a, b in runs) + ']>'


def free_text_ids(vocab: ConstraintVocab) -> Sequence[int]:
    """The tokens free text may use: regular byte-level tokens without ``[`` or ``]``."""
    brackets = set(vocab.bracket_ids)
    return [i for i in vocab.byte_ids if i not in brackets]


def depth_grammar(vocab: ConstraintVocab, *, max_free_tokens: int = 64,
                  n_codes: int = N_DEPTH_CODES_PER_IMAGE) -> str:
    """The depth stage: up to ``max_free_tokens`` free-text tokens, ``<DEPTH_START>``, exactly ``n_codes``
    depth codes, ``<DEPTH_END>`` (where :class:`~molmoact_ros.reasoning.constraints.DepthConstraint`
    ends the stage)."""
    codes = token_set(range(vocab.depth_code_base_id, vocab.depth_code_base_id + NUM_DEPTH_CODES))
    lines = ['%llguidance {}',
             f'start: free <[{vocab.depth_start_id}]> {codes}{{{n_codes}}} <[{vocab.depth_end_id}]>']
    if max_free_tokens:
        lines.append(f'free: {token_set(free_text_ids(vocab))}{{0,{max_free_tokens}}}')
    else:
        lines[1] = lines[1].replace('start: free ', 'start: ')
    return '\n'.join(lines) + '\n'
