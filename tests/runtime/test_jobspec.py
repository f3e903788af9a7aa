from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from sharelearn.core.errors import ConfigError
from sharelearn.runtime.jobspec import DataSpec, JobSpec, load_job, parse_job

MINIMAL = """\
job: credit-scoring
timeout_s: 60
parties:
  bank:  {role: guest, data: {path: bank.csv, id: id, label: y}}
  shop:  {role: host,  data: {path: shop.csv, id: id}}
  coord: {role: arbiter}
steps:
  - psi: {}
"""


@dataclass(frozen=True, slots=True)
class FakePsi:
    batch_size: int = 8
    receivers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"psi.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True, slots=True)
class FakeLr:
    epochs: int
    learning_rate: float = 0.1
    penalty: Literal["l1", "l2"] = "l2"
    intercept: bool = True
    alpha: float | None = None


STEPS = {"psi": FakePsi, "hetero_lr": FakeLr}


def parse(text: str, **kwargs: object) -> JobSpec:
    return parse_job(text, source="job.yaml", base_dir=Path("/jobs"), **kwargs)  # type: ignore[arg-type]


def error_of(text: str, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, **kwargs)
    return str(info.value)


def test_minimal_job_round_trips(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(MINIMAL)

    job = load_job(tmp_path / "job.yaml")

    assert job.name == "credit-scoring"
    assert job.path == (tmp_path / "job.yaml").resolve()
    assert job.base_dir == tmp_path.resolve()
    assert job.timeout_s == 60.0
    assert list(job.parties) == ["bank", "shop", "coord"]
    bank = job.parties["bank"]
    assert bank.role == "guest" and bank.endpoint is None
    assert bank.data == DataSpec(path=tmp_path.resolve() / "bank.csv", id="id", label="y", format="csv")
    assert job.parties["coord"].data is None
    assert [s.name for s in job.steps] == ["psi"] and job.steps[0].params == {} and job.steps[0].line == 8
    assert [p.name for p in job.by_role("host")] == ["shop"]
    assert [p.name for p in job.data_parties()] == ["bank", "shop"]


def test_defaults_name_from_stem_and_data_from_bare_path(tmp_path: Path) -> None:
    text = (
        "parties:\n  a: {role: party, data: /abs/a.parquet}\n  b: {role: party, data: b.pq}\n"
        "steps:\n  - psi:\n"
    )
    (tmp_path / "my-job.yaml").write_text(text)

    job = load_job(tmp_path / "my-job.yaml")

    assert job.name == "my-job"
    assert job.timeout_s > 0
    assert job.parties["a"].data == DataSpec(path=Path("/abs/a.parquet"), id="id", format="parquet")
    assert job.parties["b"].data is not None and job.parties["b"].data.path == tmp_path.resolve() / "b.pq"
    assert job.steps[0].params == {}


def test_data_options_and_endpoint_are_parsed() -> None:
    text = MINIMAL.replace(
        "{path: shop.csv, id: id}",
        "{path: shop.txt, id: uid, features: [a, b], format: csv, duplicate_ids: first}, "
        'endpoint: "shop.example.org:7443"',
    )

    shop = parse(text).parties["shop"]

    assert shop.endpoint == "shop.example.org:7443"
    assert shop.data == DataSpec(
        path=Path("/jobs/shop.txt"), id="uid", features=("a", "b"), format="csv", duplicate_ids="first"
    )


def test_step_params_build_typed_objects() -> None:
    text = MINIMAL.replace(
        "  - psi: {}\n",
        "  - psi: {batch_size: 4, receivers: [bank]}\n"
        "  - hetero_lr: {epochs: 3, learning_rate: 1, alpha: 2}\n",
    )

    job = parse(text, step_params=STEPS)

    assert job.steps[0].params == FakePsi(batch_size=4, receivers=("bank",))
    lr = job.steps[1].params
    assert lr == FakeLr(epochs=3, learning_rate=1.0, alpha=2.0)
    assert isinstance(lr.learning_rate, float) and isinstance(lr.alpha, float)


def test_parse_job_without_path() -> None:
    job = parse_job(MINIMAL.replace("job: credit-scoring\n", ""))

    assert job.name == "job" and job.path is None and job.base_dir == Path.cwd()


def test_missing_job_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: job file not found"):
        load_job(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "role: guest",
            "role: gust",
            r"parties\.bank\.role \(line 4\): unknown role 'gust'; expected one of guest, host",
        ),
        (
            "  coord: {role: arbiter}\n",
            "  coord: {role: arbiter}\n  bank: {role: host}\n",
            r"parties\.bank \(line 7\): duplicate key 'bank' \(first at line 4\)",
        ),
        (
            "timeout_s: 60",
            "timeout_s: 60\ncolour: red",
            r"colour \(line 3\): unknown key 'colour'; expected one of job, timeout_s",
        ),
        ("{role: arbiter}", "{role: arbiter, cpu: 4}", r"parties\.coord\.cpu \(line 6\): unknown key 'cpu'"),
        (
            "id: id, label",
            "id: id, sep: ';', label",
            r"parties\.bank\.data\.sep \(line 4\): unknown key 'sep'",
        ),
        ("{role: arbiter}", "[arbiter]", r"parties\.coord \(line 6\): party spec must be a mapping"),
        ("{role: arbiter}", "{endpoint: 'c:1'}", r"parties\.coord \(line 6\): missing required key 'role'"),
        (
            "{role: arbiter}",
            "{role: arbiter, endpoint: 'nohost'}",
            r"parties\.coord\.endpoint \(line 6\): must be 'host:port'",
        ),
        (
            "{role: arbiter}",
            "{role: arbiter, endpoint: 'h:70000'}",
            r"parties\.coord\.endpoint \(line 6\): must be 'host:port'",
        ),
        (
            "  - psi: {}",
            "  - psi: {}\n    hetero_lr: {}",
            r"steps\[0\] \(line 8\): a step must be a single-key mapping",
        ),
        ("  - psi: {}", "  - psi", r"steps\[0\] \(line 8\): a step must be a single-key mapping"),
        ("  - psi: {}", "  - psi: [1, 2]", r"steps\[0\]\.psi \(line 8\): step parameters must be a mapping"),
        ("timeout_s: 60", "timeout_s: -1", r"timeout_s \(line 2\): must be a number of seconds > 0"),
        ("timeout_s: 60", "timeout_s: true", r"timeout_s \(line 2\): must be a number"),
        ("job: credit-scoring", "job: 'a/b'", r"job \(line 1\): job name 'a/b' must be"),
        ("  coord:", "  bad name:", r"parties\.bad name \(line 6\): party name 'bad name' must be"),
        ("path: shop.csv, id: id", "id: id", r"parties\.shop\.data \(line 5\): missing required key 'path'"),
        (
            "path: shop.csv",
            "path: shop.xlsx",
            r"parties\.shop\.data\.path \(line 5\): .*cannot tell csv from parquet",
        ),
        (
            "id: id, label",
            "id: ~, label",
            r"parties\.bank\.data\.id \(line 4\): must be a non-empty string",
        ),
        (
            "id: id, label",
            "id: '', label",
            r"parties\.bank\.data\.id \(line 4\): must be a non-empty string",
        ),
        (
            "id: id}",
            "id: id, format: xls}",
            r"parties\.shop\.data\.format \(line 5\): format must be csv or parquet",
        ),
        (
            "id: id}",
            "id: id, duplicate_ids: keep}",
            r"parties\.shop\.data\.duplicate_ids \(line 5\): duplicate_ids must",
        ),
        (
            "id: id}",
            "id: id, features: [x, x]}",
            r"parties\.shop\.data\.features \(line 5\): features: 'x' is listed twice",
        ),
        ("id: id}", "id: id, features: x}", r"parties\.shop\.data\.features \(line 5\): must be a list"),
        (
            "{role: arbiter}",
            "{role: arbiter, data: 3}",
            r"parties\.coord\.data \(line 6\): data must be a file path",
        ),
    ],
)
def test_errors_name_file_key_path_and_line(old: str, new: str, expected: str) -> None:
    assert old in MINIMAL

    message = error_of(MINIMAL.replace(old, new, 1))

    assert message.startswith("job.yaml: ")
    assert re.search(expected, message), message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", r"job\.yaml: line 1: the job must be a mapping"),
        (
            "- a\n- b\n",
            r"job\.yaml: line 1: the job must be a mapping with `parties` and `steps`, got a list",
        ),
        ("steps:\n  - psi: {}\n", r"job\.yaml: line 1: missing required key 'parties'"),
        ("parties:\n  a: {role: host}\n", r"job\.yaml: line 1: missing required key 'steps'"),
        ("parties: {}\nsteps: [psi: {}]\n", r"parties \(line 1\): no parties"),
        ("parties: [a]\nsteps: [psi: {}]\n", r"parties \(line 1\): must be a mapping of party name"),
        ("parties:\n  a: {role: host}\nsteps: []\n", r"steps \(line 3\): no steps"),
        ("parties:\n  a: {role: host}\nsteps: {psi: {}}\n", r"steps \(line 3\): must be a list"),
        ("parties:\n  a: {role: host\nsteps: []\n", r"job\.yaml: line 3: invalid YAML"),
        ("parties:\n  a: !!python/object:os.system {}\nsteps: []\n", r"job\.yaml: line 2: invalid YAML"),
        ("a: 1\n---\nb: 2\n", r"job\.yaml: line \d: invalid YAML"),
    ],
)
def test_document_level_errors(text: str, expected: str) -> None:
    assert re.search(expected, error_of(text)), error_of(text)


