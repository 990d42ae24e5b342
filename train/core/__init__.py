"""Shared training plumbing: presets (`config`), the training loop with checkpoints and data parallelism
(`trainer`), the losses (`losses`), deterministic batches (`data`) and recording-chain augmentation (`augment`)."""
