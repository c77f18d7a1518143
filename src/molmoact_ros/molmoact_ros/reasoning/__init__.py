"""MolmoAct's reasoning: what the model writes (depth tokens, trace, action tokens) and what the pipeline
does with it, e.g. ``grammar`` (format and parse the answer) and ``constraints`` (grammar-constrained
decoding, one logits processor per stage). ROS-free.
"""
