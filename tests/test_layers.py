"""Layering rules that import-linter cannot express: who may import what from `cryptography`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the `sharelearn` package found under `root`, with the repo's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    exe = Path(sys.executable).with_name("lint-imports")
    config = PACKAGE.parent / "pyproject.toml"
    return subprocess.run(
        [str(exe), "--config", str(config), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.skipif(not (PACKAGE.parent / "pyproject.toml").exists(), reason="needs the source tree")
def test_import_contracts_hold_with_no_ignores() -> None:
    text = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")

    run = _lint_imports(PACKAGE.parent)

    assert run.returncode == 0, run.stdout[-3000:]
    assert "ignore_imports" not in text
    assert run.stdout.count(" KEPT") >= 6


@pytest.mark.skipif(not (PACKAGE.parent / "pyproject.toml").exists(), reason="needs the source tree")
def test_import_contracts_catch_a_protocol_reaching_past_crypto_he(tmp_path: Path) -> None:
    """The adversary: an operator importing Paillier (or a native kernel, or the runtime) directly."""
    shutil.copytree(PACKAGE, tmp_path / "sharelearn", ignore=shutil.ignore_patterns("__pycache__"))
    bad = tmp_path / "sharelearn" / "operators" / "sneaky.py"
    bad.write_text("from sharelearn.crypto import paillier\nfrom sharelearn.crypto.kernels import mbx\n")
    (tmp_path / "sharelearn" / "crypto" / "sneaky.py").write_text("from sharelearn.runtime import procpool\n")

    run = _lint_imports(tmp_path)

    assert run.returncode != 0
    assert "sharelearn.operators.sneaky -> sharelearn.crypto.paillier" in run.stdout
    assert "sharelearn.operators.sneaky -> sharelearn.crypto.kernels" in run.stdout
    assert "sharelearn.crypto.sneaky -> sharelearn.runtime.procpool" in run.stdout


ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"
_PATH = re.compile(r"`((?:[a-z_0-9]+/)+[a-z_0-9]+)(?:\.py)?(?:\.([a-z_0-9]+))?")


def _modules() -> set[str]:
    """Every module of the package as `pkg/sub/name` (no __init__), relative to `sharelearn/`."""
    return {
        p.relative_to(PACKAGE).with_suffix("").as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py"
    }


@pytest.mark.skipif(not ARCHITECTURE.exists(), reason="needs the source tree")
def test_architecture_names_only_modules_and_functions_that_exist() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    modules = _modules()

    named = _PATH.findall(text)

    assert len(named) >= 10
    for path, attr in named:
        if path.startswith("tests/") or (PACKAGE / path).is_dir():
            continue
        assert path in modules, f"ARCHITECTURE.md names {path!r}, which is not a module"
        if attr:
            source = (PACKAGE / f"{path}.py").read_text(encoding="utf-8")
            assert re.search(rf"^(def|class) {attr}\b|^    def {attr}\b", source, re.M), (
                f"{path}.{attr} not found"
            )


@pytest.mark.skipif(not ARCHITECTURE.exists(), reason="needs the source tree")
def test_architecture_lists_every_package_and_module() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    listed = set(re.findall(r"`([a-z_0-9]+)", text)) | {
        p.rstrip("/").split("/")[-1] for p, _ in _PATH.findall(text)
    }

    missing = sorted(m for m in _modules() if m.split("/")[-1] not in listed)

    assert not missing, f"add a line for these modules to ARCHITECTURE.md: {missing}"
