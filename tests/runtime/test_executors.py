"""Executors: the same kernels give the same results serially, on threads, on processes and on Ray."""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from sharelearn.core.errors import ConfigError, CryptoError
from sharelearn.core.executor import SERIAL, Executor, chunk_bounds, parts_for
from sharelearn.crypto import he, x25519
from sharelearn.interfaces.api import run_job
from sharelearn.operators.psi import PsiParams
from sharelearn.runtime import procpool
from sharelearn.runtime.executors import (
    ComputeSpec,
    ProcessExecutor,
    RayExecutor,
    ThreadExecutor,
    make_executor,
)
from sharelearn.runtime.jobspec import parse_job

# -- kernels for the tests: module-level, so worker processes can import them -----------------


def where(item: int) -> list[int]:
    """The item, the process and the thread that ran it."""
    return [item, os.getpid(), threading.get_ident()]


def square(item: int) -> int:
    return item * item


def fail_on_three(item: int) -> int:
    if item == 3:
        raise CryptoError(f"item {item} is bad")
    return item


def nested(item: list[Any]) -> list[int]:
    """A kernel that maps again on the executor it was handed (must not deadlock)."""
    executor, n = item
    return list(executor.map(square, list(range(n))))


@pytest.fixture
def threads() -> Iterator[ThreadExecutor]:
    with ThreadExecutor(2) as executor:
        yield executor


@pytest.fixture
def processes() -> Iterator[ProcessExecutor]:
    with ProcessExecutor(2) as executor:
        yield executor


def test_chunking_helpers_cover_every_item_once() -> None:
    bounds = chunk_bounds(1001, 4, multiple=8)

    assert bounds[0] == (0, 256) and bounds[-1][1] == 1001
    assert [b for _, b in bounds[:-1]] == [a for a, _ in bounds[1:]]
    assert parts_for(None, 10_000, 96) == 1
    assert parts_for(SERIAL, 10_000, 96) == 1
    assert parts_for(ThreadExecutor(4), 10_000, 96) == 4
    assert parts_for(ThreadExecutor(4), 200, 96) == 2


def test_thread_executor_runs_gil_free_items_on_threads_and_keeps_order(threads: ThreadExecutor) -> None:
    out = threads.map(where, list(range(8)))

    assert [row[0] for row in out] == list(range(8))
    assert {row[1] for row in out} == {os.getpid()}
    assert threading.get_ident() not in {row[2] for row in out}


def test_thread_executor_sends_gil_bound_items_to_worker_processes(threads: ThreadExecutor) -> None:
    out = threads.map(where, list(range(6)), releases_gil=False)

    assert [row[0] for row in out] == list(range(6))
    assert len({row[1] for row in out}) == 2  # the caller and one worker process
    assert os.getpid() in {row[1] for row in out}


def test_gil_bound_items_can_stay_on_threads() -> None:
    with ThreadExecutor(2, gil_bound="threads") as executor:
        out = executor.map(where, list(range(6)), releases_gil=False)

    assert {row[1] for row in out} == {os.getpid()}


def test_a_kernel_that_maps_again_runs_serially_instead_of_deadlocking(threads: ThreadExecutor) -> None:
    out = threads.map(nested, [[threads, 5], [threads, 3]])

    assert out == [[0, 1, 4, 9, 16], [0, 1, 4]]


def test_process_executor_keeps_order_and_reuses_its_workers(processes: ProcessExecutor) -> None:
    first = processes.map(where, list(range(10)))
    second = processes.map(where, list(range(10)))

    assert [row[0] for row in first] == list(range(10))
    workers = {row[1] for row in first} - {os.getpid()}
    assert len(workers) == 1
    assert ({row[1] for row in second} - {os.getpid()}) == workers  # persistent, not restarted


def test_process_executor_refuses_lambdas_and_non_wire_items(processes: ProcessExecutor) -> None:
    with pytest.raises(ConfigError, match="module-level functions"):
        processes.map(lambda x: x, [1, 2])
    with pytest.raises(ConfigError, match="wire values"):
        processes.map(square, [object(), object(), object()])


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_kernel_error_reaches_the_caller_with_its_class(kind: str, request: pytest.FixtureRequest) -> None:
    executor: Executor = request.getfixturevalue(kind)

    with pytest.raises(CryptoError, match="item 3 is bad"):
        executor.map(fail_on_three, list(range(6)), releases_gil=False)

    assert executor.map(square, [1, 2, 3]) == [1, 4, 9]  # still usable


def test_items_of_a_dead_worker_are_redone_in_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(procpool, "_ENTRY", "import sys; sys.exit(3)")
    caplog.set_level(logging.WARNING)

    with ProcessExecutor(3) as executor:
        out = executor.map(square, list(range(9)))

    assert out == [i * i for i in range(9)]
    assert "redone in-process" in caplog.text


def test_he_and_x25519_kernels_give_the_same_results_on_every_executor(
    threads: ThreadExecutor, processes: ProcessExecutor
) -> None:
    pk, sk = he.keygen("paillier", 1024, rng=random.Random(4).randbytes)
    x = np.arange(-200, 200)
    points = x25519.hash_to_point(str(i).encode() for i in range(3 * 8192 + 5))
    scalar = bytes(range(32))
    want_ct = he.encrypt(pk, x, rng=random.Random(5).randbytes).ct.tolist()
    want_pts = x25519.scalarmult(scalar, points)

    for executor in (threads, processes):
        c = he.encrypt(pk, x, rng=random.Random(5).randbytes, executor=executor)

        assert c.ct.tolist() == want_ct
        np.testing.assert_array_equal(he.decrypt(sk, c, executor=executor), x)
        np.testing.assert_array_equal(x25519.scalarmult(scalar, points, executor=executor), want_pts)


