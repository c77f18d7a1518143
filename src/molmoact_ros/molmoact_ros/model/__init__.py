"""Native MolmoAct: configuration, model, image processing, tokenizer and processor (ROS-free).

Loads AllenAI's released MolmoAct checkpoints on current transformers without ``trust_remote_code``,
and builds a tiny random-weight MolmoAct with the real Qwen2 vocabulary for tests and the offline demo.

Importing this package registers the classes with transformers' Auto classes for model_type
``molmoact``, so ``AutoConfig`` / ``AutoModelForImageTextToText`` / ``AutoModelForCausalLM`` load a
released checkpoint natively.
"""

from .configuration import (MODEL_TYPE, MolmoActAdapterConfig, MolmoActConfig, MolmoActLlmConfig,
                            MolmoActVitConfig)
from .modeling import MolmoActForActionReasoning
from .registration import register

register()

__all__ = ['MODEL_TYPE', 'MolmoActAdapterConfig', 'MolmoActConfig', 'MolmoActForActionReasoning',
           'MolmoActLlmConfig', 'MolmoActVitConfig', 'register']
