"""PriorityMax Unified Trainer: ``python ml/trainer_full.py <command> [options...]``.

The seed's CLI. Commands are defined in :mod:`ml.cli` (also available as ``pmx <command>``);
``--help`` lists those that have landed.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, this file's folder would shadow top-level packages (e.g. a module named
    # like a dependency); the project is imported as the installed package instead.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]

from ml.cli import run, trainer  # noqa: E402

if __name__ == "__main__":
    run(trainer)
