"""Registration of the native MolmoAct classes with transformers' Auto classes (idempotent)."""

from __future__ import annotations

from .configuration import MODEL_TYPE, MolmoActConfig
from .modeling import MolmoActForActionReasoning

_registered = False


def register() -> None:
    """Register config, model and processor for model_type "molmoact" (config.json's ``auto_map`` is
    then ignored: no remote code is fetched or run)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    from .processing import MolmoActProcessor

    AutoConfig.register(MODEL_TYPE, MolmoActConfig, exist_ok=True)
    AutoModelForImageTextToText.register(MolmoActConfig, MolmoActForActionReasoning, exist_ok=True)
    AutoModelForCausalLM.register(MolmoActConfig, MolmoActForActionReasoning, exist_ok=True)
    AutoProcessor.register(MolmoActConfig, MolmoActProcessor, exist_ok=True)
    _registered = True
