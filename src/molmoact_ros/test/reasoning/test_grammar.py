"""MolmoAct answer grammar: formatting, parsing, round trips, malformations and fuzzing."""

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from molmoact_ros.model.tokenizer import ACTION_TOKEN_IDS, byte_level_string, load_qwen_ranks
from molmoact_ros.reasoning.grammar import (ACTION_TOKEN_STRINGS, ACTION_TOKEN_TO_ID, FINETUNE_TEMPLATE,
                                            MULTI_VIEW_TEMPLATE, PARTS, TEMPLATES, ActionTokens, DepthTokens, ErrorCode,
                                            ParseError, Trace, action_bin, bin_token_id, bin_token_string,
                                            format_actions, format_depth, format_trace, parse_actions,
                                            parse_answer, parse_depth, parse_trace)

codes_st = st.lists(st.integers(0, 127), min_size=100, max_size=100)
points_st = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=5)


@st.composite
def chunks(draw, dims=st.integers(1, 8), horizons=st.integers(1, 8)):
    d, h = draw(dims), draw(horizons)
    return [draw(st.lists(st.integers(0, 254), min_size=d, max_size=d)) for _ in range(h)]


def test_action_token_strings_are_the_last_256_qwen2_tokens():
    ranks = load_qwen_ranks()
    by_id = {i: t for t, i in ranks.items()}
    assert ACTION_TOKEN_STRINGS == tuple(byte_level_string(by_id[i]) for i in ACTION_TOKEN_IDS)
    assert ACTION_TOKEN_STRINGS[0] == 'ðŁİĳ' and ACTION_TOKEN_TO_ID['Ý¥'] == 151515
    assert ACTION_TOKEN_TO_ID['â½Ĺ'] == 151642
    for s in ACTION_TOKEN_STRINGS:  # what the parser relies on
        assert all(ord(c) > 127 for c in s) and unicodedata.normalize('NFC', s) == s


def test_bin_convention_is_the_released_parsers():
    assert action_bin(151642) == 0 and action_bin(151388) == 254 and action_bin(151387) == 254
    assert action_bin(151643) == 0 and action_bin(5) == 254  # what the released clip does off range
    assert [action_bin(bin_token_id(b)) for b in range(255)] == list(range(255))
    assert bin_token_string(0) == 'â½Ĺ'
    with pytest.raises(ValueError):
        bin_token_id(255)


def test_formats_are_the_models_text():
    assert format_trace([(59, 153), (74, 120)]) == '[[59,153],[74,120]]'
    assert format_trace([(59, 153), (74, 120)], spaced=True) == '[[59, 153], [74, 120]]'
    assert format_depth([3] * 100) == '<DEPTH_START>' + '<DEPTH_3>' * 100 + '<DEPTH_END>'
    assert format_actions([[0, 1]]) == '[â½Ĺ, âºŁ]'
    assert format_actions([[0, 1], [2, 3]]) == '[[â½Ĺ, âºŁ], [âį¨, áķ·]]'
    assert format_actions([[0, 1]], nested=True) == '[[â½Ĺ, âºŁ]]'
    text = MULTI_VIEW_TEMPLATE.format([[0] * 7] * 8, [1] * 100, [(59, 153), (74, 120)])
    assert text.startswith(' The depth map of the first image is <DEPTH_START><DEPTH_1>')
    assert '<DEPTH_END>. The trajectory of the end effector in the first image is [[59,153],[74,120]]. Based on ' \
           'these information, along with other images from different camera views as additional information, ' \
           'the action that the robot should take is [[â½Ĺ, ' in text and text.endswith(']].')
    ft = FINETUNE_TEMPLATE.format([[0] * 7] * 8, [1] * 100, [(1, 2)])
    assert ft.count('[[1, 2]]') == 2 and 'Based on this information, the action' in ft
    assert set(TEMPLATES) == {'multi_view', 'single_view', 'finetune', 'trajectory_conditioned'}


