"""`python -m eacap caption FILE...` / `python -m eacap compare FILE`: see eacap/cli.py."""
import sys

from .cli import main

sys.exit(main())
