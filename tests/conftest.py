from __future__ import annotations

import sys
from pathlib import Path

# Role wrappers for multi-process tests live beside the tests and must be importable by name
# in spawned processes.
for sub in ("operators", "runtime", "integration", "algorithms"):
    path = str(Path(__file__).parent / sub)
    if path not in sys.path:
        sys.path.insert(0, path)
