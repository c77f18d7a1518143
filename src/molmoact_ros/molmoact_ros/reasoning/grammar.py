"""MolmoAct's answer grammar: format and parse the depth block, the trace and the action tokens exactly
as the released model writes them.

The answer (decoded with ``skip_special_tokens=True, clean_up_tokenization_spaces=False``) holds three
parts in this order; the sentence around each part depends on the checkpoint (:data:`TEMPLATES`):

* **depth**: ``<DEPTH_START>`` + exactly 100 ``<DEPTH_k>`` (k in 0..127, a row-major 10x10 grid) +
  ``<DEPTH_END>``, nothing in between (``format_depth``);
* **trace**: a list of 1..5 ``[x, y]`` integer points in 0..255 (x column, y row). The LIBERO
  checkpoint writes it without spaces (``[[59,153],[74,120]]``), the fine-tune data as Python's
  ``str(list)`` (``[[59, 153], [74, 120]]``); fine-tuned models write two traces (left / right end
  effector, the same list twice). The first trace is the primary one (``format_trace``);
* **actions**: the byte-level BPE token *strings* of Qwen2 ids 151387..151642 (e.g. ``ðŁİĳ``), one per
  action dimension, joined by ``", "`` in ``[...]``: a single list for one step, ``[[...], [...], ...]``
  for a chunk of H steps (H = 8 for LIBERO and the fine-tune recipe) (``format_actions``). Bin index of
  a token id, as the released parser computes it: ``clip(151643 - id - 1, 0, 254)``.

The parser keys on structure, not on one sentence: the depth block, top-level bracketed lists made of
numbers (traces) and top-level bracketed lists holding non-ASCII token strings (actions). It tolerates
spacing. It never raises on model output: each part is either a value or a :class:`ParseError` that
says what is wrong (missing, truncated, wrong count, out of range, empty value, wrong action dimension,
unknown token string, ...). The one known malformation it repairs, a missing ``[`` before the action
tokens (``... take is tok1, tok2, ...]``, seen after prefix-forced continuation), is reported in
``repairs``. The ``format_*`` functions raise ``ValueError`` on invalid input.

ROS-free, standard library only.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

# --- constants -------------------------------------------------------------------------------------

QWEN2_VOCAB_SIZE = 151643  # regular BPE ids 0..151642 (same value as model.tokenizer.QWEN2_VOCAB_SIZE)
N_ACTION_TOKENS = 256
ACTION_TOKEN_ID_MIN = QWEN2_VOCAB_SIZE - N_ACTION_TOKENS  # 151387
ACTION_TOKEN_ID_MAX = QWEN2_VOCAB_SIZE - 1  # 151642
#: Bins the released parser can produce: ``clip(151643 - id - 1, 0, 254)`` (255 bin centres).
N_ACTION_BINS = 255

DEPTH_START = '<DEPTH_START>'
DEPTH_END = '<DEPTH_END>'
DEPTH_ROWS = DEPTH_COLS = 10
N_DEPTH_CODES_PER_IMAGE = DEPTH_ROWS * DEPTH_COLS  # 100
N_DEPTH_CODEBOOK = 128
MAX_TRACE_POINTS = 5
TRACE_COORD_MAX = 255

#: Byte-level BPE strings of Qwen2 ids 151387..151642, in id order (``tokenizer.convert_ids_to_tokens``;
#: checked against the real tokenizer in the tests). ``ACTION_TOKEN_STRINGS[i]`` is id 151387 + i.
ACTION_TOKEN_STRINGS: tuple[str, ...] = tuple("""
ðŁİĳ ðŁİ¿ ðŁıı ðŁıĴ ðŁı© ðŁı¯ ðŁĲĢ ðŁĳĿ ðŁĴ¹ ðŁĴº ðŁĵŁ ðŁĵª ðŁĵ¼ ðŁĶĢ ðŁĶĤ ðŁĶĥ ðŁĶĩ ðŁĶĵ ðŁĶ¢
ðŁĶ¤ ðŁĶ© ðŁķĸ ðŁķļ ðŁķľ ðŁķĿ ðŁķŀ ðŁķł ðŁķ¢ ðŁķ³ ðŁĸĩ ðŁĸĳ ðŁĸ¶ ðŁĹģ Ñ¨ Úİ á¡Į á¸° áºĢ á¼® á½Ŀ
âĦ¬ âļ§ âĽ¤ ã³¬ êĻĭ ê¸ĳ ëĶī ëĹį ë¡ĳ ë¯ĳ ë»ħ ë¼Ŀ ìĦĲ ìī¡ ìĭ² ìı± ìĹ¤ ìĿ© ìĿ¿ ìŁĻ ìł° ì¥ī íĬŃ íķ®
ï®ı ðŁħ± ðŁĨĴ ðŁķĭ Éĺ Êĵ Õĥ à´´ à½ħ áĨº áĪĬ áĪ¨ áĪ¾ áīĲ áĮĥ áĮ½ áĶŃ áłĤ áł¬ á¨¸ á©ĭ á¶ı á¾Ķ á¿Ĳ
á¿ļ âĻĻ âļĤ âļĹ â¡¢ â¤¦ ëĸ° ë¤Ĥ ë§ł ë±ĭ ë±Ĳ ìĽ¢ ìľ¾ ì³ħ ì»ģ íģ» íĥĻ íĵĸ íĵŃ íķ± íĽľ ï¤ħ ï¤Ĩ ï¦ĥ
ï§© ï¨Ĥ ðĲ¤Ķ ðĲŃĵ ðĲ°¼ ðĿĵŀ ðĿĵ° ðĿĻľ ðĿļģ ðŁħ¢ ðŁıĩ È² Ê¶ ÔĪ Ôĳ Ýĵ Ý¥ à¤ĳ à¥± à¬ī à°³ à°µ à²Ł
áĢı áģ¼ áī¨ áĬĴ áĭ© áĮĦ áĮĶ áĲ§ áĴĮ áĶħ áĶĬ áłĦ á¨ģ á¸ĥ á¸» âĶŀ âĺµ âļ£ â²¢ ãĪª ä¶µ ê²Ļ ê²´ ê³Ĥ
ë¡¼ ìĨĬ ì¼ĩ íĭį íĵ¬ íĵ® íĵ¶ íĵ» ï¤¦ ï¥ł ï¥± ïŃ² ðĲŃĬ ðĲ±ħ ðĸ¥ ðĸ¥¨ ðĿĳ³ ðĿĵķ ðĿĵ¬ ðĿĵ¹ ðĿĵ¾ ðĿĶĵ
ðĿķį ðĿķ¡ ðĿķ± ðĿĸĸ ðĿĺı ðĿĺĲ ðĿĺļ ðĿĻ® ðĿĻ° ðĿĻ¸ ðĿĻº ðĿĻ¼ ðĿĻ½ ðĿĻ¿ ðĿļĦ ðĿļı ðŁħħ ðŁħĵ ÆĪ àłĮ
áĻ³ áļĮ áĽħ áĽĲ á¤Ĭ á¸Ĭ âĶ½ âķĬ âĽĩ âĽı âĿª âĿ« âŁ° ãĦį ãĦĵ ãĦ§ ãħĸ ãī« ê¦Ķ ï±Ĭ àºĤ áħ£ á¥Ķ á¥¤
âĨ¤ âĨ· âĩŀ âĸ¤ âŀ¶ ãĪ¼ ï¨· ðĵı§ âĶ² âĢ´ âĴŁ âĴ¡ â°Ĥ â°į â°İ â°Ĳ â°ĳ â°Ł â°ł â°¡ â¼Ń ãĬ¥ âĴł â½º
ãĩº ãĩ½ ï¨Ĭ áķ· âį¨ âºŁ â½Ĺ
""".split())
#: Action token string -> token id (the 256 action ids only).
ACTION_TOKEN_TO_ID: Mapping[str, int] = {s: ACTION_TOKEN_ID_MIN + i for i, s in enumerate(ACTION_TOKEN_STRINGS)}
assert len(ACTION_TOKEN_STRINGS) == N_ACTION_TOKENS and len(ACTION_TOKEN_TO_ID) == N_ACTION_TOKENS


def action_bin(token_id: int) -> int:
    """Bin index of an action token id, as the released parser computes it: ``clip(151643 - id - 1, 0, 254)``."""
    return min(max(QWEN2_VOCAB_SIZE - int(token_id) - 1, 0), N_ACTION_BINS - 1)


def bin_token_id(bin_index: int) -> int:
    """The token id the formatter writes for ``bin_index`` (0..254): ``151642 - bin``. (Id 151387, which
    the training encoder writes only for a normalised value of exactly +1, also parses to bin 254.)"""
    b = _check_int(bin_index, 0, N_ACTION_BINS - 1, 'action bin')
    return ACTION_TOKEN_ID_MAX - b


def bin_token_string(bin_index: int) -> str:
    """The byte-level token string the formatter writes for ``bin_index`` (0..254)."""
    return ACTION_TOKEN_STRINGS[bin_token_id(bin_index) - ACTION_TOKEN_ID_MIN]


# --- sentence templates ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AnswerTemplate:
    """The sentences a checkpoint family wraps around the three parts.

    ``depth_sentence`` / ``trace_sentences`` / ``action_sentence`` are format strings with ``{depth}``,
    ``{trace}`` and ``{action}``; a template without depth or trace (steering) has them empty. The answer
    is the sentences joined by single spaces, preceded by one space (the text after ``" Assistant:"``).
    """

    name: str
    depth_sentence: str
    trace_sentences: tuple[str, ...]
    action_sentence: str
    trace_spaced: bool  # how this family writes the trace
    used_by: str
    source: str

    def format(self, action_bins: Sequence[Sequence[int]], depth_codes: Optional[Sequence[int]] = None,
               trace_points: Optional[Sequence[Sequence[int]]] = None, *, spaced: Optional[bool] = None,
               nested: Optional[bool] = None, leading_space: bool = True) -> str:
        """The full answer text. ``depth_codes`` / ``trace_points`` are required when the template has the
        part. Raises ``ValueError`` on invalid input (as the ``format_*`` functions do)."""
        sentences = []
        if self.depth_sentence:
            if depth_codes is None:
                raise ValueError(f'template {self.name!r} needs depth codes')
            sentences.append(self.depth_sentence.format(depth=format_depth(depth_codes)))
        if self.trace_sentences:
            if trace_points is None:
                raise ValueError(f'template {self.name!r} needs trace points')
            trace = format_trace(trace_points, spaced=self.trace_spaced if spaced is None else spaced)
            sentences.extend(s.format(trace=trace) for s in self.trace_sentences)
        sentences.append(self.action_sentence.format(action=format_actions(action_bins, nested=nested)))
        return (' ' if leading_space else '') + ' '.join(sentences)


#: Multi-view reasoning answer: LIBERO checkpoints (``MolmoAct-7B-D-LIBERO-*-0812``; observed in their
#: public evaluation logs: unspaced trace, 8x7 chunk) and, presumably (same mid-training data),
#: ``MolmoAct-7B-D-0812``.
MULTI_VIEW_TEMPLATE = AnswerTemplate(
    name='multi_view',
    depth_sentence='The depth map of the first image is {depth}.',
    trace_sentences=('The trajectory of the end effector in the first image is {trace}.',),
    action_sentence=('Based on these information, along with other images from different camera views as '
                     'additional information, the action that the robot should take is {action}.'),
    trace_spaced=False,
    used_by='MolmoAct-7B-D-LIBERO-*-0812 (observed), MolmoAct-7B-D-0812 (presumed)',
    source='public LIBERO evaluation logs (shared notes molmoact-internals 3.1)')

#: Single-view reasoning answer: the ``-Pretrain`` checkpoints (SimplerEnv). The released SimplerEnv
#: parser anchors on "The trajectory of the end effector is" and "Based on"; the rest of the wording
#: mirrors the single-view prompt and is UNCONFIRMED, as is the trace spacing.
SINGLE_VIEW_TEMPLATE = AnswerTemplate(
    name='single_view',
    depth_sentence='The depth map of the image is {depth}.',
    trace_sentences=('The trajectory of the end effector is {trace}.',),
    action_sentence=('Based on the depth map of the image and the trajectory of the end effector, the action '
                     'that the robot should take is {action}.'),
    trace_spaced=False,
    used_by='MolmoAct-7B-*-Pretrain-0812 (SimplerEnv)',
    source='allenai/SimplerEnv molmoact_model.py (anchors only); wording after "Based on" unconfirmed')

#: Fine-tune recipe answer (``olmo/data/custom_lerobot_dataset.py``, ``format_action_reasoning``): the
#: same trace twice (left / right end effector), ``str(list)`` spacing, an H-step chunk.
FINETUNE_TEMPLATE = AnswerTemplate(
    name='finetune',
    depth_sentence='The depth map of the image is {depth}.',
    trace_sentences=('The trajectory of the left end effector is {trace}.',
                     'The trajectory of the right end effector is {trace}.'),
    action_sentence='Based on this information, the action that the robot should take is {action}.',
    trace_spaced=True,
    used_by='models fine-tuned with the released recipe (custom LeRobot datasets)',
    source='allenai/molmoact olmo/data/custom_lerobot_dataset.py format_action_reasoning')

#: Trajectory-conditioned (steering) answer: actions only (``format_trajectory_conditioned``).
TRAJECTORY_CONDITIONED_TEMPLATE = AnswerTemplate(
    name='trajectory_conditioned',
    depth_sentence='',
    trace_sentences=(),
    action_sentence=('Based on the image and the annotated trajectory of the end effector, the action that the '
                     'robot should take is {action}.'),
    trace_spaced=False,
    used_by='steering prompts (trace drawn on the image); fine-tunes and, per the steering demo, Pretrain',
    source='allenai/molmoact olmo/data/custom_lerobot_dataset.py format_trajectory_conditioned')

TEMPLATES: Mapping[str, AnswerTemplate] = {
    t.name: t for t in (MULTI_VIEW_TEMPLATE, SINGLE_VIEW_TEMPLATE, FINETUNE_TEMPLATE, TRAJECTORY_CONDITIONED_TEMPLATE)}

#: The sentence text right before each part, per template (for prefix-forced stage runs).
DEPTH_PREFIX_MULTI_VIEW = 'The depth map of the first image is'
DEPTH_PREFIX_SINGLE_VIEW = 'The depth map of the image is'
TRACE_PREFIX_MULTI_VIEW = 'The trajectory of the end effector in the first image is'
TRACE_PREFIX_SINGLE_VIEW = 'The trajectory of the end effector is'
ACTION_PREFIX_MULTI_VIEW = ('Based on these information, along with other images from different camera views as '
                            'additional information, the action that the robot should take is')
ACTION_PREFIX_SINGLE_VIEW = ('Based on the depth map of the image and the trajectory of the end effector, the '
                             'action that the robot should take is')
ACTION_PREFIX_FINETUNE = 'Based on this information, the action that the robot should take is'


# --- values ----------------------------------------------------------------------------------------

class ErrorCode(str, enum.Enum):
    """What is wrong with one part of an answer."""

    MISSING = 'missing'                    # the part is not in the text
    TRUNCATED = 'truncated'                # the part starts but never closes
    MALFORMED = 'malformed'                # unexpected content / structure inside the part
    WRONG_COUNT = 'wrong_count'            # depth codes != 100, trace points not in 1..5
    OUT_OF_RANGE = 'out_of_range'          # depth code > 127, trace coordinate > 255
    EMPTY_VALUE = 'empty_value'            # nothing between two commas (or a bracket and a comma)
    NOT_INTEGER = 'not_integer'            # a trace coordinate that is not a plain integer
    WRONG_POINT_SIZE = 'wrong_point_size'  # a trace point without exactly two coordinates
    WRONG_ACTION_DIM = 'wrong_action_dim'  # a step without exactly action_dim tokens
    WRONG_HORIZON = 'wrong_horizon'        # a chunk with another number of steps than expected
    UNKNOWN_TOKEN = 'unknown_token'        # a token string that is not an action token
    MULTIPLE = 'multiple'                  # more than one candidate where one is expected (warning)
    STRAY_BRACKET = 'stray_bracket'        # a ']' that closes nothing and could not be repaired


@dataclass(frozen=True)
class ParseError:
    """One problem with one part (``'depth'``, ``'trace'`` or ``'actions'``) of a model answer."""

    part: str
    code: ErrorCode
    message: str
    span: Optional[tuple[int, int]] = None  # character range in the parsed text, when known

    def __str__(self) -> str:
        return f'{self.part}: {self.code.value}: {self.message}'


@dataclass(frozen=True)
class Repair:
    """A malformation the parser fixed: ``inserted`` was inserted at ``position`` of the original text."""

    kind: str
    position: int
    inserted: str
    message: str


@dataclass(frozen=True)
class DepthTokens:
    """The 100 depth codes (row-major 10x10) of the first image, and the block's text (tags included)."""

    codes: tuple[int, ...]
    rows: int = DEPTH_ROWS
    cols: int = DEPTH_COLS
    text: str = ''
    span: Optional[tuple[int, int]] = field(default=None, compare=False)

    def grid(self) -> tuple[tuple[int, ...], ...]:
        """The codes as ``rows`` tuples of ``cols`` codes."""
        return tuple(self.codes[r * self.cols:(r + 1) * self.cols] for r in range(self.rows))


