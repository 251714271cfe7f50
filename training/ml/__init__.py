"""RLHF Studio's ML core: plain PyTorch + transformers, never Django or Celery.

Modules: ``loading`` (``--model`` specs to models; with ``devices``, ``gguf_cache``,
``tokenization``, ``tiny``, ``saving``, ``memory`` and ``chat``), ``sampling`` (K
responses per prompt), ``sft``, ``data`` (prompt and demonstration files),
``preferences``, ``losses``, ``reward`` (the reward model: model, batches, train,
evaluate), ``ppo`` (with its rollout, losses and checkpoints) and ``cli``
(``python -m training.ml``). Importing this package imports nothing heavy; each module
pulls in torch itself.
"""