def test_duplicate_keys_are_caught_in_step_params() -> None:
    text = MINIMAL.replace("  - psi: {}", "  - psi:\n      batch_size: 1\n      batch_size: 2")

    assert "steps[0].psi.batch_size (line 10): duplicate key 'batch_size' (first at line 9)" in error_of(text)


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = MINIMAL.replace("  - psi: {}", "  - psi:\n      <<: {batch_size: 1}\n      batch_size: 2")

    assert parse(text).steps[0].params == {"batch_size": 2}


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("  - pis: {}", r"steps\[0\]\.pis \(line 8\): unknown step 'pis'; known steps: hetero_lr, psi"),
        (
            "  - psi: {foo: 1}",
            r"steps\[0\]\.psi\.foo \(line 8\): unknown parameter 'foo'; expected one of batch_size, rec",
        ),
        ("  - psi: {batch_size: '4'}", r"steps\[0\]\.psi\.batch_size \(line 8\): expected int, got str '4'"),
        (
            "  - psi: {batch_size: 1.5}",
            r"steps\[0\]\.psi\.batch_size \(line 8\): expected int, got float 1\.5",
        ),
        (
            "  - psi: {batch_size: true}",
            r"steps\[0\]\.psi\.batch_size \(line 8\): expected int, got bool True",
        ),
        ("  - psi: {receivers: bank}", r"steps\[0\]\.psi\.receivers \(line 8\): expected a list"),
        (
            "  - psi: {receivers: [bank, 3]}",
            r"steps\[0\]\.psi\.receivers\[1\] \(line 8\): expected str, got int 3",
        ),
        ("  - psi: {batch_size: 0}", r"steps\[0\]\.psi \(line 8\): psi\.batch_size must be >= 1, got 0"),
        ("  - hetero_lr: {}", r"steps\[0\]\.hetero_lr \(line 8\): missing required parameter\(s\): epochs"),
        (
            "  - hetero_lr: {epochs: 1, penalty: l3}",
            r"hetero_lr\.penalty \(line 8\): must be one of 'l1', 'l2'",
        ),
        ("  - hetero_lr: {epochs: 1, intercept: 1}", r"hetero_lr\.intercept \(line 8\): expected bool"),
        ("  - hetero_lr: {epochs: 1, alpha: x}", r"hetero_lr\.alpha \(line 8\): expected float \| None"),
    ],
)
def test_step_params_are_checked(step: str, expected: str) -> None:
    message = error_of(MINIMAL.replace("  - psi: {}", step), step_params=STEPS)

    assert re.search(expected, message), message


