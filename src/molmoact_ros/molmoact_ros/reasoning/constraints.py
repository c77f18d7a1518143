"""Grammar-constrained decoding for MolmoAct: one ``transformers`` logits processor per stage.

Each processor masks the logits so that the generated answer stays well formed (the grammar of
:mod:`molmoact_ros.reasoning.grammar`):

* :class:`DepthConstraint`: free text (the model's own sentence) until ``<DEPTH_START>``; inside the block
  only ``<DEPTH_0..127>``, and after exactly 100 codes only ``<DEPTH_END>``; then EOS.
* :class:`TraceConstraint`: free text until a ``[`` opens the trace; then ``[[x, y], ...]`` with 1..5 points
  (``max_points``), integer values 0..255 without leading zeros, at most one space at each separator
  (both ``[[59,153],[74,120]]`` and ``[[59, 153], [74, 120]]``); ``num_traces=2`` for fine-tunes (free text
  between the two lists); then an optional ``.`` and EOS.
* :class:`ActionConstraint`: free text until ``[``; then exactly ``action_dim`` action token strings per step
  separated by ``,`` (one optional space around separators and brackets), one list (``horizon=1``) or a
  list of ``horizon`` lists; then an optional ``.`` and EOS. ``canonical=True`` (the engine's default,
  ``EngineConfig.canonical_actions``): inside the list only the token sequences the model's tokenizer gives
  the released text (``[a, b, ...]``, ``[[...], [...]]``; ``[a,b]`` with ``spaces=False``) — the
  tokenization a trained model emits, ~3.2 tokens per value — instead of any split of the same bytes; see
  :class:`CanonicalActionPieces`.
* :class:`AnswerConstraint`: the stages in sequence, for one monolithic generation.

Free text before each part is the model's own wording (any regular token without a bracket: the released
sentences have none, and a ``[`` there would open the structure), at most ``max_free_tokens`` tokens
(default 64; the longest released sentence, the multi-view action sentence, is about 30), after which the
part's opener is forced (``<DEPTH_START>``, or an optional space and ``[``). Special tokens other than the
grammar's are never allowed; EOS only once the last stage is complete.

**How it works.** The grammar runs as a state machine over the *bytes* of the generated token ids
(byte-level BPE: a token may hold several characters, e.g. ``],[`` or ``]].``, or part of a UTF-8
character: the action value ``ðŁİĳ`` is 8 bytes, usually 4 tokens, whose boundaries depend on the
neighbouring separator, e.g. ``, ð`` -> ``,`` ``ĠÃ`` ``°``). Each step the processor walks only the newly
generated token through the machine (a few byte steps), then applies the set of allowed next tokens for
the new state, taken from a cache. Cache entries are computed once per grammar and tokenizer (shared by
all processor instances): the tokens allowed in a state are found by walking the candidate tokens (those
whose first byte the state accepts) through the machine with the counters (values left in the step,
steps left, points left, codes left) relaxed, then re-walking the few tokens whose walk checked a counter
with the real counters, clamped to a bound that cannot change the outcome. Nothing re-parses text.

**Canonical action lists** are walked token by token instead (a stage may be token-level in some states:
:meth:`Stage.token_level`): a trie of the canonical token pieces, one piece per value with its separator,
chosen by the counters (a value inside a step, at a step's end, at the list's end with or without ``.``).

**Forced runs.** Where the grammar allows exactly one token (a marker, a separator, the last byte piece of an
action string) that token is *forced*; :meth:`GrammarConstraint.forced_run` returns the run of forced tokens
after a prefix (cached per mask key, bounded, ending where two or more tokens are allowed or the stages are
complete: EOS and the tail ``.`` are never forced). The engine feeds a chosen token plus its run in one
forward pass (grammar fast-forwarding); greedy decoding would pick the same tokens one pass each.

Processors are batch-aware (one state per row; the first call of a ``generate`` sees the prompt) and
handle beam reordering by re-walking a row whose previous token changed. Use a fresh instance (or
``reset()``) per ``generate`` call. Do not combine with ``min_new_tokens`` (it forbids EOS where the
grammar requires it). :meth:`stopping_criteria` stops a row as soon as its stages are complete, saving
the EOS step.

ROS-free; torch and transformers only.
"""

from __future__ import annotations

import threading
import unicodedata
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from transformers import LogitsProcessor, StoppingCriteria

from ..model.tokenizer import (ACTION_TOKEN_IDS, NUM_DEPTH_CODES, QWEN2_VOCAB_SIZE, bytes_to_unicode,
                               molmoact_token_ids)
from .grammar import MAX_TRACE_POINTS, N_DEPTH_CODES_PER_IMAGE, TRACE_COORD_MAX

_SPACE, _COMMA, _OPEN, _CLOSE, _PERIOD = 0x20, 0x2C, 0x5B, 0x5D, 0x2E

# --- vocabulary ------------------------------------------------------------------------------------