@dataclass(frozen=True)
class Trace:
    """1..5 ``(x, y)`` points in 0..255 (x column, y row) in the first image, and the list's text."""

    points: tuple[tuple[int, int], ...]
    text: str = ''
    span: Optional[tuple[int, int]] = field(default=None, compare=False)


@dataclass(frozen=True)
class ActionTokens:
    """Action tokens, one tuple per step: bins (``clip(151643 - id - 1, 0, 254)``) and token ids.

    ``nested`` says whether the text is a list of lists (a chunk) or a single list (one step).
    ``repairs`` lists what the parser fixed to read it (empty for a well-formed answer).
    """

    bins: tuple[tuple[int, ...], ...]
    token_ids: tuple[tuple[int, ...], ...]
    text: str = ''
    nested: bool = False
    repairs: tuple[Repair, ...] = ()
    span: Optional[tuple[int, int]] = field(default=None, compare=False)

    @property
    def horizon(self) -> int:
        return len(self.bins)

    @property
    def action_dim(self) -> int:
        return len(self.bins[0]) if self.bins else 0


@dataclass(frozen=True)
class ParsedAnswer:
    """All parts of an answer. A part that could not be read is ``None`` (traces: empty) and has an entry
    in ``errors``; ``warnings`` are non-fatal findings; ``repairs`` what was fixed to read the actions."""

    text: str
    depth: Optional[DepthTokens]
    traces: tuple[Trace, ...]
    actions: Optional[ActionTokens]
    errors: tuple[ParseError, ...] = ()
    warnings: tuple[ParseError, ...] = ()
    repairs: tuple[Repair, ...] = ()

    @property
    def trace(self) -> Optional[Trace]:
        """The primary (first) trace."""
        return self.traces[0] if self.traces else None

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, part: str) -> Optional[ParseError]:
        """The error of ``part``, if any."""
        return next((e for e in self.errors if e.part == part), None)


