"""The stages of `python -m train STAGE`, one module each (`train/__main__.py` maps stage names to modules):
teacher-init (`teacher_init`), cache, teacher, pseudo, student, ablation, evaluate, realworld (`cross_source`),
encoder-probe (`encoder_probe`), export, report, real-sounds (`side_by_side`), speed-variants (`variants`) and all
(`pipeline`). The corpus stages (soundbank, scenes) are in `train.corpus`.

A stage imports only from `train.core`, `train.corpus` and `eacap`; what two stages share lives in `train.core`.
The exceptions are the two stages whose job is to run other stages: `pipeline` and `ablation`.
"""
