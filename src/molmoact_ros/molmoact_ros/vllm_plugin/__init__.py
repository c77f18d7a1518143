"""MolmoAct on vLLM: a ``vllm.general_plugins`` entry point of this package.

vLLM calls :func:`register` in every process it starts (front end, engine core, workers) when the
package is installed in its environment (setup.py declares the entry point). It registers

* the native configuration (``model_type`` "molmoact") with transformers' ``AutoConfig``, so vLLM reads a
  released checkpoint's ``config.json`` as it is (no remote code), and
* the architecture ``MolmoActForActionReasoning`` with vLLM's ``ModelRegistry``, lazily (the model module,
  :mod:`molmoact_ros.vllm_plugin.model`, imports vLLM's model code only when a MolmoAct is loaded).

The package must be installed in vLLM's environment (``pip install -e src/molmoact_ros``, done by
scripts/setup_vllm.sh): vLLM finds plugins through installed entry points, also in its worker processes.
"""

from __future__ import annotations

ARCHITECTURE = 'MolmoActForActionReasoning'
MODEL_CLASS = 'molmoact_ros.vllm_plugin.model:VllmMolmoActForActionReasoning'


def register() -> None:
    """Register MolmoAct with transformers and vLLM (idempotent; cheap: vLLM's model code is imported
    lazily)."""
    from vllm import ModelRegistry

    from ..model import register as register_native

    register_native()
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