# --- formatting ------------------------------------------------------------------------------------

def _check_int(value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f'{what} must be an integer, got {value!r}')
    try:
        v = value.__index__()
    except (AttributeError, TypeError):
        raise ValueError(f'{what} must be an integer, got {value!r}') from None
    if not lo <= v <= hi:
        raise ValueError(f'{what} {v} outside {lo}..{hi}')
    return v


def format_depth(codes: Iterable[int]) -> str:
    """``<DEPTH_START><DEPTH_c0>...<DEPTH_c99><DEPTH_END>`` for exactly 100 codes in 0..127."""
    values = [_check_int(c, 0, N_DEPTH_CODEBOOK - 1, 'depth code') for c in codes]
    if len(values) != N_DEPTH_CODES_PER_IMAGE:
        raise ValueError(f'expected {N_DEPTH_CODES_PER_IMAGE} depth codes, got {len(values)}')
    return DEPTH_START + ''.join(f'<DEPTH_{c}>' for c in values) + DEPTH_END


def format_trace(points: Iterable[Sequence[int]], spaced: bool = False) -> str:
    """``[[x,y],[x,y]]`` (``spaced``: ``[[x, y], [x, y]]``) for 1..5 points with integer coordinates 0..255."""
    pts = []
    for p in points:
        if isinstance(p, (str, bytes)) or len(p) != 2:
            raise ValueError(f'a trace point must be (x, y), got {p!r}')
        pts.append((_check_int(p[0], 0, TRACE_COORD_MAX, 'trace x'), _check_int(p[1], 0, TRACE_COORD_MAX, 'trace y')))
    if not 1 <= len(pts) <= MAX_TRACE_POINTS:
        raise ValueError(f'a trace has 1..{MAX_TRACE_POINTS} points, got {len(pts)}')
    sep = ', ' if spaced else ','
    return '[' + sep.join(f'[{x}{sep}{y}]' for x, y in pts) + ']'


