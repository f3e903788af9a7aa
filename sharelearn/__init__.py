"""sharelearn: shared machine learning across organisations whose rows never leave home."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