def test_without_step_params_any_step_is_accepted() -> None:
    job = parse(MINIMAL.replace("  - psi: {}", "  - anything: {x: [1, 2]}"))

    assert job.steps[0].name == "anything" and job.steps[0].params == {"x": [1, 2]}


def test_data_spec_infers_format_and_validates_directly() -> None:
    assert DataSpec(path=Path("a.PARQUET")).format == "parquet"
    with pytest.raises(ConfigError, match="label 'id' is also the id column"):
        DataSpec(path=Path("a.csv"), label="id")
    with pytest.raises(ConfigError, match="cannot tell csv from parquet"):
        DataSpec(path=Path("a.tsv"))


TEE_JOB = """\
engine: tee
parties:
  bank: {role: guest, data: {path: bank.csv, id: id, label: y}}
steps:
  - tee_upload: {}
"""


def test_engine_tee_and_tee_block_are_parsed() -> None:
    job = parse_job(TEE_JOB)
    assert job.engine == "tee" and job.tee is None
    assert parse_job(MINIMAL).engine == "federated"
    block = "tee: {cm: '127.0.0.1:7000', mrenclave: '" + "ab" * 32 + "', allow_simulation: false}\n"
    job = parse_job(block + TEE_JOB)
    assert job.tee == {"cm": "127.0.0.1:7000", "mrenclave": "ab" * 32, "allow_simulation": False}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("engine: sgx\n" + TEE_JOB.replace("engine: tee\n", ""), "engine (line 1): unknown engine 'sgx'"),
        (
            "tee: {cm: 'h:1', mrenclave: '" + "ab" * 32 + "'}\n" + MINIMAL,
            "a `tee:` block needs `engine: tee`",
        ),
        ("tee: {cm: 'h:1', mrenclave: abc}\n" + TEE_JOB, "tee.mrenclave (line 1): must be 64 hex digits"),
        ("tee: {mrenclave: '" + "ab" * 32 + "'}\n" + TEE_JOB, "missing required key 'cm'"),
        ("tee: {cm: 'h:1', mrenclave: '" + "ab" * 32 + "', pcs: x}\n" + TEE_JOB, "unknown key 'pcs'"),
        (
            "tee: {cm: 'h:1', mrenclave: '" + "ab" * 32 + "', allow_simulation: true}\n" + TEE_JOB,
            "allow_simulation: true needs simulation_root",
        ),
    ],
)
def test_bad_engine_or_tee_block_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_job(text)