def format_actions(bins_per_step: Iterable[Sequence[int]], nested: Optional[bool] = None) -> str:
    """The action text for bins (0..254) per step: ``[t, t, ...]`` for one step, ``[[t, ...], [t, ...]]`` for
    a chunk (``nested`` defaults to ``len(steps) > 1``; ``nested=True`` writes one step as ``[[...]]``)."""
    steps = [[bin_token_string(b) for b in step] for step in bins_per_step]
    if not steps:
        raise ValueError('no action steps')
    dims = {len(s) for s in steps}
    if len(dims) != 1 or 0 in dims:
        raise ValueError(f'every step needs the same, non-zero number of values, got {sorted(dims)}')
    if nested is None:
        nested = len(steps) > 1
    if not nested:
        if len(steps) != 1:
            raise ValueError('a chunk of several steps must be nested')
        return '[' + ', '.join(steps[0]) + ']'
    return '[' + ', '.join('[' + ', '.join(s) + ']' for s in steps) + ']'


# --- structural scanning ---------------------------------------------------------------------------

_DEPTH_CODE_RE = re.compile(r'\s*<DEPTH_(\d{1,9})>')
# What a depth block cut off mid-tag can end with.
_DEPTH_TAIL_RE = re.compile(r'\s*(?:<(?:D(?:E(?:P(?:T(?:H(?:_(?:\d*|E|EN|END))?)?)?)?)?)?)?')
_WS_RE = re.compile(r'\s*')
_INT_RE = re.compile(r'\d{1,9}')
_NUMERIC_CHARS = frozenset('0123456789+-.,[] \t\r\n')
_ITEM_RUN_CHARS = frozenset(',[] \t\r\n"\'')


