"""Layering rules that import-linter cannot express: who may import what from `cryptography`."""

from __future__ import annotations

import re
from pathlib import Path

import sharelearn

PACKAGE = Path(sharelearn.__file__).parent

# cryptography's AEAD classes and KDFs, and the exception a failed AEAD tag raises.
_AEAD_OR_KDF = re.compile(
    r"^\s*(from|import)\s+cryptography\.hazmat\.primitives\.(ciphers\.aead|kdf)\b"
    r"|^\s*from\s+cryptography\.hazmat\.primitives\.ciphers\s+import\s+.*\baead\b"
    r"|^\s*from\s+cryptography\.hazmat\.primitives\s+import\s+.*\bkdf\b"
    r"|^\s*from\s+cryptography\.exceptions\s+import\s+.*\bInvalidTag\b",
    re.MULTILINE,
)

ALLOWED = {"crypto/aead.py", "crypto/kdf.py"}

# Known exceptions, to be emptied by the TEE engineer when tee/ and algorithms/tee/ call
# crypto.aead / crypto.kdf instead (issue 15, item 4). Do not add new entries: convert the caller.
KNOWN_TEE_EXCEPTIONS = {
    "algorithms/tee/data.py",
    "algorithms/tee/service.py",
    "tee/channel.py",
    "tee/envelope.py",
    "tee/sealing.py",
}


def _importers() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if _AEAD_OR_KDF.search(path.read_text(encoding="utf-8")):
            found.add(path.relative_to(PACKAGE).as_posix())
    return found


def test_only_aead_and_kdf_import_cryptography_aead() -> None:
    importers = _importers()

    offenders = importers - ALLOWED - KNOWN_TEE_EXCEPTIONS

    assert not offenders, f"only crypto/aead.py and crypto/kdf.py may import these: {sorted(offenders)}"
    assert importers >= ALLOWED, "the pattern no longer matches crypto/aead.py and kdf.py: fix the test"


def test_known_tee_exceptions_are_still_needed() -> None:
    """Keep the exception list honest: drop an entry as soon as its module is converted."""
    stale = KNOWN_TEE_EXCEPTIONS - _importers()

    assert not stale, f"no longer importing cryptography's AEAD/KDF; drop them from the list: {sorted(stale)}"
