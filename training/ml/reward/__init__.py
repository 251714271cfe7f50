"""The reward model r(x, y) (InstructGPT section 3.5), one concern per module:

- ``model``: ``RewardModel`` (a scalar head read at the last real token) and its
  safetensors folder (``load_reward_model``, ``save_reward_model``);
- ``batches``: rankings encoded as token ids and flat (B, K) batches;
- ``train``: ``train_reward_model`` with the K-wise loss, its step plan and eval split;
- ``evaluate``: held-out accuracy, ``score_texts`` and the offset calibration.
"""