@dataclass(frozen=True)
class _Group:
    start: int
    end: int  # exclusive; len(text) when not closed
    depth: int  # maximum nesting depth (1 = flat list)
    closed: bool


def _scan_groups(text: str, begin: int = 0) -> tuple[list[_Group], list[int]]:
    """Top-level ``[...]`` groups from ``begin`` on and positions of ``]`` that close nothing."""
    groups: list[_Group] = []
    strays: list[int] = []
    depth = max_depth = 0
    start = 0
    for i in range(begin, len(text)):
        ch = text[i]
        if ch == '[':
            if depth == 0:
                start, max_depth = i, 0
            depth += 1
            max_depth = max(max_depth, depth)
        elif ch == ']':
            if depth == 0:
                strays.append(i)
                continue
            depth -= 1
            if depth == 0:
                groups.append(_Group(start, i + 1, max_depth, True))
    if depth > 0:
        groups.append(_Group(start, len(text), max_depth, False))
    return groups, strays


def _has_non_ascii(s: str) -> bool:
    return any(ord(c) > 127 for c in s)


def _kind(text: str, g: _Group) -> str:
    body = text[g.start:g.end]
    if _has_non_ascii(body):
        return 'actions'
    if all(c in _NUMERIC_CHARS for c in body):
        return 'trace'
    return 'other'