@pytest.mark.parametrize('call', [
    lambda: format_depth([0] * 99), lambda: format_depth([128] + [0] * 99), lambda: format_depth([-1] + [0] * 99),
    lambda: format_depth([0.5] * 100), lambda: format_trace([]), lambda: format_trace([(0, 0)] * 6),
    lambda: format_trace([(256, 0)]), lambda: format_trace([(1, 2, 3)]), lambda: format_trace([(True, 2)]),
    lambda: format_actions([]), lambda: format_actions([[255]]), lambda: format_actions([[1, 2], [3]]),
    lambda: format_actions([[]]), lambda: format_actions([[1], [2]], nested=False),
    lambda: MULTI_VIEW_TEMPLATE.format([[0]], None, [(1, 2)]),
])
def test_format_rejects_invalid_input(call):
    with pytest.raises(ValueError):
        call()


@settings(max_examples=60, deadline=None)
@given(codes_st)
def test_depth_round_trip(codes):
    text = format_depth(codes)
    assert parse_depth('x ' + text + '. y') == DepthTokens(tuple(codes), 10, 10, text)
    assert parse_depth(text).grid()[3] == tuple(codes[30:40])


@settings(max_examples=60, deadline=None)
@given(points_st, st.booleans())
def test_trace_round_trip(points, spaced):
    text = format_trace(points, spaced=spaced)
    assert parse_trace(f'The trajectory is {text}. Based on') == (Trace(tuple(points), text),)


@settings(max_examples=60, deadline=None)
@given(chunks(), st.booleans())
def test_actions_round_trip(bins, nested):
    nested = nested or len(bins) > 1
    text = format_actions(bins, nested=nested)
    got = parse_actions(f'take is {text}.', len(bins[0]), horizon=len(bins))
    ids = tuple(tuple(bin_token_id(b) for b in step) for step in bins)
    assert got == ActionTokens(tuple(map(tuple, bins)), ids, text, nested)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(TEMPLATES)), codes_st, points_st, chunks(dims=st.just(7)), st.booleans())
def test_answer_round_trip_every_template(name, codes, points, bins, spaced):
    template = TEMPLATES[name]
    text = template.format(bins, codes, points, spaced=spaced)
    parts = PARTS if template.depth_sentence else ('actions',)
    got = parse_answer(text, 7, horizon=len(bins), parts=parts)
    assert got.ok and not got.warnings and not got.repairs, got.errors
    assert got.actions.bins == tuple(map(tuple, bins)) and got.actions.nested == (len(bins) > 1)
    if template.depth_sentence:
        assert got.depth.codes == tuple(codes)
        assert [t.points for t in got.traces] == [tuple(points)] * len(template.trace_sentences)
        assert got.trace.text == format_trace(points, spaced=spaced)


def test_observed_libero_output_parses():
    chunk = ', '.join(['[' + ', '.join(ACTION_TOKEN_STRINGS[100 + i:107 + i]) + ']' for i in range(8)])
    text = (' The depth map of the first image is ' + format_depth(range(100)) + '. The trajectory of the end '
            'effector in the first image is [[59,153],[74,120],[74,120]]. Based on these information, along with '
            'other images from different camera views as additional information, the action that the robot '
            f'should take is [{chunk}].')
    got = parse_answer(text, 7, horizon=8)
    assert got.ok and got.trace.points == ((59, 153), (74, 120), (74, 120))
    assert got.actions.token_ids[0] == tuple(range(151487, 151494))
    assert got.actions.bins[0] == tuple(151642 - i for i in range(151487, 151494))


def test_parse_actions_accepts_a_tokenizer_like_or_mapping_vocab():
    class Tok:
        unk_token_id = None

        def convert_tokens_to_ids(self, token):
            return ACTION_TOKEN_TO_ID.get(token, 17 if token == 'a' else None)

    text = 'is [' + ', '.join(ACTION_TOKEN_STRINGS[:3]) + ']'
    assert parse_actions(text, 3, Tok()).token_ids == ((151387, 151388, 151389),)
    assert parse_actions(text, 3, dict(ACTION_TOKEN_TO_ID)).bins == ((254, 254, 253),)
    for items in (['a'] + list(ACTION_TOKEN_STRINGS[:2]), ['aé'] + list(ACTION_TOKEN_STRINGS[:2])):
        # a regular token that is not an action token (the released parser maps it to bin 254), an unknown one
        bad = parse_actions('is [' + ', '.join(items) + ']', 3, Tok())
        assert isinstance(bad, ParseError) and bad.code == ErrorCode.UNKNOWN_TOKEN