class ConstraintVocab:
    """What the constraints need from the tokenizer, computed once per tokenizer (:meth:`from_tokenizer`
    caches it): the bytes of every regular token, the special ids, the UTF-8 bytes of the 256 action
    token strings, and a first-byte index of the tokens. ``encode`` (text -> ids, set by
    :meth:`from_tokenizer`) derives the canonical action pieces (:meth:`action_pieces`) on first use."""

    def __init__(self, token_bytes: Sequence[Optional[bytes]], *, eos_id: int, depth_start_id: int,
                 depth_end_id: int, depth_code_base_id: int, action_values: Sequence[bytes],
                 encode: Optional[Any] = None):
        self.token_bytes: Tuple[Optional[bytes], ...] = tuple(token_bytes)
        self.size = len(self.token_bytes)
        self.eos_id = eos_id
        self.depth_start_id = depth_start_id
        self.depth_end_id = depth_end_id
        self.depth_code_base_id = depth_code_base_id
        self.action_values: Tuple[bytes, ...] = tuple(action_values)
        self.byte_ids: Tuple[int, ...] = tuple(i for i, b in enumerate(self.token_bytes) if b)
        self.bracket_ids: Tuple[int, ...] = tuple(
            i for i in self.byte_ids if b'[' in self.token_bytes[i] or b']' in self.token_bytes[i])
        by_first: Dict[int, List[int]] = {}
        for i in self.byte_ids:
            by_first.setdefault(self.token_bytes[i][0], []).append(i)
        self.by_first_byte: Dict[int, Tuple[int, ...]] = {k: tuple(v) for k, v in by_first.items()}
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[list(self.byte_ids)] = True
        self.byte_mask = mask  # regular (byte) tokens
        self._candidates: Dict[frozenset, Dict[int, Tuple[int, ...]]] = {}
        self._lock = threading.Lock()
        self._encode = encode  # text -> token ids (the tokenizer's own), for the canonical action pieces
        self._pieces: Dict[bool, 'CanonicalActionPieces'] = {}

    def action_pieces(self, spaces: bool) -> 'CanonicalActionPieces':
        """The canonical token pieces of the action values (see :class:`CanonicalActionPieces`), computed
        once per separator style with the tokenizer this vocabulary was built from."""
        with self._lock:
            got = self._pieces.get(bool(spaces))
            if got is None:
                if self._encode is None:
                    raise ValueError('canonical action tokenization needs a vocabulary built with an encoder '
                                     '(ConstraintVocab.from_tokenizer)')
                texts = [v.decode('utf-8') for v in self.action_values]
                got = CanonicalActionPieces(texts, self._encode, spaces)
                self._pieces[bool(spaces)] = got
            return got

    def depth_code_id(self, code: int) -> int:
        return self.depth_code_base_id + code

    def is_depth_code(self, token_id: int) -> bool:
        return 0 <= token_id - self.depth_code_base_id < NUM_DEPTH_CODES

    def candidates(self, alphabet: frozenset) -> Dict[int, Tuple[int, ...]]:
        """Tokens that can be walked inside a structure whose bytes are ``alphabet`` (by first byte): those
        made of alphabet bytes only, and those whose alphabet prefix holds a ``]`` (which can close the
        structure, after which any byte may follow)."""
        with self._lock:
            got = self._candidates.get(alphabet)
            if got is None:
                by_first: Dict[int, List[int]] = {}
                for i in self.byte_ids:
                    bs = self.token_bytes[i]
                    j = 0
                    while j < len(bs) and bs[j] in alphabet:
                        j += 1
                    if j == len(bs) or (j > 0 and _CLOSE in bs[:j]):
                        by_first.setdefault(bs[0], []).append(i)
                got = {k: tuple(v) for k, v in by_first.items()}
                self._candidates[alphabet] = got
            return got

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> 'ConstraintVocab':
        """Build (or return the cached) vocabulary for a MolmoAct tokenizer (the project's
        ``build_molmoact_tokenizer()`` or a released checkpoint's)."""
        with _VOCAB_LOCK:
            try:
                cached = _VOCAB_CACHE.get(tokenizer)
            except TypeError:
                cached = None
            if cached is not None:
                return cached
        vocab = cls._build(tokenizer)
        with _VOCAB_LOCK:
            try:
                _VOCAB_CACHE[tokenizer] = vocab
            except TypeError:
                pass
        return vocab

    @classmethod
    def _build(cls, tokenizer: Any) -> 'ConstraintVocab':
        ids = molmoact_token_ids(tokenizer)
        decoder = {c: b for b, c in bytes_to_unicode().items()}
        n_regular = int(getattr(tokenizer, 'vocab_size', QWEN2_VOCAB_SIZE))
        strings = tokenizer.convert_ids_to_tokens(list(range(n_regular)))
        token_bytes: List[Optional[bytes]] = []
        for s in strings:
            try:
                token_bytes.append(bytes(decoder[c] for c in s) if s else None)
            except KeyError:  # not a byte-level string: never generated by the grammar
                token_bytes.append(None)
        token_bytes.extend([None] * (len(tokenizer) - n_regular))
        action_values = []
        for s in tokenizer.convert_ids_to_tokens(list(ACTION_TOKEN_IDS)):
            action_values.append(s.encode('utf-8'))  # the token STRING as text, not the token's bytes
        ref = weakref.ref(tokenizer)  # the vocabulary is cached per tokenizer: no strong reference back

        def encode(text: str) -> Tuple[int, ...]:
            tok = ref()
            if tok is None:
                raise RuntimeError('the tokenizer of this vocabulary is gone')
            return tuple(tok.encode(text, add_special_tokens=False))

        return cls(token_bytes, eos_id=ids.eos, depth_start_id=ids.depth_start, depth_end_id=ids.depth_end,
                   depth_code_base_id=ids.depth_code_base, action_values=action_values, encode=encode)


# Kinds of canonical piece: where the value stands (what separator follows it).
PIECE_MID, PIECE_STEP, PIECE_END = 0, 1, 2


class CanonicalActionPieces:
    """How the model's tokenizer splits an action list into tokens, value by value.

    The text is the released form: ``[v, v, ...]`` / ``[[v, v], [v, v]]`` with ``spaces`` (``", "`` and
    ``"], ["``), or ``[v,v]`` / ``[[v,v],[v,v]]`` without; then an optional ``.``. The Qwen2 pre-tokenizer
    cuts it into pieces that BPE never merges across: every value starts with a letter (a byte-level string),
    and a letter run takes ONE preceding non-letter character with it (`` ?`` / ``,``), unless a punctuation
    run before has taken that character (``"»,"``: a value ending in a symbol swallows an unspaced comma;
    ``"], ["`` and ``"],["`` are punctuation runs). So the list is a sequence of *pieces*, one per value:
    ``c_in + value + separator`` minus the separator's last character where the next value's letter run takes
    it (``c_out``: the space of ``", "``; the ``,`` of ``","`` after a value ending in a letter or digit).
    Each piece is tokenized on its own with the real tokenizer; ``pieces[(c_in, kind)]`` maps the token tuple
    to ``(value index, c_out, period)``. The opener (``[`` or ``[[``) ends its own token (as after a space or
    in ``[[``). The test suite checks, for every value in every context, that tokenizing a whole list gives the
    concatenation of the pieces."""

    def __init__(self, values: Sequence[str], encode: Any, spaces: bool):
        self.spaces = bool(spaces)
        sep = ', ' if spaces else ','
        step_sep = '], [' if spaces else '],['
        carries = ('', sep[-1])
        self.carries = carries
        self.pieces: Dict[Tuple[int, int], Dict[Tuple[int, ...], Tuple[int, int, bool]]] = {}
        for ci, c_in in enumerate(carries):
            for kind, endings in ((PIECE_MID, ((sep, False),)), (PIECE_STEP, ((step_sep, False),)),
                                  (PIECE_END, ((']', False), (']', True)))):
                table: Dict[Tuple[int, ...], Tuple[int, int, bool]] = {}
                for vi, value in enumerate(values):
                    for ending, period in endings:
                        carry = kind == PIECE_MID and (spaces or unicodedata.category(value[-1])[0] in 'LN')
                        text = c_in + value + (ending[:-1] if carry else ending)
                        table[tuple(encode(text + ('.' if period else '')))] = (vi, 1 if carry else 0, period)
                self._check_prefix_free(table)
                self.pieces[(ci, kind)] = table
        # the list end of horizon > 1: ']]' (same pieces with one more ']')
        for ci, c_in in enumerate(carries):
            table = {}
            for vi, value in enumerate(values):
                for period in (False, True):
                    table[tuple(encode(c_in + value + ']]' + ('.' if period else '')))] = (vi, 0, period)
            self._check_prefix_free(table)
            self.pieces[(ci, PIECE_END + 1)] = table

    @staticmethod
    def _check_prefix_free(table: Dict[Tuple[int, ...], Any]) -> None:
        keys = sorted(table)
        for a, b in zip(keys, keys[1:]):
            if b[:len(a)] == a:
                raise ValueError('canonical action pieces are not prefix-free for this tokenizer')


