"""`python -m sama_rt` is the CLI (so `torchrun -m sama_rt ...` works too)."""
import sys

from .cli import main

sys.exit(main())