def _steps(n, d=7):
    return [', '.join(ACTION_TOKEN_STRINGS[i:i + d]) for i in range(n)]


def test_missing_open_bracket_is_repaired_and_reported():
    one = _steps(1)[0]
    got = parse_answer(f' Based on this information, the action that the robot should take is {one}].', 7,
                       parts=('actions',))
    assert got.ok and got.actions.bins[0] == tuple(action_bin(151387 + i) for i in range(7))
    assert len(got.repairs) == 1 and got.repairs[0].inserted == '[' and got.repairs[0].kind == 'missing_open_bracket'
    assert got.repairs[0].position == got.text.index(one)
    rows = _steps(8)
    got = parse_answer(' take is ' + rows[0] + '], [' + '], ['.join(rows[1:]) + ']].', 7, horizon=8,
                       parts=('actions',))
    assert got.ok and got.actions.horizon == 8 and got.repairs[0].inserted == '[['
    got = parse_answer(' take is [' + '], ['.join(rows) + ']].', 7, parts=('actions',))  # outer '[' missing
    assert got.ok and got.actions.horizon == 8 and got.repairs[0].inserted == '['
    got = parse_answer(' take is [' + rows[0] + ']].', 7, parts=('actions',))  # an extra ']' is not "repaired"
    assert got.ok and not got.repairs and got.actions.horizon == 1


def test_malformations_are_reported_not_guessed():
    depth = format_depth([5] * 100)
    act = '[' + _steps(1)[0] + ']'
    cases = {
        depth + ' [[59,153],[74,],[1,2]] ' + act: ('trace', ErrorCode.EMPTY_VALUE),
        depth + ' [[59,153],[,74]] ' + act: ('trace', ErrorCode.EMPTY_VALUE),
        depth + ' [[59,256]] ' + act: ('trace', ErrorCode.OUT_OF_RANGE),
        depth + ' [[1,2],[1,2],[1,2],[1,2],[1,2],[1,2]] ' + act: ('trace', ErrorCode.WRONG_COUNT),
        depth + ' [[1,2,3]] ' + act: ('trace', ErrorCode.WRONG_POINT_SIZE),
        depth + ' [[1.5,2]] ' + act: ('trace', ErrorCode.NOT_INTEGER),
        depth + ' [] ' + act: ('trace', ErrorCode.WRONG_COUNT),
        depth + ' [59,153] ' + act: ('trace', ErrorCode.MALFORMED),
        depth + ' no trace ' + act: ('trace', ErrorCode.MISSING),
        depth + ' [[1,2]] [' + _steps(1, 6)[0] + ']': ('actions', ErrorCode.WRONG_ACTION_DIM),
        depth + ' [[1,2]] [' + _steps(1)[0] + ', ]': ('actions', ErrorCode.EMPTY_VALUE),
        depth + ' [[1,2]] [[' + _steps(1)[0] + '], [' + _steps(1, 6)[0] + ']]': ('actions', ErrorCode.WRONG_ACTION_DIM),
        depth + ' [[1,2]] [' + _steps(1, 6)[0] + ', éé]': ('actions', ErrorCode.UNKNOWN_TOKEN),
        depth + ' [[1,2]] [' + _steps(1)[0]: ('actions', ErrorCode.TRUNCATED),
        depth + ' [[1,2]] [[[' + _steps(1)[0] + ']]]': ('actions', ErrorCode.MALFORMED),
        depth + ' [[1,2]] the end': ('actions', ErrorCode.MISSING),
        depth.replace('<DEPTH_5>', '', 1): ('depth', ErrorCode.WRONG_COUNT),
        depth.replace('<DEPTH_5>', '<DEPTH_128>', 1): ('depth', ErrorCode.OUT_OF_RANGE),
        depth.replace('<DEPTH_5>', '<DEPTH_5> x', 1): ('depth', ErrorCode.MALFORMED),
        depth[:200]: ('depth', ErrorCode.TRUNCATED),
        depth[:-3]: ('depth', ErrorCode.TRUNCATED),
        'no depth here': ('depth', ErrorCode.MISSING),
        depth.replace('<DEPTH_START>', ''): ('depth', ErrorCode.MALFORMED),
    }
    for text, (part, code) in cases.items():
        got = parse_answer(text, 7)
        err = got.error(part)
        assert err is not None and err.code == code, (text[-80:], got.errors)
    got = parse_answer(depth + ' [[1,2]] [[' + _steps(1)[0] + ']]', 7, horizon=8)
    assert got.error('actions').code == ErrorCode.WRONG_HORIZON
    got = parse_answer(depth + depth + ' [[1,2]] ' + act + ' ' + act, 7)
    assert got.ok and {w.part for w in got.warnings} == {'depth', 'actions'}