_VOCAB_CACHE: 'weakref.WeakKeyDictionary[Any, ConstraintVocab]' = weakref.WeakKeyDictionary()
_VOCAB_LOCK = threading.Lock()

# --- stage grammars --------------------------------------------------------------------------------
# A stage state is (lex, ctr): ``lex`` a small hashable tuple (the cache key), ``ctr`` a tuple of counters
# (None in relaxed walks, where every counter check passes). ``step`` (a byte) and ``special`` (a non-byte
# id) return (lex, ctr, uses) or None (not allowed); ``uses`` counts the counter reads and decrements the
# step made (each by one); lex == COMPLETE means the stage ended with this byte / token.
#
# Why clamping the counters is exact: a token whose relaxed walk uses counters m times compares each
# counter (> 0, > 1 or == 1) after at most m - 1 decrements, so a counter larger than m + 1 behaves like
# m + 1; the mask of (lex, counters clamped to m_max + 1) is therefore the mask of the real state.

COMPLETE = ('complete',)
MAX_FORCED_RUN = 64  # bound on one forced run (a fast-forward chunk); longer runs continue in the next chunk
_UNSET = object()
_FREE = 0
_FORCED = 1


class Stage:
    """One part of the answer: free text, then a structure."""

    name = 'stage'
    alphabet: frozenset = frozenset()  # bytes the structure accepts
    tail_period = True  # standalone: a '.' may follow the structure before EOS

    def __init__(self, max_free_tokens: int):
        if max_free_tokens < 0:
            raise ValueError('max_free_tokens must be >= 0')
        self.max_free_tokens = int(max_free_tokens)

    def start(self) -> Tuple[tuple, tuple]:
        raise NotImplementedError

    def forced(self, lex: tuple) -> tuple:
        return (_FORCED, 0)

    def is_free(self, lex: tuple) -> bool:
        return lex[0] == _FREE

    def step(self, lex: tuple, ctr: Optional[tuple], b: int):
        raise NotImplementedError

    def special(self, lex: tuple, ctr: Optional[tuple], token_id: int):
        return None

    def specials(self, lex: tuple) -> Tuple[int, ...]:
        """Special (non-byte) ids that may be accepted in ``lex``."""
        return ()

    def token_level(self, lex: tuple) -> bool:
        """True where the stage walks whole tokens (:meth:`token`) instead of their bytes."""
        return False

    def token(self, lex: tuple, ctr: Optional[tuple], token_id: int):
        """A whole regular token in a token-level state: (lex, ctr, uses) or None, as :meth:`step`."""
        return None

    def token_candidates(self, lex: tuple) -> Tuple[int, ...]:
        """The tokens that may be accepted in a token-level state (whatever the counters)."""
        return ()

    def token_successors(self, lex: tuple) -> List[tuple]:
        """Every lex (or COMPLETE) a token can lead to from a token-level state (for warm-up)."""
        return []

    def max_tokens(self) -> int:
        """Upper bound on the tokens of this stage (free text + structure)."""
        raise NotImplementedError

    def signature(self) -> tuple:
        raise NotImplementedError


class DepthStage(Stage):
    name = 'depth'
    tail_period = False

    def __init__(self, vocab: ConstraintVocab, max_free_tokens: int = 64, n_codes: int = N_DEPTH_CODES_PER_IMAGE):
        super().__init__(max_free_tokens)
        self.vocab = vocab
        self.n_codes = n_codes
        self._in = (2,)
        self._code_ids = tuple(vocab.depth_code_id(c) for c in range(NUM_DEPTH_CODES))

    def start(self):
        return ((_FREE,) if self.max_free_tokens else (_FORCED,)), (self.n_codes,)

    def forced(self, lex):
        return (_FORCED,)

    def step(self, lex, ctr, b):
        return (lex, ctr, 0) if lex[0] == _FREE and b != _OPEN and b != _CLOSE else None

    def special(self, lex, ctr, t):
        v = self.vocab
        if lex[0] != 2:
            return (self._in, ctr, 0) if t == v.depth_start_id else None
        if v.is_depth_code(t):
            if ctr is None:
                return (lex, None, 1)
            return (lex, (ctr[0] - 1,), 1) if ctr[0] > 0 else None
        if t == v.depth_end_id:
            if ctr is None or ctr[0] == 0:
                return (COMPLETE, ctr, 1)
        return None

    def specials(self, lex):
        if lex[0] != 2:
            return (self.vocab.depth_start_id,)
        return self._code_ids + (self.vocab.depth_end_id,)

    def max_tokens(self):
        return self.max_free_tokens + self.n_codes + 2

    def signature(self):
        return ('depth', self.max_free_tokens, self.n_codes)


# Trace phases (lex = (phase, sp, numval, trace_index)).
_T_O1, _T_P0, _T_X, _T_XS, _T_C1, _T_Y, _T_YS, _T_PC, _T_C2 = range(2, 11)


