"""RLHF Studio's ML core: plain PyTorch + transformers, never Django or Celery.

Modules: ``models`` (load/save/prepare policies), ``sampling`` (K responses per prompt),
``sft``, ``data`` (prompt and demonstration files), ``preferences``, ``losses``, ``rm``,
``ppo`` and ``cli`` (``python -m training.ml``). Importing this package imports nothing
heavy; each module pulls in torch itself.
"""