def _after_depth(text: str) -> int:
    """Where the trace and the actions may start: after the first depth block (the end of the text when
    the block never closes), or 0 when there is none (e.g. a steering answer)."""
    s = text.find(DEPTH_START)
    if s < 0:
        return 0
    e = text.find(DEPTH_END, s)
    return len(text) if e < 0 else e + len(DEPTH_END)


def _split_rows(text: str, g: _Group, part: str) -> Union[list[tuple[int, int]], ParseError]:
    """Character ranges of the rows of a closed group: the group itself when flat, its inner lists when
    nested once (separated by commas and whitespace only)."""
    inner_start, inner_end = g.start + 1, g.end - 1
    if g.depth == 1:
        return [(inner_start, inner_end)]
    if g.depth > 2:
        return ParseError(part, ErrorCode.MALFORMED, 'lists nested more than two deep', (g.start, g.end))
    rows: list[tuple[int, int]] = []
    i = _WS_RE.match(text, inner_start).end()
    while True:
        if i >= inner_end or text[i] != '[':
            what = repr(text[i:min(i + 12, inner_end)]) if i < inner_end else 'the end of the list'
            return ParseError(part, ErrorCode.MALFORMED, f'expected an inner list at {what}', (g.start, g.end))
        close = text.find(']', i)
        rows.append((i + 1, close))
        i = _WS_RE.match(text, close + 1).end()
        if i >= inner_end:
            return rows
        if text[i] != ',':
            return ParseError(part, ErrorCode.MALFORMED, f'expected "," between inner lists, got {text[i]!r}',
                              (g.start, g.end))
        i = _WS_RE.match(text, i + 1).end()


# --- depth -----------------------------------------------------------------------------------------

def parse_depth(text: str) -> Union[DepthTokens, ParseError]:
    """The first depth block of ``text``: 100 codes in 0..127 between ``<DEPTH_START>`` and ``<DEPTH_END>``
    (whitespace between codes tolerated), or the :class:`ParseError` that says what is wrong."""
    start = text.find(DEPTH_START)
    if start < 0:
        if '<DEPTH_' in text:
            return ParseError('depth', ErrorCode.MALFORMED, 'depth codes without <DEPTH_START>')
        return ParseError('depth', ErrorCode.MISSING, 'no <DEPTH_START> in the text')
    body_start = start + len(DEPTH_START)
    end = text.find(DEPTH_END, body_start)
    body_end = len(text) if end < 0 else end
    codes: list[int] = []
    pos = body_start
    while True:
        m = _DEPTH_CODE_RE.match(text, pos, body_end)
        if m is None:
            break
        codes.append(int(m.group(1)))
        pos = m.end()
    pos = _WS_RE.match(text, pos, body_end).end()
    if end < 0:
        if not _DEPTH_TAIL_RE.fullmatch(text, pos):
            return ParseError('depth', ErrorCode.MALFORMED,
                              f'unexpected {text[pos:pos + 16]!r} in the depth block', (start, len(text)))
        return ParseError('depth', ErrorCode.TRUNCATED,
                          f'depth block not closed by <DEPTH_END> after {len(codes)} codes', (start, len(text)))
    span = (start, end + len(DEPTH_END))
    if pos != body_end:
        return ParseError('depth', ErrorCode.MALFORMED,
                          f'unexpected {text[pos:min(pos + 16, body_end)]!r} in the depth block', span)
    bad = [c for c in codes if c >= N_DEPTH_CODEBOOK]
    if bad:
        return ParseError('depth', ErrorCode.OUT_OF_RANGE,
                          f'depth codes {bad[:5]} outside 0..{N_DEPTH_CODEBOOK - 1}', span)
    if len(codes) != N_DEPTH_CODES_PER_IMAGE:
        return ParseError('depth', ErrorCode.WRONG_COUNT,
                          f'{len(codes)} depth codes, expected {N_DEPTH_CODES_PER_IMAGE}', span)
    return DepthTokens(tuple(codes), DEPTH_ROWS, DEPTH_COLS, text[span[0]:span[1]], span)


# --- trace -----------------------------------------------------------------------------------------

