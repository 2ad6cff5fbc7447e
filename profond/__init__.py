"""profond: a runnable, checkable deep-learning course (PyTorch, offline).

The public API mirrors the CLI:

>>> from profond import load_dataset, build_model, train
"""

__version__ = "0.1.0"
