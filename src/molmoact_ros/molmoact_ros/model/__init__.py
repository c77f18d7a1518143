"""Native MolmoAct: configuration, model, image processing, tokenizer and processor (ROS-free).

Loads AllenAI's released MolmoAct checkpoints on current transformers without ``trust_remote_code``,
and builds a tiny random-weight MolmoAct with the real Qwen2 vocabulary for tests and the offline demo.
"""