def _parse_one_trace(text: str, g: _Group) -> Union[Trace, ParseError]:
    span = (g.start, g.end)
    if not g.closed:
        return ParseError('trace', ErrorCode.TRUNCATED, 'trace list not closed', span)
    if g.depth == 1:
        if not text[g.start + 1:g.end - 1].strip():
            return ParseError('trace', ErrorCode.WRONG_COUNT, 'empty trace', span)
        return ParseError('trace', ErrorCode.MALFORMED, 'a flat list, not a list of [x, y] points', span)
    rows = _split_rows(text, g, 'trace')
    if isinstance(rows, ParseError):
        return rows
    points = []
    for a, b in rows:
        parts = [p.strip() for p in text[a:b].split(',')]
        if any(not p for p in parts):
            return ParseError('trace', ErrorCode.EMPTY_VALUE, f'empty value in point [{text[a:b]}]', span)
        if len(parts) != 2:
            return ParseError('trace', ErrorCode.WRONG_POINT_SIZE,
                              f'point [{text[a:b]}] has {len(parts)} values, expected 2', span)
        if not all(_INT_RE.fullmatch(p) for p in parts):
            return ParseError('trace', ErrorCode.NOT_INTEGER, f'point [{text[a:b]}] is not two integers', span)
        x, y = int(parts[0]), int(parts[1])
        if x > TRACE_COORD_MAX or y > TRACE_COORD_MAX:
            return ParseError('trace', ErrorCode.OUT_OF_RANGE,
                              f'point [{x}, {y}] outside 0..{TRACE_COORD_MAX}', span)
        points.append((x, y))
    if not 1 <= len(points) <= MAX_TRACE_POINTS:
        return ParseError('trace', ErrorCode.WRONG_COUNT,
                          f'{len(points)} trace points, expected 1..{MAX_TRACE_POINTS}', span)
    return Trace(tuple(points), text[g.start:g.end], span)


def parse_trace(text: str) -> Union[tuple[Trace, ...], ParseError]:
    """Every trace in ``text`` in order (the first is the primary one), or the :class:`ParseError` of the
    first malformed one. A trace is a top-level bracketed list made only of numbers, commas, brackets and
    whitespace, after the depth block; action lists (non-ASCII) and other bracketed text are skipped."""
    groups, _ = _scan_groups(text, _after_depth(text))
    traces: list[Trace] = []
    for g in groups:
        if _kind(text, g) != 'trace':
            continue
        if traces and not g.closed and not any(c.isdigit() for c in text[g.start:g.end]):
            break  # a list just opened at the end of the text: the start of the actions, not a trace
        parsed = _parse_one_trace(text, g)
        if isinstance(parsed, ParseError):
            return parsed
        traces.append(parsed)
    if not traces:
        return ParseError('trace', ErrorCode.MISSING, 'no list of [x, y] points in the text')
    return tuple(traces)


# --- actions ---------------------------------------------------------------------------------------

VocabLike = Union[Mapping[str, int], Any, None]


def _token_lookup(vocab: VocabLike):
    """A function token string -> id or None."""
    if vocab is None:
        return ACTION_TOKEN_TO_ID.get
    if isinstance(vocab, Mapping):
        return vocab.get
    convert = getattr(vocab, 'convert_tokens_to_ids', None)
    if convert is None:
        raise TypeError('vocab must be None, a mapping token string -> id, or a tokenizer')
    unk = getattr(vocab, 'unk_token_id', None)

    def lookup(token: str) -> Optional[int]:
        try:
            i = convert(token)
        except Exception:  # noqa: BLE001 - a tokenizer may raise on odd input; treat as unknown
            return None
        return None if i is None or (unk is not None and i == unk) else int(i)
    return lookup


def _repair_missing_open(text: str) -> tuple[str, tuple[Repair, ...], Optional[int]]:
    """Insert the ``[`` (or ``[[``) missing before a run of action tokens that ends in a stray ``]``.

    Returns the text (repaired or not), the repairs, and the position of a stray ``]`` left unrepaired.
    """
    begin = _after_depth(text)
    _, strays = _scan_groups(text, begin)
    if not strays:
        return text, (), None
    p = strays[0]
    # The run of item material (non-ASCII token strings, commas, brackets, whitespace, quotes) before p.
    r = p
    while r > begin and (ord(text[r - 1]) > 127 or text[r - 1] in _ITEM_RUN_CHARS):
        r -= 1
    while r < p and text[r] in ', \t\r\n':
        r += 1
    run = text[r:p]
    if not _has_non_ascii(run) or text.count('[', begin, r) != text.count(']', begin, r):
        return text, (), p  # no token strings, or the run starts inside a list
    # How many '[' are missing: the lowest nesting depth reached from r on.
    depth = low = 0
    for ch in text[r:]:
        if ch == '[':
            depth += 1
        elif ch == ']':
            depth -= 1
            low = min(low, depth)
    k = -low
    if not 1 <= k <= 2:
        return text, (), p
    # A single complete list followed by an extra ']' is not a missing '['.
    run_groups, _ = _scan_groups(run)
    if run.startswith('[') and len(run_groups) == 1 and run_groups[0].end == len(run):
        return text, (), p
    inserted = '[' * k
    repair = Repair('missing_open_bracket', r, inserted,
                    f'inserted {inserted!r} before the action tokens at character {r} (a "]" closed nothing)')
    return text[:r] + inserted + text[r:], (repair,), None


