"""The simulated service measures every sharelearn file it executes (TEE.md §2: code.json)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sharelearn
from sharelearn.algorithms.tee.service import build_bundle, code_files
from sharelearn.tee.process import read_bundle
from sharelearn.tee.sim.backend import measure_bundle

pytestmark = pytest.mark.timeout(120)
ROOT = Path(sharelearn.__file__).resolve().parent


def _verify(pkg: Path, bundle: Path) -> subprocess.CompletedProcess[str]:
    """Run the bundle's start-up check as the enclave would (`python -I`), over the package in `pkg`."""
    code = (
        f"import sys; sys.path[:0] = [{str(pkg)!r}, {str(bundle)!r}]; import app; app.verify(); print('ok')"
    )
    return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)


def test_every_module_the_enclave_service_loads_is_pinned() -> None:
    code = (
        "import sys, json; import sharelearn.tee.sim.loader, sharelearn.algorithms.tee.service, "
        "sharelearn.algorithms.tee.xgboost; "
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
        "if n.split('.')[0] == 'sharelearn' and getattr(m, '__file__', None))))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = {Path(p).resolve().relative_to(ROOT).as_posix() for p in __import__("json").loads(out.stdout)}
    pinned = set(code_files())
    assert "algorithms/__init__.py" in loaded  # executed inside the enclave: it was not pinned before
    assert loaded <= pinned, sorted(loaded - pinned)


def test_editing_an_executed_file_changes_mrenclave_and_the_edited_tree_is_refused(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT, pkg / "sharelearn", ignore=shutil.ignore_patterns("__pycache__"))
    bundle = build_bundle(tmp_path / "b", cluster="c", simulation_root_der=None, code_root=pkg / "sharelearn")
    assert _verify(pkg, bundle).stdout.strip() == "ok"
    before = measure_bundle(read_bundle(bundle))

    target = pkg / "sharelearn" / "algorithms" / "__init__.py"  # executed on `import sharelearn.algorithms`
    target.write_text(target.read_text() + "\nLEAK = True  # an edit by the host\n")
    refused = _verify(pkg, bundle)
    assert refused.returncode != 0 and "algorithms/__init__.py differs" in refused.stderr
    rebuilt = build_bundle(
        tmp_path / "b2", cluster="c", simulation_root_der=None, code_root=pkg / "sharelearn"
    )
    assert measure_bundle(read_bundle(rebuilt)) != before  # a rebuilt bundle has another MRENCLAVE

    (pkg / "sharelearn" / "planted.py").write_text("print('not measured')\n")  # a new, unlisted file
    refused = _verify(pkg, rebuilt)
    assert refused.returncode != 0 and "planted.py is not in the measured code.json" in refused.stderr
