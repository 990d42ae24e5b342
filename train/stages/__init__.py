"""The stages of `python -m train STAGE`: teacher-init, cache, teacher, pseudo, student, ablation, evaluate,
realworld, encoder-probe, export, report, real-sounds, speed-variants and `all` (`pipeline`); `runs` is what a
trained run is (recipe, folder, architecture, the command that made it), shared by them."""