class TraceStage(Stage):
    name = 'trace'
    alphabet = frozenset(b'0123456789 ,[]')

    def __init__(self, max_free_tokens: int = 64, num_traces: int = 1, max_points: int = MAX_TRACE_POINTS,
                 max_value: int = TRACE_COORD_MAX, spaces: bool = True):
        super().__init__(max_free_tokens)
        if num_traces < 1 or max_points < 1 or max_value < 0:
            raise ValueError('num_traces and max_points must be >= 1, max_value >= 0')
        self.num_traces, self.max_points, self.max_value, self.spaces = num_traces, max_points, max_value, spaces

    def start(self, trace_index: int = 0):
        lex = (_FREE, 0, 0, trace_index) if self.max_free_tokens else (_FORCED, 0, 0, trace_index)
        return lex, (self.max_points,)

    def forced(self, lex):
        return (_FORCED, 0, 0, lex[3])

    def step(self, lex, ctr, b):
        phase, sp, val, ti = lex
        if phase == _FREE:
            if b == _OPEN:
                return (_T_O1, 0, 0, ti), ctr, 0
            return (lex, ctr, 0) if b != _CLOSE else None
        if b == _SPACE:
            if not self.spaces:
                return None
            if phase in (_T_X, _T_Y):
                return ((_T_XS if phase == _T_X else _T_YS), 1, 0, ti), ctr, 0
            if sp or phase in (_T_XS, _T_YS):
                return None
            return (phase, 1, val, ti), ctr, 0
        if phase == _FORCED or phase == _T_C2:
            return (((_T_P0 if phase == _T_C2 else _T_O1), 0, 0, ti), ctr, 0) if b == _OPEN else None
        if phase == _T_O1:
            return ((_T_P0, 0, 0, ti), ctr, 0) if b == _OPEN else None
        if 0x30 <= b <= 0x39:
            d = b - 0x30
            if phase == _T_P0 or phase == _T_C1:
                return ((_T_X if phase == _T_P0 else _T_Y), 0, d, ti), ctr, 0
            if phase == _T_X or phase == _T_Y:
                v = val * 10 + d
                if val == 0 or v > self.max_value:
                    return None
                return (phase, 0, v, ti), ctr, 0
            return None
        if b == _COMMA:
            if phase == _T_X or phase == _T_XS:
                return (_T_C1, 0, 0, ti), ctr, 0
            if phase == _T_PC:
                if ctr is None:
                    return (_T_C2, 0, 0, ti), None, 1
                return ((_T_C2, 0, 0, ti), ctr, 1) if ctr[0] > 0 else None
            return None
        if b == _CLOSE:
            if phase == _T_Y or phase == _T_YS:
                return (_T_PC, 0, 0, ti), (None if ctr is None else (ctr[0] - 1,)), 1
            if phase == _T_PC:  # the trace ends (>= 1 point by construction)
                if ti + 1 < self.num_traces:
                    lex2, ctr2 = self.start(ti + 1)
                    return lex2, ctr2, 0
                return COMPLETE, ctr, 0
        return None

    def max_tokens(self):
        per_point = 12 if self.spaces else 8
        return self.num_traces * (self.max_free_tokens + 4 + self.max_points * per_point)

    def signature(self):
        return ('trace', self.max_free_tokens, self.num_traces, self.max_points, self.max_value, self.spaces)


# Action phases (lex = (phase, sp, node)); ctr = (values left in the step, steps left). Canonical mode:
# lex = (_A_TOK, carry index, token-trie node or -1 at a piece start).
_A_OO, _A_RO, _A_V, _A_VS, _A_AC, _A_RC, _A_ARC, _A_TOK = range(2, 10)


