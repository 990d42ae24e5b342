"""What the stages share: presets (`config`), the training loop with checkpoints, data parallelism and the validation
score (`trainer`), the losses and clip embedding (`losses`), splits, deterministic batches and run paths (`data`),
recording-chain augmentation (`augment`), building and loading models (`models`), what a run is and the command that
trained it (`runs`), pretrained Whisper weights (`whisper_weights`), the teacher over its cached frozen layers
(`teacher_cache`), the students' KD targets (`kd_targets`) and the cross-source split and its scoring (`held_out`).
Modules here import `train.corpus`, `eacap` and each other, never a stage.
"""