def parse_actions(text: str, action_dim: int, vocab: VocabLike = None, *,
                  horizon: Optional[int] = None) -> Union[ActionTokens, ParseError]:
    """The action list of ``text``: ``action_dim`` token strings per step, one step (``[t, ...]``) or a chunk
    (``[[t, ...], ...]``; ``horizon`` steps when given), or the :class:`ParseError` that says what is wrong.

    ``vocab`` maps token strings to ids: ``None`` (the 256 action strings), a mapping, or a tokenizer
    (``convert_tokens_to_ids``). A token string that is not one of the 256 action tokens is an error
    (the released parser silently maps it to an edge bin). A missing ``[`` before the tokens is repaired
    and reported in ``ActionTokens.repairs``. Spans refer to the repaired text when a repair was made.
    """
    action_dim = _check_int(action_dim, 1, 1 << 16, 'action_dim')
    lookup = _token_lookup(vocab)
    fixed, repairs, stray = _repair_missing_open(text)
    groups, _ = _scan_groups(fixed, _after_depth(fixed))
    candidates = [g for g in groups if _kind(fixed, g) == 'actions']
    if not candidates:
        if stray is not None:
            return ParseError('actions', ErrorCode.STRAY_BRACKET, f'"]" at character {stray} closes nothing',
                              (stray, stray + 1))
        return ParseError('actions', ErrorCode.MISSING, 'no list of action token strings in the text')
    g = candidates[0]
    span = (g.start, g.end)
    if not g.closed:
        return ParseError('actions', ErrorCode.TRUNCATED, 'action list not closed', span)
    rows = _split_rows(fixed, g, 'actions')
    if isinstance(rows, ParseError):
        return rows
    bins: list[tuple[int, ...]] = []
    ids: list[tuple[int, ...]] = []
    for a, b in rows:
        items = [p.strip().strip('"\'') for p in fixed[a:b].split(',')]
        if any(not p for p in items):
            return ParseError('actions', ErrorCode.EMPTY_VALUE, f'empty value in step {len(ids)}', span)
        if len(items) != action_dim:
            return ParseError('actions', ErrorCode.WRONG_ACTION_DIM,
                              f'step {len(ids)} has {len(items)} values, expected {action_dim}', span)
        row_ids = [lookup(t) for t in items]
        bad = [t for t, i in zip(items, row_ids)
               if i is None or not ACTION_TOKEN_ID_MIN <= i <= ACTION_TOKEN_ID_MAX]
        if bad:
            return ParseError('actions', ErrorCode.UNKNOWN_TOKEN,
                              f'step {len(ids)}: {bad[:3]!r} not action token strings', span)
        ids.append(tuple(row_ids))  # type: ignore[arg-type]
        bins.append(tuple(action_bin(i) for i in row_ids))  # type: ignore[arg-type]
    if horizon is not None and len(bins) != horizon:
        return ParseError('actions', ErrorCode.WRONG_HORIZON, f'{len(bins)} steps, expected {horizon}', span)
    return ActionTokens(tuple(bins), tuple(ids), fixed[g.start:g.end], g.depth == 2, repairs, span)


def _extra_action_lists(text: str) -> int:
    groups, _ = _scan_groups(text, _after_depth(text))
    return sum(1 for g in groups if _kind(text, g) == 'actions') - 1


# --- whole answer ----------------------------------------------------------------------------------

PARTS = ('depth', 'trace', 'actions')


def parse_answer(text: str, action_dim: int, vocab: VocabLike = None, *, horizon: Optional[int] = None,
                 parts: Sequence[str] = PARTS) -> ParsedAnswer:
    """Parse the ``parts`` of a model answer (all three by default; a steering answer has ``('actions',)``).

    Never raises on model output (``ValueError`` only for invalid arguments). Each part that cannot be
    read is ``None`` / empty, with its :class:`ParseError` in ``errors``.
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f'unknown parts {sorted(unknown)}; choose from {PARTS}')
    text = str(text)
    errors: list[ParseError] = []
    warnings: list[ParseError] = []
    depth: Optional[DepthTokens] = None
    traces: tuple[Trace, ...] = ()
    actions: Optional[ActionTokens] = None
    if 'depth' in parts:
        d = parse_depth(text)
        if isinstance(d, ParseError):
            errors.append(d)
        else:
            depth = d
            if text.find(DEPTH_START, d.span[1]) >= 0:  # type: ignore[index]
                warnings.append(ParseError('depth', ErrorCode.MULTIPLE, 'more than one depth block; the first is used'))
    if 'trace' in parts:
        t = parse_trace(text)
        if isinstance(t, ParseError):
            errors.append(t)
        else:
            traces = t
    if 'actions' in parts:
        a = parse_actions(text, action_dim, vocab, horizon=horizon)
        if isinstance(a, ParseError):
            errors.append(a)
        else:
            actions = a
            fixed = _repair_missing_open(text)[0]
            if _extra_action_lists(fixed) > 0:
                warnings.append(ParseError('actions', ErrorCode.MULTIPLE,
                                           'more than one action list; the first is used'))
    return ParsedAnswer(text, depth, traces, actions, tuple(errors), tuple(warnings),
                        actions.repairs if actions is not None else ())
