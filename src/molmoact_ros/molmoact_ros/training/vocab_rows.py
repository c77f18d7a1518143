"""Training only the vocabulary rows a dataset uses, with the exact full-vocabulary loss.

The native model's embedding (152,064 + 128 rows) and output matrix (152,064 rows) are almost all of a
small model's parameters and of its training time on a CPU (shared notes feasibility.md §10), while a
robot dataset's answers use a few hundred token ids. :class:`VocabRows` makes training cost scale with
those:

* **Output rows.** A set R of ``lm_head`` rows (every id in any answer of the dataset, EOS included) is
  trained; every other row is set to zero once and never updated, so its logit is exactly 0. The
  full-vocabulary log-partition is then ``logsumexp([logits_R, log(N_outside)])`` (N_outside rows each
  contributing ``exp(0)``), and :func:`restricted_cross_entropy` is *exactly* the cross-entropy over all
  152,064 columns of the model whose other rows are zero, computed from |R| columns.
* **Embedding rows.** Only the rows of ids that occur in the examples (prompts, image tokens, answers) are
  trained; the rest keep their values. The trained rows live in small parameters (``emb_rows``,
  ``head_rows``) that the optimizer sees; the big matrices are frozen (no gradient, no optimizer state) and
  are written back from the small ones by :meth:`VocabRows.write_back` before evaluation and saving.

Loss positions are gathered first: the body runs once (``output_hidden_states``), the final-norm hidden
states are taken at the answer positions only, and only there are logits computed.

ROS-free; torch only.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['VocabRows', 'restricted_cross_entropy', 'gather_answer_states', 'restricted_argmax']


def gather_answer_states(hidden: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100):
    """(hidden states predicting each answer token (n, D), their target ids (n,)): position p predicts p+1."""
    shift_labels = labels[:, 1:]
    mask = shift_labels != ignore_index
    return hidden[:, :-1][mask], shift_labels[mask]


def restricted_cross_entropy(states: torch.Tensor, targets: torch.Tensor, head_rows: torch.Tensor,
                             row_ids: torch.Tensor, vocab_size: int, reduction: str = 'mean') -> torch.Tensor:
    """Cross-entropy over the full ``vocab_size`` columns when the output rows outside ``row_ids`` are zero.

    ``states`` (n, D) final hidden states, ``targets`` (n,) ids (each in ``row_ids``), ``head_rows`` (|R|, D)
    the output rows of ``row_ids`` (sorted, unique). Exact: logits outside R are 0, so the log-partition is
    ``logsumexp([states @ head_rows.T, log(vocab_size - |R|)])``.
    """
    logits = states.float() @ head_rows.float().t()
    n_out = vocab_size - row_ids.numel()
    if n_out > 0:
        extra = torch.full((logits.shape[0], 1), math.log(n_out), dtype=logits.dtype, device=logits.device)
        lse = torch.logsumexp(torch.cat([logits, extra], dim=1), dim=1)
    else:
        lse = torch.logsumexp(logits, dim=1)
    slot = torch.searchsorted(row_ids, targets)
    if bool((slot >= row_ids.numel()).any()) or bool((row_ids[slot.clamp(max=row_ids.numel() - 1)] != targets).any()):
        raise ValueError('a target id is outside the trained output rows R')
    nll = lse - logits.gather(1, slot[:, None])[:, 0]
    if reduction == 'mean':
        return nll.mean()
    if reduction == 'sum':
        return nll.sum()
    return nll


def restricted_argmax(states: torch.Tensor, head_rows: torch.Tensor, row_ids: torch.Tensor,
                      vocab_size: int) -> torch.Tensor:
    """The full-vocabulary argmax (first index among ties, as ``torch.argmax``) when rows outside R are zero."""
    logits = states.float() @ head_rows.float().t()
    best, slot = logits.max(dim=1)
    pred = row_ids[slot]
    if vocab_size > row_ids.numel():
        outside = torch.ones(vocab_size, dtype=torch.bool, device=row_ids.device)
        outside[row_ids] = False
        first_out = int(outside.nonzero()[0, 0])
        # The first maximum in id order: an outside id (logit 0) wins when 0 beats R's best, or ties it with
        # a lower id. Among R, ties resolve to the lowest id (row_ids sorted, max returns the first).
        zero_wins = (best < 0) | ((best == 0) & (first_out < pred))
        pred = torch.where(zero_wins, torch.full_like(pred, first_out), pred)
    return pred


class VocabRows(nn.Module):
    """Trainable embedding rows and output rows of a :class:`MolmoActForActionReasoning` (see module doc).

    ``embed_ids``: ids whose embedding rows train (any id of the base or additional vocabulary);
    ``head_ids``: ids whose output rows train (R). :meth:`attach` zeroes the other output rows, freezes the
    two big matrices and routes the embedding lookup through the trainable rows.
    """

    def __init__(self, model: nn.Module, embed_ids: Iterable[int], head_ids: Iterable[int]):
        super().__init__()
        wte = model.model.transformer.wte
        self.vocab = wte.embedding.shape[0]
        self.additional = wte.new_embedding.shape[0] if wte.new_embedding is not None else 0
        self.head_vocab = model.lm_head.weight.shape[0]
        embed = torch.tensor(sorted(set(int(i) for i in embed_ids)), dtype=torch.long)
        head = torch.tensor(sorted(set(int(i) for i in head_ids)), dtype=torch.long)
        if embed.numel() and (embed.min() < 0 or embed.max() >= self.vocab + self.additional):
            raise ValueError('embedding ids out of range')
        if head.numel() == 0 or head.min() < 0 or head.max() >= self.head_vocab:
            raise ValueError('output ids out of range (or none)')
        self.register_buffer('embed_ids', embed, persistent=False)
        self.register_buffer('head_ids', head, persistent=False)
        slots = torch.full((self.vocab + self.additional,), -1, dtype=torch.long)
        slots[embed] = torch.arange(embed.numel())
        self.register_buffer('embed_slot', slots, persistent=False)
        with torch.no_grad():
            self.emb_rows = nn.Parameter(self._table_rows(wte, embed).clone())
            self.head_rows = nn.Parameter(model.lm_head.weight[head].detach().clone())
        self._model = [model]  # not a submodule: its parameters are not this module's
        self._hook = None

    @staticmethod
    def _table_rows(wte, ids: torch.Tensor) -> torch.Tensor:
        vocab = wte.embedding.shape[0]
        base = wte.embedding.detach()[ids.clamp(max=vocab - 1)]
        if wte.new_embedding is None:
            return base
        extra = wte.new_embedding.detach()[(ids - vocab).clamp(min=0)]
        return torch.where((ids >= vocab)[:, None], extra, base)

    @property
    def model(self) -> nn.Module:
        return self._model[0]

    def attach(self) -> 'VocabRows':
        """Zero the output rows outside R, freeze the big matrices, use the trainable embedding rows."""
        model = self.model
        wte = model.model.transformer.wte
        with torch.no_grad():
            keep = model.lm_head.weight[self.head_ids].clone()
            model.lm_head.weight.zero_()
            model.lm_head.weight[self.head_ids] = keep
        for p in (wte.embedding, wte.new_embedding, model.lm_head.weight):
            if p is not None:
                p.requires_grad_(False)
        if self._hook is None:
            self._hook = wte.register_forward_hook(self._embedding_hook)
        return self

    def detach_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _embedding_hook(self, module, args, output):
        ids = args[0]
        slot = self.embed_slot.to(ids.device)[ids.clamp(min=0, max=self.embed_slot.numel() - 1)]
        trained = slot >= 0
        if not bool(trained.any()):
            return output
        rows = self.emb_rows[slot.clamp(min=0)].to(output.dtype)
        return torch.where(trained[..., None], rows, output)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the trained rows into the model's embedding and output matrices (before eval / saving)."""
        model = self.model
        wte = model.model.transformer.wte
        ids = self.embed_ids
        base = ids < self.vocab
        wte.embedding[ids[base]] = self.emb_rows[base].to(wte.embedding.dtype)
        if wte.new_embedding is not None and bool((~base).any()):
            wte.new_embedding[ids[~base] - self.vocab] = self.emb_rows[~base].to(wte.new_embedding.dtype)
        model.lm_head.weight[self.head_ids] = self.head_rows.to(model.lm_head.weight.dtype)

    def loss(self, states: torch.Tensor, targets: torch.Tensor, reduction: str = 'mean') -> torch.Tensor:
        return restricted_cross_entropy(states, targets, self.head_rows, self.head_ids.to(states.device),
                                        self.head_vocab, reduction)

    def argmax(self, states: torch.Tensor) -> torch.Tensor:
        return restricted_argmax(states, self.head_rows, self.head_ids.to(states.device), self.head_vocab)


def ids_in(sequences: Iterable[Sequence[int]], ignore: Optional[int] = None) -> set:
    out: set = set()
    for seq in sequences:
        out.update(int(i) for i in seq if ignore is None or int(i) != ignore)
    return out