def test_compute_spec_validates_each_key() -> None:
    assert isinstance(make_executor(), ThreadExecutor)
    assert isinstance(make_executor(ComputeSpec("processes", workers=2)), ProcessExecutor)
    assert isinstance(make_executor(ComputeSpec("ray", address="auto", num_cpus=4)), RayExecutor)
    bad = [
        ({"backend": "gpu"}, "backend must be one of"),
        ({"workers": 0}, "workers must be an integer"),
        ({"backend": "ray", "workers": 2}, "workers applies to threads and processes"),
        ({"backend": "ray", "address": "http://x:1"}, "address must be"),
        ({"backend": "ray", "num_cpus": 0}, "num_cpus must be"),
        ({"backend": "threads", "address": "auto"}, "address applies to backend ray only"),
    ]
    for fields, message in bad:
        with pytest.raises(ConfigError, match=message):
            ComputeSpec(**fields)


_JOB = """\
parties:
  bank: {role: guest, data: bank.csv}
  shop:
    role: host
    data: shop.csv
    compute: COMPUTE
steps:
  - psi: {}
"""


def test_job_compute_blocks_parse_and_errors_name_the_key_and_line() -> None:
    job = parse_job(_JOB.replace("COMPUTE", "{backend: ray, address: 'ray://10.0.0.5:10001', num_cpus: 8}"))

    assert job.parties["bank"].compute == ComputeSpec()
    assert job.parties["shop"].compute == ComputeSpec("ray", address="ray://10.0.0.5:10001", num_cpus=8)
    cases = [
        (
            "{backend: processes, workers: many}",
            r"parties\.shop\.compute\.workers \(line 6\): must be an integer",
        ),
        ("{backend: threads, cores: 2}", r"parties\.shop\.compute\.cores \(line 6\): unknown key 'cores'"),
        ("{backend: gpu}", r"parties\.shop\.compute\.backend \(line 6\): backend must be one of"),
        ("threads", r"parties\.shop\.compute \(line 6\): compute must be a mapping"),
    ]
    for compute, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_job(_JOB.replace("COMPUTE", compute))


def test_a_step_workers_parameter_points_to_the_compute_block() -> None:
    text = _JOB.replace("COMPUTE", "{}").replace("psi: {}", "psi: {workers: 4}")

    with pytest.raises(ConfigError, match=r"steps\[0\]\.psi\.workers .*compute: \{workers: N\}"):
        parse_job(text, step_params={"psi": PsiParams})


@pytest.mark.timeout(240)
def test_ray_executor_runs_the_kernels_on_a_local_cluster() -> None:
    pytest.importorskip("ray")
    pk, sk = he.keygen("ou", 1024, rng=random.Random(6).randbytes)
    x = np.linspace(-3.0, 3.0, 400)
    want = he.encrypt(pk, x, rng=random.Random(7).randbytes).ct.tolist()

    with RayExecutor("local", num_cpus=2) as executor:
        c = he.encrypt(pk, x, rng=random.Random(7).randbytes, executor=executor)
        plain = he.decrypt(sk, c, executor=executor)
        squares = executor.map(square, [1, 2, 3])

    assert c.ct.tolist() == want
    np.testing.assert_allclose(plain, x, atol=1e-9)
    assert squares == [1, 4, 9]


def _breast_split(folder: Path) -> tuple[Path, Path]:
    """A vertical split of scikit-learn's breast cancer set: guest 10 features + label, host 20."""
    data = load_breast_cancer()
    x = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    ids = [f"p{i:04d}" for i in range(len(x))]
    guest = pd.DataFrame(x[:, :10], columns=[f"g{j}" for j in range(10)]).assign(y=data.target)
    host = pd.DataFrame(x[:, 10:], columns=[f"h{j}" for j in range(20)])
    guest.insert(0, "id", ids)
    host.insert(0, "id", ids[::-1])  # another row order: PSI aligns them
    paths = folder / "guest.csv", folder / "host.csv"
    guest.to_csv(paths[0], index=False)
    host.iloc[::-1].to_csv(paths[1], index=False)
    return paths


def _lr_job(folder: Path, data: tuple[Path, Path], compute: dict[str, str]) -> Path:
    job = folder / "job.yaml"
    job.write_text(
        "job: lr-compute\ntimeout_s: 120\nparties:\n"
        f"  bank: {{role: guest, data: {{path: {data[0]}, id: id, label: y}}, compute: {compute['bank']}}}\n"
        f"  shop: {{role: host, data: {{path: {data[1]}, id: id}}, compute: {compute['shop']}}}\n"
        f"  coord: {{role: arbiter, compute: {compute['coord']}}}\n"
        "steps:\n  - psi: {}\n"
        "  - hetero_lr: {epochs: 2, batch_size: 256, key_bits: 1024, seed: 1}\n"
        "  - evaluate: {plots: false}\n"
    )
    return job


@pytest.mark.grpc
@pytest.mark.timeout(300)
def test_a_job_runs_each_party_on_the_executor_its_compute_block_names(tmp_path: Path) -> None:
    # PSI draws a fresh common order per run, so two runs train on different batches: the kernels'
    # bit-identity across executors is checked above; here every backend runs in a real job.
    data = _breast_split(tmp_path)
    compute = {
        "bank": "{backend: processes, workers: 2}",
        "shop": "{backend: threads, workers: 2}",
        "coord": "{backend: threads, workers: 1}",
    }

    summary = run_job(_lr_job(tmp_path, data, compute), report_dir=tmp_path / "report")

    assert summary["status"] == "success", summary["error"]
    assert summary["steps"]["psi"]["intersection_size"] == 569
    assert summary["steps"]["evaluate"]["auc"] > 0.95