def test_a_parameter_alias_lets_a_job_use_a_python_keyword_name() -> None:
    from sharelearn.algorithms.registry import step_params

    base = "job: j\nparties:\n  a: {role: guest, data: a.csv}\n  b: {role: host, data: b.csv}\nsteps:\n"
    job = parse_job(base + "  - secureboost: {lambda: 2.5, gamma: 0.1}\n", step_params=step_params())
    assert job.steps[0].params.reg_lambda == 2.5 and job.steps[0].params.gamma == 0.1
    with pytest.raises(ConfigError, match="either 'lambda' or 'reg_lambda'"):
        parse_job(base + "  - secureboost: {lambda: 2.5, reg_lambda: 1}\n", step_params=step_params())


def test_job_seed_becomes_every_step_seed_the_step_does_not_set() -> None:
    from sharelearn.algorithms.registry import step_params

    text = MINIMAL.replace("timeout_s: 60\n", "timeout_s: 60\nseed: 42\n").replace(
        "  - psi: {}", "  - psi: {}\n  - hetero_lr: {seed: 3}\n  - secureboost: {}"
    )

    job = parse_job(text, step_params=step_params())

    assert job.seed == 42
    assert [getattr(s.params, "seed", None) for s in job.steps] == [42, 3, 42]
    assert parse_job(MINIMAL, step_params=step_params()).steps[0].params.seed == 0


@pytest.mark.parametrize("value", ["-1", "1.5", "true", "'7'"])
def test_job_seed_must_be_a_non_negative_integer(value: str) -> None:
    message = error_of(MINIMAL.replace("timeout_s: 60\n", f"timeout_s: 60\nseed: {value}\n"))

    assert "seed (line 3): must be an integer" in message