class ActionStage(Stage):
    """Free text, then the action list. ``canonical``: inside the list only the token sequences the model's
    tokenizer gives for the released text form (``spaces``: ``[a, b]`` / ``[[a, b], [c, d]]``, else
    ``[a,b]`` / ``[[a,b],[c,d]]``; then an optional ``.`` in the same piece), as a token-level trie of the
    :class:`CanonicalActionPieces`; otherwise any token split of the bytes, with one optional space around
    separators and brackets."""

    name = 'actions'

    def __init__(self, vocab: ConstraintVocab, action_dim: int = 7, horizon: int = 1, max_free_tokens: int = 64,
                 spaces: bool = True, canonical: bool = False):
        super().__init__(max_free_tokens)
        if action_dim < 1 or horizon < 1:
            raise ValueError('action_dim and horizon must be >= 1')
        self.action_dim, self.horizon, self.spaces = action_dim, horizon, spaces
        self.canonical = bool(canonical)
        if self.canonical:
            self.tail_period = False  # the '.' is part of the last piece (e.g. the token '].')
            self._build_token_tries(vocab.action_pieces(spaces))
        # Byte trie of the 256 action strings (UTF-8 of the token strings).
        children: List[Dict[int, int]] = [{}]
        terminal = [False]
        for value in vocab.action_values:
            node = 0
            for b in value:
                nxt = children[node].get(b)
                if nxt is None:
                    nxt = len(children)
                    children.append({})
                    terminal.append(False)
                    children[node][b] = nxt
                node = nxt
            terminal[node] = True
        self._children = tuple(children)
        self._terminal = tuple(terminal)
        self._max_value_len = max(len(v) for v in vocab.action_values)
        self.alphabet = frozenset(b' ,[]').union(*(set(v) for v in vocab.action_values))

    def start(self):
        lex = (_FREE, 0, 0) if self.max_free_tokens else (_FORCED, 0, 0)
        return lex, (self.action_dim, self.horizon)

    def forced(self, lex):
        return (_FORCED, 0, 0)

    # -- canonical mode: a token trie per (carry, piece kind) --
    def _build_token_tries(self, pieces: CanonicalActionPieces) -> None:
        end = PIECE_END if self.horizon == 1 else PIECE_END + 1
        kinds = [end]
        if self.action_dim > 1:
            kinds.append(PIECE_MID)
        if self.horizon > 1:
            kinds.append(PIECE_STEP)
        self._end_kind = end
        self._kinds = tuple(kinds)
        children: List[Dict[int, int]] = []
        leaf: List[Optional[Tuple[int, int]]] = []
        roots: Dict[Tuple[int, int], Dict[int, int]] = {}
        for ci in range(len(pieces.carries)):
            for kind in kinds:
                root: Dict[int, int] = {}
                for seq, (_, c_out, _) in pieces.pieces[(ci, kind)].items():
                    level = root
                    for j, t in enumerate(seq):
                        nxt = level.get(t)
                        if nxt is None:
                            nxt = len(children)
                            children.append({})
                            leaf.append(None)
                            level[t] = nxt
                        level = children[nxt]
                    leaf[nxt] = (c_out, kind)
                roots[(ci, kind)] = root
        self._tok_children = tuple(children)
        self._tok_leaf = tuple(leaf)
        self._tok_roots = roots
        self._root_union = {ci: tuple(sorted(set().union(*(roots[(ci, k)] for k in kinds))))
                            for ci in range(len(pieces.carries))}

    def _kind(self, ctr: tuple) -> int:
        if ctr[0] > 1:
            return PIECE_MID
        return PIECE_STEP if ctr[1] > 1 else self._end_kind

    def token_level(self, lex):
        return lex[0] == _A_TOK

    def token(self, lex, ctr, t):
        _, ci, node = lex
        uses = 0
        if node < 0:  # a piece starts: its kind (what separator ends it) is read from the counters
            uses = 1
            if ctr is None:
                nxt = next((self._tok_roots[(ci, k)][t] for k in self._kinds if t in self._tok_roots[(ci, k)]),
                           None)
            else:
                nxt = self._tok_roots[(ci, self._kind(ctr))].get(t)
        else:
            nxt = self._tok_children[node].get(t)
        if nxt is None:
            return None
        info = self._tok_leaf[nxt]
        if info is None:
            return (_A_TOK, ci, nxt), ctr, uses
        c_out, kind = info
        if kind == self._end_kind:
            return COMPLETE, ctr, uses + 1
        if ctr is not None:
            ctr = (ctr[0] - 1, ctr[1]) if kind == PIECE_MID else (self.action_dim, ctr[1] - 1)
        return (_A_TOK, c_out, -1), ctr, uses + 1

    def token_candidates(self, lex):
        _, ci, node = lex
        return self._root_union[ci] if node < 0 else tuple(self._tok_children[node])

    def token_successors(self, lex):
        _, ci, node = lex
        levels = [self._tok_roots[(ci, k)] for k in self._kinds] if node < 0 else [self._tok_children[node]]
        out = []
        for level in levels:
            for nxt in level.values():
                info = self._tok_leaf[nxt]
                if info is None:
                    out.append((_A_TOK, ci, nxt))
                else:
                    out.append(COMPLETE if info[1] == self._end_kind else (_A_TOK, info[0], -1))
        return out

    def _canonical_step(self, lex, ctr, b):
        phase = lex[0]
        opened = (_A_OO, 0, 0) if self.horizon > 1 else (_A_TOK, 0, -1)
        if phase == _FREE:
            if b == _OPEN:
                return opened, ctr, 0
            return (lex, ctr, 0) if b != _CLOSE else None
        if phase == _FORCED:
            return (opened, ctr, 0) if b == _OPEN else None
        if phase == _A_OO:
            return ((_A_TOK, 0, -1), ctr, 0) if b == _OPEN else None
        return None  # a token-level state: the opener ends its token

    def _value_end(self, b, ctr):
        """',' or ']' right after a value."""
        if b == _COMMA:
            if ctr is None:
                return (_A_AC, 0, 0), None, 1
            return ((_A_AC, 0, 0), (ctr[0] - 1, ctr[1]), 1) if ctr[0] > 1 else None
        # b == ']': the step closes
        if ctr is not None and ctr[0] != 1:
            return None
        if self.horizon == 1:
            return COMPLETE, ctr, 1
        return (_A_RC, 0, 0), ctr, 1

    def step(self, lex, ctr, b):
        if self.canonical:
            return self._canonical_step(lex, ctr, b)
        phase, sp, node = lex
        if phase == _FREE:
            if b == _OPEN:
                return ((_A_OO if self.horizon > 1 else _A_RO), 0, 0), ctr, 0
            return (lex, ctr, 0) if b != _CLOSE else None
        if phase == _A_V:
            nxt = self._children[node].get(b)
            if nxt is not None:
                return (_A_V, 0, nxt), ctr, 0
            if not self._terminal[node]:
                return None
            if b == _SPACE:
                return ((_A_VS, 1, 0), ctr, 0) if self.spaces else None
            if b == _COMMA or b == _CLOSE:
                return self._value_end(b, ctr)
            return None
        if b == _SPACE:
            if not self.spaces or sp or phase == _A_VS:
                return None
            return (phase, 1, 0), ctr, 0
        if phase == _A_RO or phase == _A_AC:
            nxt = self._children[0].get(b)
            return ((_A_V, 0, nxt), ctr, 0) if nxt is not None else None
        if phase == _A_VS:
            return self._value_end(b, ctr) if b == _COMMA or b == _CLOSE else None
        if phase == _FORCED:
            return (((_A_OO if self.horizon > 1 else _A_RO), 0, 0), ctr, 0) if b == _OPEN else None
        if phase == _A_OO or phase == _A_ARC:
            return ((_A_RO, 0, 0), ctr, 0) if b == _OPEN else None
        if phase == _A_RC:
            if b == _COMMA:
                if ctr is None:
                    return (_A_ARC, 0, 0), None, 1
                return ((_A_ARC, 0, 0), (self.action_dim, ctr[1] - 1), 1) if ctr[1] > 1 else None
            if b == _CLOSE:
                return (COMPLETE, ctr, 1) if ctr is None or ctr[1] == 1 else None
        return None

    def max_tokens(self):
        per_value = self._max_value_len + 3
        return self.max_free_tokens + 2 + self.horizon * (self.action_dim * per_value + 3)

    def signature(self):
        return ('actions', self.max_free_tokens, self.action_dim, self.horizon, self.spaces, self.canonical)


# --- compiled grammar: stages in sequence + tail, with the mask caches -----------------------------
# Runner state: (k, lex, ctr, free) with k the stage index; k == n: tail (lex = (period_seen,)),
# k == n + 1: done (EOS seen).

@dataclass
class _Mask:
    allow_idx: Optional[torch.Tensor]  # allowed ids (small sets)
    forbid: Optional[torch.Tensor]  # bool mask of forbidden ids (large sets)
    n_allowed: int


