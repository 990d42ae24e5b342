"""Training, corpus building and evaluation for eacap (`python -m train ...`)."""
