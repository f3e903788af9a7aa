"""`python -m sharelearn` is the `sharelearn` command."""

from __future__ import annotations

from sharelearn.interfaces.cli.app import main

if __name__ == "__main__":
    main()