def test_brackets_before_the_depth_block_are_ignored():
    text = 'odd [text( <DEPTH_START>' + '<DEPTH_1>' * 100 + '<DEPTH_END> [[1,2]] [' + _steps(1)[0] + ']'
    assert parse_answer(text, 7).ok


def test_parse_answer_rejects_bad_arguments():
    with pytest.raises(ValueError):
        parse_answer('x', 7, parts=('depth', 'speed'))
    with pytest.raises(ValueError):
        parse_answer('x', 0)


_ANSWER = MULTI_VIEW_TEMPLATE.format([[i, 254 - i, 3, 4, 5, 6, 7] for i in range(8)], list(range(100)),
                                     [(59, 153), (74, 120)])
_FT_ANSWER = FINETUNE_TEMPLATE.format([[1, 2, 3, 4, 5, 6, 7]], [0] * 100, [(1, 2)], nested=False)
_JUNK = st.lists(st.sampled_from(list('[], 0123456789.<>_DEPTHSARN') + ['<DEPTH_', '<DEPTH_END>', '<DEPTH_START>',
                                                                           '<DEPTH_7>', 'Ý¥', 'é', '\n']),
                 max_size=6).map(''.join)


def _check_result(got, parts=PARTS):
    assert isinstance(got.errors, tuple) and isinstance(got.warnings, tuple)
    parts_with_errors = {e.part for e in got.errors} | (set(PARTS) - set(parts))
    assert all(isinstance(e, ParseError) and isinstance(e.code, ErrorCode) for e in got.errors)
    if 'depth' not in parts_with_errors:
        assert len(got.depth.codes) == 100 and all(0 <= c < 128 for c in got.depth.codes)
    if 'trace' not in parts_with_errors:
        assert got.traces and all(1 <= len(t.points) <= 5 for t in got.traces)
        assert all(0 <= v <= 255 for t in got.traces for p in t.points for v in p)
    if 'actions' not in parts_with_errors:
        assert all(len(s) == 7 and all(0 <= b <= 254 for b in s) for s in got.actions.bins)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([_ANSWER, _FT_ANSWER]), st.integers(0, 2000), st.integers(0, 2000), _JUNK,
       st.integers(0, 3))
def test_fuzz_truncations_and_insertions_never_raise(answer, cut, at, junk, mode):
    text = answer
    if mode in (0, 2):
        text = text[:cut % (len(text) + 1)]
    if mode in (1, 2):
        at %= len(text) + 1
        text = text[:at] + junk + text[at:]
    if mode == 3:  # delete a slice
        at %= len(text) + 1
        text = text[:at] + text[at + len(junk):]
    _check_result(parse_answer(text, 7))
    _check_result(parse_answer(text, 7, parts=('actions',), horizon=8), ('actions',))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_arbitrary_text_never_raises(text):
    _check_result(parse_answer(text, 7))
    for parse in (parse_depth, parse_trace):
        assert parse(text) is not None