class _Grammar:
    def __init__(self, vocab: ConstraintVocab, stages: Tuple[Stage, ...]):
        if not stages:
            raise ValueError('at least one stage')
        self.vocab = vocab
        self.stages = stages
        self.n = len(stages)
        self.tail_period = stages[-1].tail_period
        self._lex_cache: Dict[tuple, Tuple[Tuple[int, ...], Tuple[int, ...], int, bool]] = {}
        self._mask_cache: Dict[tuple, Tuple[int, ...]] = {}
        self._device_masks: Dict[Tuple[tuple, str], _Mask] = {}
        self._forced: Dict[tuple, Optional[int]] = {}  # mask key -> the one allowed id (None: 0 or 2+)
        self._lock = threading.RLock()
        self._period_id = next((i for i in vocab.byte_ids if vocab.token_bytes[i] == b'.'), None)

    # -- walking --
    def initial(self) -> tuple:
        lex, ctr = self.stages[0].start()
        return (0, lex, ctr, 0)

    def _enter(self, k: int) -> tuple:
        if k < self.n:
            lex, ctr = self.stages[k].start()
            return (k, lex, ctr, 0)
        return (self.n, (False,), (), 0)

    def walk(self, state: tuple, token_id: int, relaxed: bool = False) -> Optional[Tuple[tuple, int]]:
        """State after ``token_id`` (and the number of counter uses), or None if not allowed.
        ``relaxed``: the current stage's counters are ignored (every check passes)."""
        k, lex, ctr, free = state
        n = self.n
        entered = False  # this token completed a stage: it is not free text of the next one
        if k > n:
            return ((k, lex, ctr, free), 0) if token_id == self.vocab.eos_id else None
        if relaxed and k < n:
            ctr = None
        checks = 0
        vocab = self.vocab
        bs = vocab.token_bytes[token_id] if 0 <= token_id < vocab.size else None
        if bs is None:  # a special id
            if token_id == vocab.eos_id:
                return ((n + 1, (), (), 0), 0) if k == n else None
            if k == n:
                return None
            r = self.stages[k].special(lex, ctr, token_id)
            if r is None:
                return None
            lex, ctr, c = r
            checks += c
            if lex is COMPLETE:
                k, lex, ctr, free = self._enter(k + 1)
                entered = True
        elif k < n and self.stages[k].token_level(lex):  # a stage walking whole tokens (canonical actions)
            r = self.stages[k].token(lex, ctr, token_id)
            if r is None:
                return None
            lex, ctr, c = r
            checks += c
            if lex is COMPLETE:
                k, lex, ctr, free = self._enter(k + 1)
                entered = True
        else:
            stage = self.stages[k] if k < n else None
            boundary_period = None  # a stage completed inside this token: only its tail '.' may follow
            for b in bs:
                if boundary_period is not None:
                    if b != _PERIOD or boundary_period:
                        return None
                    boundary_period = True
                    continue
                if stage is None:  # tail: one optional '.'
                    if b != _PERIOD or lex[0] or not self.tail_period:
                        return None
                    lex = (True,)
                    continue
                r = stage.step(lex, ctr, b)
                if r is None:
                    return None
                lex, ctr, c = r
                checks += c
                if lex is COMPLETE:
                    if k + 1 < n:
                        # The token that completes a stage ends at the stage boundary (plus one optional
                        # '.'), as when each stage runs alone; the next stage starts with the next token.
                        boundary_period = False if stage.tail_period else True
                    k, lex, ctr, free = self._enter(k + 1)
                    entered = True
                    stage = self.stages[k] if k < n else None
        if k < n and not entered:
            stage = self.stages[k]
            if stage.is_free(lex):
                free += 1
                if free >= stage.max_free_tokens:
                    lex = stage.forced(lex)
            else:
                free = 0
        return (k, lex, ctr, free), checks

    def walk_ids(self, ids: Iterable[int]) -> Optional[tuple]:
        state = self.initial()
        for t in ids:
            r = self.walk(state, int(t))
            if r is None:
                return None
            state = r[0]
        return state

    def is_complete(self, state: Optional[tuple]) -> bool:
        return state is not None and state[0] >= self.n

    # -- masks --
    def _lex_entry(self, k: int, lex: tuple, ctr: tuple) -> Tuple[Tuple[int, ...], Tuple[int, ...], int, bool]:
        """For a lex state: (ids allowed whatever the counters, ids whose walk uses a counter, the clamp
        bound for the counters, whether the state is free text (mask = byte tokens without '[' + these))."""
        key = (k, lex)
        got = self._lex_cache.get(key)
        if got is not None:
            return got
        vocab = self.vocab
        state = (k, lex, ctr, 0)
        fixed: List[int] = []
        sensitive: List[int] = []
        max_checks = 0
        if k >= self.n:
            candidates: Iterable[int] = (() if k > self.n or lex[0] or self._period_id is None or not self.tail_period
                                         else (self._period_id,))
            specials: Tuple[int, ...] = (vocab.eos_id,)
            bulk_free = False
        else:
            stage = self.stages[k]
            specials = stage.specials(lex)
            bulk_free = stage.is_free(lex)
            if bulk_free or lex[0] == _FORCED:  # free text: byte tokens without brackets stay free text
                candidates = vocab.bracket_ids
            elif stage.token_level(lex):
                candidates = stage.token_candidates(lex)
            else:
                by_first = vocab.candidates(stage.alphabet)
                firsts = [b for b in by_first if stage.step(lex, None, b) is not None]
                candidates = [i for b in firsts for i in by_first[b]]
        for t in list(candidates) + list(specials):
            r = self.walk(state, t, relaxed=True)
            if r is None:
                continue
            if r[1]:
                sensitive.append(t)
                max_checks = max(max_checks, r[1])
            else:
                fixed.append(t)
        entry = (tuple(fixed), tuple(sensitive), max_checks + 1, bulk_free)
        self._lex_cache[key] = entry
        return entry

    def warm_up(self) -> int:
        """Compute the cached entry of every reachable state (walking bytes and specials from the start);
        returns the number of states. Optional: entries are otherwise computed on first use."""
        seen = set()
        todo = [self.initial()]
        while todo:
            k, lex, ctr, _ = todo.pop()
            if (k, lex) in seen:
                continue
            seen.add((k, lex))
            with self._lock:
                self._lex_entry(k, lex, ctr)
            if k >= self.n:
                if k == self.n and not lex[0] and self.tail_period:
                    todo.append((k, (True,), (), 0))
                continue
            stage = self.stages[k]
            if stage.token_level(lex):
                for nxt in stage.token_successors(lex):
                    todo.append(self._enter(k + 1) if nxt is COMPLETE else (k, nxt, ctr, 0))
                continue
            results = [stage.step(lex, None, b) for b in range(256)]
            results += [stage.special(lex, None, t) for t in stage.specials(lex)]
            if stage.is_free(lex) and stage.max_free_tokens:
                results.append((stage.forced(lex), ctr, 0))
            for r in results:
                if r is None:
                    continue
                todo.append(self._enter(k + 1) if r[0] is COMPLETE else (k, r[0], ctr, 0))
        return len(seen)

    def mask_key(self, state: tuple) -> tuple:
        k, lex, ctr, _ = state
        with self._lock:
            fixed, sensitive, bound, bulk = self._lex_entry(k, lex, ctr)
            clamped = tuple(min(c, bound) for c in ctr) if sensitive else ()
            key = (k, lex, clamped)
            if key not in self._mask_cache:
                ok = [t for t in sensitive if self.walk((k, lex, clamped if sensitive else ctr, 0), t) is not None]
                self._mask_cache[key] = tuple(ok)
        return key

    def forced_token(self, state: Optional[tuple]) -> Optional[int]:
        """The only token the grammar allows in ``state``, or None where it allows none or several, or the
        stages are complete (then the caller stops: the tail's '.' and EOS are never forced). Cached per
        mask key (the allowed set is a function of the key)."""
        if state is None or state[0] >= self.n:
            return None
        key = self.mask_key(state)
        got = self._forced.get(key, _UNSET)
        if got is _UNSET:
            with self._lock:
                k, lex, _ = key
                fixed, _, _, bulk = self._lex_cache[(k, lex)]
                ids = set(fixed) | set(self._mask_cache[key])
                got = ids.pop() if len(ids) == 1 and not bulk else None
                self._forced[key] = got
        return got

    def forced_run(self, state: Optional[tuple],
                   max_len: int = MAX_FORCED_RUN) -> Tuple[Tuple[int, ...], Optional[tuple]]:
        """The tokens the grammar forces from ``state`` on (each the only token allowed where it stands),
        at most ``max_len``; it ends where two or more tokens are allowed or the stages are complete. Returns
        the run and the state after it."""
        run: List[int] = []
        while len(run) < max_len:
            token = self.forced_token(state)
            if token is None:
                break
            run.append(token)
            state = self.walk(state, token)[0]
        return tuple(run), state

    def device_mask(self, key: tuple, width: int, device: torch.device) -> _Mask:
        dkey = (key, str(device), width)
        got = self._device_masks.get(dkey)
        if got is not None:
            return got
        with self._lock:
            k, lex, _ = key
            fixed, _, _, bulk = self._lex_cache[(k, lex)]
            extra = self._mask_cache[key]
            vocab = self.vocab
            if bulk:
                allowed = vocab.byte_mask.clone()
                allowed[list(vocab.bracket_ids)] = False
                ids = [t for t in fixed + extra if t < vocab.size]
                allowed[ids] = True
                if width > vocab.size:
                    allowed = torch.cat([allowed, torch.zeros(width - vocab.size, dtype=torch.bool)])
                allowed = allowed[:width]
                mask = _Mask(None, (~allowed).to(device), int(allowed.sum()))
            else:
                ids = sorted(t for t in set(fixed + extra) if t < width)
                mask = _Mask(torch.tensor(ids, dtype=torch.long, device=device), None, len(ids))
            self._device_masks[dkey] = mask
            return mask


