"""Held-out metrics under teacher forcing: answer-token accuracy and per-part accuracies.

Every answer position gets the model's greedy, grammar-free argmax given the true prefix. Per part:

* depth: the fraction of the 100 ``<DEPTH_k>`` tokens predicted exactly;
* trace end point: the last point of the (first) trace; its x and y are read from the predicted tokens at
  the positions of the label's digits (bytes concatenated, separators dropped); the error is the Euclidean
  distance to the true end point in 0..255 units, over the examples where both numbers read back
  (``trace_end_readable`` is that fraction);
* actions: each value's token pieces (e.g. ``", ð"`` ``"Ł"`` ``"İ"`` ``"ĳ"``) are replaced by the predicted
  tokens at those positions; the concatenated bytes, separators dropped, must be one action token string;
  a value counts when its bin is within +-2 of the label's (an unreadable value counts as a miss).

ROS-free.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..model.tokenizer import bytes_to_unicode
from ..reasoning import grammar

__all__ = ['TokenBytes', 'PartMetrics', 'answer_part_spans']

_SEPARATORS = b' ,[].'


class TokenBytes:
    """The byte string of every token id of a tokenizer (special tokens: their text)."""

    def __init__(self, tokenizer):
        decoder = {c: b for b, c in bytes_to_unicode().items()}
        size = len(tokenizer)
        self.table: List[bytes] = [b''] * size
        special = set(getattr(tokenizer, 'all_special_ids', []))
        added = {v: k for k, v in tokenizer.get_added_vocab().items()}
        for token, idx in tokenizer.get_vocab().items():
            if idx >= size:
                continue
            if idx in added or idx in special:
                self.table[idx] = token.encode('utf-8')
            else:
                try:
                    self.table[idx] = bytes(decoder[c] for c in token)
                except KeyError:
                    self.table[idx] = token.encode('utf-8')

    def __call__(self, ids: Sequence[int]) -> bytes:
        return b''.join(self.table[int(i)] if 0 <= int(i) < len(self.table) else b'' for i in ids)


def answer_part_spans(answer: str, answer_ids: Sequence[int], token_bytes: TokenBytes) -> Optional[dict]:
    """Token index spans (into ``answer_ids``) of the parts of a three-part or actions-only answer:
    ``{'depth': [i, ...], 'trace_end': ((a, b), (a, b)) or None, 'actions': [((a, b), bin), ...]}``.
    None when the tokens' bytes do not spell the answer."""
    data = answer.encode('utf-8')
    pieces = [token_bytes([i]) for i in answer_ids]
    if b''.join(pieces)[:len(data)] != data:
        return None
    starts = np.cumsum([0] + [len(p) for p in pieces])

    def tokens_of(b0: int, b1: int):
        first = int(np.searchsorted(starts, b0, side='right')) - 1
        last = int(np.searchsorted(starts, b1, side='left'))
        return first, max(last, first + 1)

    def byte_pos(ch: int) -> int:
        return len(answer[:ch].encode('utf-8'))

    depth_ids = set()
    spans: dict = {'depth': [], 'trace_end': None, 'actions': []}
    for k, text in enumerate(pieces):
        if re.fullmatch(rb'<DEPTH_\d+>', text):
            spans['depth'].append(k)
            depth_ids.add(k)
    action_at = answer.find('take is')
    # The first numeric list after the depth block is the (primary) trace.
    search_from = answer.find('<DEPTH_END>') + 1 if '<DEPTH_END>' in answer else 0
    m = re.search(r'\[\s*\[[\d\s,\[\]]*\]\s*\]', answer[search_from:(action_at if action_at > 0 else None)])
    if m:
        nums = list(re.finditer(r'\d+', m.group(0)))
        if len(nums) >= 2:
            base = search_from + m.start()
            xs, ys = nums[-2], nums[-1]
            spans['trace_end'] = (tokens_of(byte_pos(base + xs.start()), byte_pos(base + xs.end())),
                                  tokens_of(byte_pos(base + ys.start()), byte_pos(base + ys.end())),
                                  (int(xs.group(0)), int(ys.group(0))))
    if action_at >= 0:
        for v in re.finditer(r'[^\x00-\x7f]+', answer[action_at:]):
            tok = grammar.ACTION_TOKEN_TO_ID.get(v.group(0))
            if tok is None:
                continue
            a, b = action_at + v.start(), action_at + v.end()
            spans['actions'].append((tokens_of(byte_pos(a), byte_pos(b)), grammar.action_bin(tok)))
    return spans


def _read(pred_ids: Sequence[int], token_bytes: TokenBytes) -> str:
    raw = token_bytes(pred_ids)
    raw = bytes(c for c in raw if c not in _SEPARATORS)
    return raw.decode('utf-8', errors='replace')


class PartMetrics:
    """Accumulates teacher-forced metrics over examples (see the module doc)."""

    def __init__(self, token_bytes: TokenBytes, bin_tolerance: int = 2):
        self.tb = token_bytes
        self.tol = bin_tolerance
        self.tokens = self.correct = 0
        self.depth_n = self.depth_ok = 0
        self.trace_n = self.trace_read = 0
        self.trace_err: List[float] = []
        self.act_n = self.act_ok = self.act_exact = 0
        self.eos_n = self.eos_ok = 0

    def add(self, answer: str, label_ids: Sequence[int], pred_ids: Sequence[int]) -> None:
        """``label_ids``: the answer tokens (EOS last); ``pred_ids``: the argmax at each of those positions."""
        label_ids, pred_ids = list(map(int, label_ids)), list(map(int, pred_ids))
        self.tokens += len(label_ids)
        self.correct += sum(int(a == b) for a, b in zip(label_ids, pred_ids))
        self.eos_n += 1
        self.eos_ok += int(pred_ids[-1] == label_ids[-1])
        spans = answer_part_spans(answer, label_ids[:-1], self.tb)
        if spans is None:
            return
        for k in spans['depth']:
            self.depth_n += 1
            self.depth_ok += int(pred_ids[k] == label_ids[k])
        if spans['trace_end'] is not None:
            (xa, xb), (ya, yb), (tx, ty) = spans['trace_end']
            self.trace_n += 1
            try:
                px, py = int(_read(pred_ids[xa:xb], self.tb)), int(_read(pred_ids[ya:yb], self.tb))
            except ValueError:
                px = py = None
            if px is not None:
                self.trace_read += 1
                self.trace_err.append(float(np.hypot(px - tx, py - ty)))
        for (a, b), true_bin in spans['actions']:
            self.act_n += 1
            tok = grammar.ACTION_TOKEN_TO_ID.get(_read(pred_ids[a:b], self.tb))
            if tok is not None:
                diff = abs(grammar.action_bin(tok) - true_bin)
                self.act_ok += int(diff <= self.tol)
                self.act_exact += int(diff == 0)

    def result(self) -> Dict[str, Optional[float]]:
        def frac(a, b):
            return float(a) / b if b else None
        return {
            'answer_token_accuracy': frac(self.correct, self.tokens),
            'depth_code_accuracy': frac(self.depth_ok, self.depth_n),
            'trace_end_error': float(np.mean(self.trace_err)) if self.trace_err else None,
            'trace_end_readable': frac(self.trace_read, self.trace_n),
            f'action_bin_accuracy_pm{self.tol}': frac(self.act_ok, self.act_n),
            'action_bin_exact': frac(self.act_exact, self.act_n),
            'eos_accuracy': frac(self.eos_ok, self.eos_n),
            'answer_tokens': self.tokens,
        }