_GRAMMARS: Dict[tuple, _Grammar] = {}
_GRAMMARS_LOCK = threading.Lock()


def _grammar(vocab: ConstraintVocab, stages: Tuple[Stage, ...]) -> _Grammar:
    key = (id(vocab),) + tuple(s.signature() for s in stages)
    with _GRAMMARS_LOCK:
        g = _GRAMMARS.get(key)
        if g is None or g.vocab is not vocab:
            g = _Grammar(vocab, stages)
            _GRAMMARS[key] = g
        return g


# --- logits processors -----------------------------------------------------------------------------

class GrammarConstraint(LogitsProcessor):
    """Base class: a logits processor running the stages of ``stages`` in sequence (then optional '.', EOS)."""

    def __init__(self, vocab: ConstraintVocab, stages: Sequence[Stage]):
        self.vocab = vocab
        self._stages = tuple(stages)
        self.grammar = _grammar(vocab, self._stages)
        self.reset()

    @property
    def stages(self) -> Tuple[Stage, ...]:
        return self._stages

    def reset(self) -> None:
        """Forget the rows (the next call starts a new generation: its input_ids are the prompt)."""
        self._states: Optional[List[Optional[tuple]]] = None
        self._last: List[int] = []
        self._len = 0
        self._prompt_len = 0
        self.violations = 0  # tokens generated that the grammar did not allow (e.g. another processor's)
        self._memo: Tuple[List[int], Optional[tuple]] = ([], self.grammar.initial())

    # -- state tracking --
    def _sync(self, input_ids: torch.Tensor) -> None:
        bsz, n = input_ids.shape
        if self._states is None or len(self._states) != bsz or n < self._len:
            self._states = [self.grammar.initial() for _ in range(bsz)]
            self._last = input_ids[:, -1].tolist() if n else [-1] * bsz
            self._len = self._prompt_len = n
            return
        if n == self._len:
            return
        tail = input_ids[:, self._len - 1:].tolist() if self._len else input_ids.tolist()
        for i, row in enumerate(tail):
            if self._len and row[0] != self._last[i]:  # rows reordered (beam search): re-walk from the prompt
                state = self.grammar.walk_ids(input_ids[i, self._prompt_len:].tolist())
                if state is None:
                    self.violations += 1
            else:
                state = self._states[i]
                for t in row[1:] if self._len else row:
                    if state is None:
                        break
                    r = self.grammar.walk(state, t)
                    if r is None:
                        self.violations += 1
                        state = None
                    else:
                        state = r[0]
            self._states[i] = state
            self._last[i] = row[-1]
        self._len = n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._sync(input_ids)
        for i, state in enumerate(self._states):
            self._mask_row(state, scores[i])
        return scores

    def _mask_row(self, state: Optional[tuple], row: torch.Tensor) -> None:
        """Set the scores of the tokens not allowed in ``state`` to -inf, in place."""
        neg = float('-inf')
        if state is None or state[0] > self.grammar.n:  # off-grammar or finished: EOS only
            eos = row[self.vocab.eos_id].clone()
            row.fill_(neg)
            row[self.vocab.eos_id] = eos if state is not None else 0.0
            return
        mask = self.grammar.device_mask(self.grammar.mask_key(state), row.shape[-1], row.device)
        if mask.forbid is not None:
            row.masked_fill_(mask.forbid, neg)
        else:
            kept = row.index_select(0, mask.allow_idx)
            row.fill_(neg)
            row.index_copy_(0, mask.allow_idx, kept)

    # -- queries --
    def state_of(self, ids: Union[Sequence[int], torch.Tensor]) -> Optional[tuple]:
        """The grammar state after the generated ``ids`` (None if they break the grammar). Remembers the
        last call, so growing ``ids`` by a token per call (a decode loop) walks only the new tokens."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else [int(t) for t in ids]
        seen, state = self._memo
        if len(ids) >= len(seen) and ids[:len(seen)] == seen:
            for t in ids[len(seen):]:
                if state is None:
                    break
                r = self.grammar.walk(state, t)
                state = None if r is None else r[0]
        else:
            state = self.grammar.walk_ids(ids)
        self._memo = (ids, state)
        return state

    def accepts(self, ids: Union[Sequence[int], torch.Tensor]) -> bool:
        """True if the generated ``ids`` are a prefix the grammar allows."""
        return self.state_of(ids) is not None

    def is_done(self, ids: Union[Sequence[int], torch.Tensor]) -> bool:
        """True if the generated ``ids`` (without the prompt) complete every stage (EOS not needed)."""
        return self.grammar.is_complete(self.state_of(ids))

    def forced_run(self, ids: Union[Sequence[int], torch.Tensor], max_len: int = MAX_FORCED_RUN) -> List[int]:
        """The tokens forced after the generated ``ids``: while the grammar allows exactly one token (a
        bracket, a separator, a marker, the last byte of an action string ...) and the stages are not complete,
        that token; at most ``max_len``. Empty where ``ids`` break the grammar. A decoder can append the run
        to its chosen token and feed both in one forward pass (fast-forwarding): greedy decoding would pick
        exactly these tokens, one pass each."""
        if max_len <= 0:
            return []
        run, _ = self.grammar.forced_run(self.state_of(ids), max_len)
        return list(run)

    def allowed_token_ids(self, ids: Union[Sequence[int], torch.Tensor], width: Optional[int] = None) -> torch.Tensor:
        """The ids allowed after the generated ``ids`` (for tests and tools)."""
        state = self.state_of(ids)
        if state is None:
            raise ValueError('the ids break the grammar')
        row = torch.zeros(width or self.vocab.size)
        self._mask_row(state, row)
        return torch.nonzero(row > float('-inf')).flatten()

    def rows_done(self, input_ids: torch.Tensor) -> List[bool]:
        """Per row of ``input_ids`` (prompt + generated so far): are all stages complete?"""
        self._sync(input_ids)
        return [self.grammar.is_complete(s) for s in self._states]

    def warm_up(self) -> int:
        """Precompute the allowed-token sets of every reachable grammar state (well under a second for
        depth + trace + 8x7 actions; shared by all constraints with the same stages and vocabulary), so the
        first generation runs at the cached speed. Returns the number of states."""
        return self.grammar.warm_up()

    def max_new_tokens(self) -> int:
        """An upper bound on the tokens the stages can take (free text budgets + structures + EOS)."""
        return sum(s.max_tokens() for s in self._stages) + 2

    def stopping_criteria(self) -> 'ConstraintStoppingCriteria':
        """A ``StoppingCriteria`` that ends a row once its stages are complete (no EOS step needed)."""
        return ConstraintStoppingCriteria(self)


class ConstraintStoppingCriteria(StoppingCriteria):
    """Stops each row when its :class:`GrammarConstraint` is complete (shares the processor's row states)."""

    def __init__(self, constraint: GrammarConstraint):
        self.constraint = constraint

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = self.constraint.rows_done(input_ids)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class DepthConstraint(GrammarConstraint):
    """Depth stage: free text, ``<DEPTH_START>``, exactly ``n_codes`` (100) ``<DEPTH_k>``, ``<DEPTH_END>``, EOS."""

    def __init__(self, vocab: ConstraintVocab, *, max_free_tokens: int = 64, n_codes: int = N_DEPTH_CODES_PER_IMAGE):
        super().__init__(vocab, (DepthStage(vocab, max_free_tokens, n_codes),))


class TraceConstraint(GrammarConstraint):
    """Trace stage: free text, then ``num_traces`` lists of 1..``max_points`` integer points (0..255), '.', EOS."""

    def __init__(self, vocab: ConstraintVocab, *, max_free_tokens: int = 64, num_traces: int = 1,
                 max_points: int = MAX_TRACE_POINTS, spaces: bool = True):
        super().__init__(vocab, (TraceStage(max_free_tokens, num_traces, max_points, TRACE_COORD_MAX, spaces),))


class ActionConstraint(GrammarConstraint):
    """Action stage: free text, then ``horizon`` steps of ``action_dim`` action token strings, '.', EOS."""

    def __init__(self, vocab: ConstraintVocab, *, action_dim: int = 7, horizon: int = 1, max_free_tokens: int = 64,
                 spaces: bool = True, canonical: bool = False):
        super().__init__(vocab, (ActionStage(vocab, action_dim, horizon, max_free_tokens, spaces, canonical),))


class AnswerConstraint(GrammarConstraint):
    """Several stages in one generation, e.g. ``AnswerConstraint(vocab, stages=(DepthConstraint(vocab),
    TraceConstraint(vocab), ActionConstraint(vocab, horizon=8)))``. ``stages`` are constraints (their stages
    are chained) or stage objects; the default is depth, trace, 7-D single-step actions."""

    def __init__(self, vocab: ConstraintVocab, stages: Optional[Sequence[Union[GrammarConstraint, Stage]]] = None):
        if stages is None:
            stages = (DepthConstraint(vocab), TraceConstraint(vocab), ActionConstraint(vocab))
        flat: List[Stage] = []
        for s in stages:
            if isinstance(s, GrammarConstraint):
                if s.vocab is not vocab:
                    raise ValueError('all stages must use the same ConstraintVocab')
                flat.extend(s.stages)
            elif isinstance(s, Stage):
                flat.append(s)
            else:
                raise TypeError(f'not a stage: {s!r}')
        super().__init__(vocab, tuple(flat))
