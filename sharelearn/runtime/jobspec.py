"""Job specs: a YAML job file -> typed, frozen `JobSpec` / `PartySpec` / `DataSpec` / `StepSpec`.

```yaml
job: credit-scoring            # optional; default: the file's stem
timeout_s: 600                 # optional: per-receive deadline for every party (seconds, > 0)
seed: 7                        # optional (default 0): every step's `seed` unless the step sets one
parties:                       # party name -> spec; order is preserved
  bank:  {role: guest, data: {path: bank.csv, id: id, label: y}}
  shop:  {role: host,  data: shop.csv, endpoint: "shop.example.org:7443",
          compute: {backend: processes, workers: 8}}   # optional: threads (default) | processes | ray
  coord: {role: arbiter}
steps:                         # run in order; each item is {step_name: {parameters}}
  - psi: {}
```

A data block may also say `missing: allow` (empty feature cells become NaN; default `error`),
`categorical: [col, ...]` (text columns kept as category codes) and `weight: col` (a sample-weight
column, read like the label and not a feature), e.g.
`data: {path: bank.csv, label: y, missing: allow, categorical: [job], weight: w}`.

`engine: tee` runs the steps on attested enclaves (the TEE route); an optional `tee:` block points
at a running cluster manager and the measurement to accept (`cm`, `mrenclave`, `allow_simulation`,
`simulation_root`, `storage`). Without it a `tee` job starts a local simulated platform itself.

A party's optional `compute:` block picks the executor of its heavy kernels (`runtime.executors`):
`backend: threads` (the default, `workers:` every core), `processes` (`workers:`), or `ray`
(`address: local | auto | ray://host:port`, `num_cpus:`).

`seed:` makes reruns bit-identical: it becomes the `seed` parameter of every step that has one and
does not set it (psi's common order, batch orders, splits, initial models, client sampling). What
stays fresh randomness every run, by design (keys, masks, blinding, DP noise), is listed by each
step's docstring and by `tests/algorithms/test_reproducible.py`.

Only safe YAML loading is used. Every error is a `ConfigError` that names the file, the key path
and the line: `job.yaml: parties.bank.role (line 4): unknown role 'gust'; expected one of ...`.
Sequence items count from 0 (`steps[0].psi.batch_size`). Data files are not opened here: each
party's reader checks its own file (`runtime.data`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml

from sharelearn.core.errors import ConfigError
from sharelearn.core.link import DEFAULT_TIMEOUT_S
from sharelearn.core.types import ROLES
from sharelearn.runtime.certs import PARTY_NAME
from sharelearn.runtime.executors import ComputeSpec

__all__ = [
    "DataFormat",
    "DataSpec",
    "DuplicateIds",
    "JobSpec",
    "MissingPolicy",
    "PartySpec",
    "StepSpec",
    "load_job",
    "parse_job",
]

DataFormat: TypeAlias = Literal["csv", "parquet"]
DuplicateIds: TypeAlias = Literal["error", "first", "drop"]
MissingPolicy: TypeAlias = Literal["error", "allow"]
KeyPath: TypeAlias = tuple[str | int, ...]
StepParams: TypeAlias = Mapping[str, Callable[..., Any]]
# (roles, data parties, params, names of the earlier steps) -> None or ConfigError
StepChecks: TypeAlias = Mapping[str, Callable[[Mapping[str, str], list[str], Any, list[str]], None]]

FORMAT_BY_SUFFIX: dict[str, DataFormat] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DUPLICATE_ID_MODES: tuple[str, ...] = ("error", "first", "drop")
# Party names become TLS names and link ids (the rule of runtime.certs); job names become folder names.
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ENDPOINT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})$")
_JOB_KEYS = ("job", "timeout_s", "seed", "engine", "tee", "parties", "steps")
_MAX_SEED = (1 << 63) - 1
ENGINES = ("federated", "tee")
_TEE_KEYS = ("cm", "mrenclave", "allow_simulation", "simulation_root", "storage")
_PARTY_KEYS = ("role", "data", "endpoint", "compute")
_COMPUTE_KEYS = ("backend", "workers", "address", "num_cpus")
_DATA_KEYS = (
    *("path", "id", "label", "features", "format", "duplicate_ids"),
    *("missing", "categorical", "weight"),
)
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class DataSpec:
    """Where a party's table lives and how to read it (checked by `runtime.data` at the party).

    Attributes:
        path: the file; relative paths in a job file are resolved against the job file's folder.
        id: the id column (always read as strings).
        label: the label column, or None.
        features: the feature columns in order; None = every column other than id and label.
        format: "csv" or "parquet"; when not given it is set from the suffix (.csv, .parquet, .pq).
        duplicate_ids: "error" (reject), "first" (keep each id's first row) or "drop" (every row).
        missing: "error" (default: an empty cell is a data error naming file, column and row) or
            "allow" (empty feature cells become NaN; steps that cannot handle them say so and ask
            for `impute` first). Ids, labels and weights are never allowed to be missing.
        categorical: text/categorical feature columns, kept as category codes 0..k-1 (the sorted
            category list is recorded with the table and the model package's preprocessing).
        weight: a sample-weight column (like the label, not a feature); finite and >= 0.
    """

    path: Path
    id: str = "id"
    label: str | None = None
    features: tuple[str, ...] | None = None
    format: DataFormat | None = None
    duplicate_ids: DuplicateIds = "error"
    missing: MissingPolicy = "error"
    categorical: tuple[str, ...] = ()
    weight: str | None = None

    def __post_init__(self) -> None:
        # Messages start with the offending key: the job loader maps them to that key's line.
        object.__setattr__(self, "path", Path(self.path))
        if self.format is None:
            if self.path.suffix.lower() not in FORMAT_BY_SUFFIX:
                raise ConfigError(f"path {str(self.path)!r}: cannot tell csv from parquet; set `format:`")
            object.__setattr__(self, "format", FORMAT_BY_SUFFIX[self.path.suffix.lower()])
        if self.format not in ("csv", "parquet"):
            raise ConfigError(f"format must be csv or parquet, got {self.format!r}")
        if self.duplicate_ids not in DUPLICATE_ID_MODES:
            raise ConfigError(f"duplicate_ids must be one of error, first, drop, got {self.duplicate_ids!r}")
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError(f"id must be a non-empty column name, got {self.id!r}")
        if self.label == self.id:
            raise ConfigError(f"label {self.label!r} is also the id column")
        features = None if self.features is None else tuple(self.features)
        object.__setattr__(self, "features", features)
        seen = {self.id, self.label}
        for name in features or ():
            if name in seen:
                raise ConfigError(f"features: {name!r} is listed twice, or is the id or label column")
            seen.add(name)
        self._check_extensions(features)

    def _check_extensions(self, features: tuple[str, ...] | None) -> None:
        """Check `missing`, `weight` and `categorical` against the other columns."""
        if self.missing not in ("error", "allow"):
            raise ConfigError(f"missing must be error or allow, got {self.missing!r}")
        if self.weight is not None and self.weight in (self.id, self.label, *(features or ())):
            raise ConfigError(f"weight {self.weight!r} is also the id, label or a feature column")
        categorical = tuple(self.categorical)
        object.__setattr__(self, "categorical", categorical)
        for name in categorical:
            if categorical.count(name) > 1 or name in (self.id, self.label, self.weight):
                raise ConfigError(
                    f"categorical: {name!r} is listed twice, or is the id, label or weight column"
                )
            if features is not None and name not in features:
                raise ConfigError(f"categorical: {name!r} is not one of the listed features")


@dataclass(frozen=True, slots=True)
class PartySpec:
    """One party of a job: name, role, optional data, `host:port` endpoint and compute settings."""

    name: str
    role: str
    data: DataSpec | None = None
    endpoint: str | None = None
    compute: ComputeSpec = dataclasses.field(default_factory=ComputeSpec)


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: its name, its parameters (a dict, or the step's params object) and its line."""

    name: str
    params: Any
    line: int


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A whole job: parties in file order, steps in run order, the per-receive deadline, the seed."""

    name: str
    path: Path | None
    base_dir: Path
    parties: dict[str, PartySpec]
    steps: tuple[StepSpec, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    engine: str = "federated"
    tee: dict[str, Any] | None = None
    seed: int = 0

    def by_role(self, role: str) -> list[PartySpec]:
        """Return the parties that have `role`, in job order."""
        return [p for p in self.parties.values() if p.role == role]

    def data_parties(self) -> list[PartySpec]:
        """Return the parties that hold data, in job order."""
        return [p for p in self.parties.values() if p.data is not None]


def load_job(
    path: Path | str, *, step_params: StepParams | None = None, step_checks: StepChecks | None = None
) -> JobSpec:
    """Read and validate a YAML job file.

    Args:
        path: the job file; data paths in it are relative to its folder.
        step_params: step name -> params dataclass. When given, unknown steps and unknown or
            mistyped parameters are errors, and each `StepSpec.params` is the params object.
        step_checks: step name -> check of the job's roles and parties for that step
            (`algorithms.rolecheck.ROLE_CHECKS`): role mistakes fail here, before any step runs.

    Raises:
        ConfigError: naming the file, key path and line of the first problem.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: job file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: job file is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read job file: {exc.strerror or exc}") from exc
    resolved = file.resolve()
    job = _parse(text, str(file), resolved.parent, resolved, file.stem, step_params)
    return _check_steps(job, str(file), step_checks)


def parse_job(
    text: str,
    *,
    source: str = "<string>",
    base_dir: Path | str | None = None,
    step_params: StepParams | None = None,
    step_checks: StepChecks | None = None,
) -> JobSpec:
    """Validate a job given as YAML text, like `load_job`.

    `source` names the text in errors and its stem is the default job name; relative data paths
    are resolved against `base_dir` (default: the current directory).
    """
    folder = Path.cwd() if base_dir is None else Path(base_dir).resolve()
    default_name = "job" if source.startswith("<") else Path(source).stem
    return _check_steps(_parse(text, source, folder, None, default_name, step_params), source, step_checks)


def _check_steps(job: JobSpec, source: str, checks: StepChecks | None) -> JobSpec:
    """Run each step's role check; a failure names the step's key path and line."""
    if not checks:
        return job
    roles = {p.name: p.role for p in job.parties.values()}
    data = [p.name for p in job.data_parties()]
    for index, step in enumerate(job.steps):
        check = checks.get(step.name)
        if check is None:
            continue
        try:
            check(roles, data, step.params, [s.name for s in job.steps[:index]])
        except ConfigError as exc:
            where = f"steps[{index}].{step.name} (line {step.line})"
            raise ConfigError(f"{source}: {where}: {exc}") from exc
    return job


def _parse(
    text: str, source: str, base: Path, path: Path | None, name: str, steps: StepParams | None
) -> JobSpec:
    data, doc = _load_yaml(text, source)
    if not isinstance(data, dict):
        raise doc.error((), f"the job must be a mapping with `parties` and `steps`, got {_kind(data)}")
    _check_keys(doc, (), data, _JOB_KEYS)
    for key in ("parties", "steps"):
        if key not in data:
            raise doc.error((), f"missing required key {key!r}")
    seed = _seed(doc, data.get("seed"))
    return JobSpec(
        name=_job_name(doc, data.get("job"), name),
        path=path,
        base_dir=base,
        parties=_parties(doc, data["parties"], base),
        steps=_steps(doc, data["steps"], steps, seed),
        timeout_s=_timeout(doc, data.get("timeout_s")),
        engine=_engine(doc, data.get("engine", "federated"), data.get("tee")),
        tee=_tee(doc, data.get("tee")),
        seed=seed,
    )


def _seed(doc: _Doc, value: Any) -> int:
    if value is None:
        return 0
    if not (isinstance(value, int) and not isinstance(value, bool)) or not 0 <= value <= _MAX_SEED:
        raise doc.error(("seed",), f"must be an integer in 0..2**63-1, got {_kind(value)}")
    return int(value)


def _engine(doc: _Doc, value: Any, tee: Any) -> str:
    if value not in ENGINES:
        raise doc.error(("engine",), f"unknown engine {value!r}; expected one of {', '.join(ENGINES)}")
    if tee is not None and value != "tee":
        raise doc.error(("tee",), "a `tee:` block needs `engine: tee`")
    return str(value)


def _tee(doc: _Doc, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise doc.error(("tee",), f"must be a mapping with cm and mrenclave, got {_kind(value)}")
    _check_keys(doc, ("tee",), value, _TEE_KEYS)
    for key in ("cm", "mrenclave"):
        if key not in value:
            raise doc.error(("tee",), f"missing required key {key!r}")
    _endpoint(doc, ("tee", "cm"), value["cm"])
    if not isinstance(value["mrenclave"], str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value["mrenclave"]):
        raise doc.error(("tee", "mrenclave"), f"must be 64 hex digits, got {_kind(value['mrenclave'])}")
    if not isinstance(value.get("allow_simulation", False), bool):
        raise doc.error(("tee", "allow_simulation"), "must be true or false")
    for key in ("simulation_root", "storage"):
        if key in value:
            _string(doc, ("tee", key), value[key])
    if value.get("allow_simulation") and "simulation_root" not in value:
        raise doc.error(("tee",), "allow_simulation: true needs simulation_root (the pinned root's DER file)")
    return dict(value)


@dataclass(frozen=True, slots=True)
class _Doc:
    """The source name and the line of every key path, for error messages."""

    source: str
    lines: dict[KeyPath, int]

    def line(self, path: KeyPath) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: KeyPath, message: str) -> ConfigError:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        location = f"{where} (line {self.line(path)})" if where else f"line {self.line(path)}"
        return ConfigError(f"{self.source}: {location}: {message}")


def _load_yaml(text: str, source: str) -> tuple[Any, _Doc]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        doc = _Doc(source, {(): 1 if node is None else node.start_mark.line + 1})
        if node is None:
            return None, doc
        _walk(loader, node, (), doc, set())
        return loader.construct_document(node), doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{source}: {line}invalid YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from exc
    finally:
        loader.dispose()


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, doc: _Doc, seen: set[int]) -> None:
    """Record the line of every key path and reject duplicate keys (PyYAML silently keeps the last)."""
    if id(node) in seen:  # an alias: walk each node once (cycles, "billion laughs")
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[(*path, index)] = item.start_mark.line + 1
            _walk(loader, item, (*path, index), doc, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                _walk(loader, value_node, path, doc, seen)
                continue
            key, line = str(loader.construct_object(key_node)), key_node.start_mark.line + 1
            doc.lines[(*path, key)] = line
            if key in first:
                raise doc.error((*path, key), f"duplicate key {key!r} (first at line {first[key]})")
            first[key] = line
            _walk(loader, value_node, (*path, key), doc, seen)


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", type(None): "nothing (null)"}
    return names.get(type(value), f"{type(value).__name__} {value!r}")


def _check_keys(doc: _Doc, path: KeyPath, mapping: dict[Any, Any], allowed: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in allowed:
            raise doc.error((*path, str(key)), f"unknown key {key!r}; expected one of {', '.join(allowed)}")


def _string(doc: _Doc, path: KeyPath, value: Any, what: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value:
        raise doc.error(path, f"must be {what}, got {_kind(value)}")
    return value


def _job_name(doc: _Doc, value: Any, default: str) -> str:
    if value is None:
        return default
    if not _JOB_NAME.match(_string(doc, ("job",), value)):
        raise doc.error(("job",), f"job name {value!r} must be 1-128 letters, digits, '_', '.' or '-'")
    return str(value)


def _timeout(doc: _Doc, value: Any) -> float:
    if value is None:
        return DEFAULT_TIMEOUT_S
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise doc.error(("timeout_s",), f"must be a number of seconds > 0, got {_kind(value)}")
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parties(doc: _Doc, value: Any, base_dir: Path) -> dict[str, PartySpec]:
    if not isinstance(value, dict):
        raise doc.error(("parties",), f"must be a mapping of party name -> spec, got {_kind(value)}")
    if not value:
        raise doc.error(("parties",), "no parties; a job needs at least one")
    return {str(name): _party(doc, name, spec, base_dir) for name, spec in value.items()}


def _party(doc: _Doc, name: Any, spec: Any, base_dir: Path) -> PartySpec:
    path: KeyPath = ("parties", str(name))
    if not isinstance(name, str) or not PARTY_NAME.match(name):
        raise doc.error(path, f"party name {name!r} must be 1-63 letters, digits, '_', '.' or '-'")
    if not isinstance(spec, dict):
        raise doc.error(path, f"party spec must be a mapping like {{role: guest}}, got {_kind(spec)}")
    _check_keys(doc, path, spec, _PARTY_KEYS)
    if "role" not in spec:
        raise doc.error(path, f"missing required key 'role' (one of {', '.join(ROLES)})")
    if spec["role"] not in ROLES:
        raise doc.error((*path, "role"), f"unknown role {spec['role']!r}; expected one of {', '.join(ROLES)}")
    data = spec.get("data")
    return PartySpec(
        name=name,
        role=spec["role"],
        data=None if data is None else _data(doc, (*path, "data"), data, base_dir),
        endpoint=_endpoint(doc, (*path, "endpoint"), spec.get("endpoint")),
        compute=_compute(doc, (*path, "compute"), spec.get("compute")),
    )


def _compute(doc: _Doc, path: KeyPath, value: Any) -> ComputeSpec:
    if value is None:
        return ComputeSpec()
    if not isinstance(value, dict):
        raise doc.error(path, f"compute must be a mapping like {{backend: threads}}, got {_kind(value)}")
    _check_keys(doc, path, value, _COMPUTE_KEYS)
    for key in ("workers", "num_cpus"):
        if key in value and not (isinstance(value[key], int) and not isinstance(value[key], bool)):
            raise doc.error((*path, key), f"must be an integer, got {_kind(value[key])}")
    if "address" in value:
        _string(doc, (*path, "address"), value["address"])
    try:
        return ComputeSpec(**value)
    except ConfigError as exc:  # ComputeSpec's messages start with the key at fault
        at = next((k for k in _COMPUTE_KEYS if str(exc).startswith(k)), None)
        raise doc.error(path if at is None else (*path, at), str(exc)) from exc


def _endpoint(doc: _Doc, path: KeyPath, value: Any) -> str | None:
    if value is None:
        return None
    match = _ENDPOINT.match(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise doc.error(path, f"must be 'host:port' with a port in 1..65535, got {_kind(value)}")
    return str(value)


def _data(doc: _Doc, path: KeyPath, value: Any, base_dir: Path) -> DataSpec:
    value = {"path": value} if isinstance(value, str) else value
    if not isinstance(value, dict):
        raise doc.error(path, f"data must be a file path or a mapping with `path`, got {_kind(value)}")
    _check_keys(doc, path, value, _DATA_KEYS)
    if "path" not in value:
        raise doc.error(path, "missing required key 'path'")
    file = Path(_string(doc, (*path, "path"), value["path"])).expanduser()
    fields = {k: v for k, v in value.items() if v is not None or k == "id"}
    for key in ("id", "label", "format", "duplicate_ids", "missing", "weight"):
        if key in fields:
            _string(doc, (*path, key), fields[key])
    for key in ("features", "categorical"):
        if key in fields:
            fields[key] = _features(doc, (*path, key), fields[key])
    fields["path"] = file if file.is_absolute() else base_dir / file
    try:
        return DataSpec(**fields)
    except ConfigError as exc:  # DataSpec's messages start with the key at fault
        at = next((k for k in _DATA_KEYS if str(exc).startswith(k)), None)
        raise doc.error(path if at is None else (*path, at), str(exc)) from exc


def _features(doc: _Doc, path: KeyPath, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise doc.error(path, f"must be a list of column names, got {_kind(value)}")
    return tuple(_string(doc, (*path, i), item, "a column name") for i, item in enumerate(value))


def _steps(doc: _Doc, value: Any, step_params: StepParams | None, seed: int = 0) -> tuple[StepSpec, ...]:
    if not isinstance(value, list):
        raise doc.error(("steps",), f"must be a list of `- step_name: {{params}}` items, got {_kind(value)}")
    if not value:
        raise doc.error(("steps",), "no steps; a job needs at least one")
    return tuple(_step(doc, index, item, step_params, seed) for index, item in enumerate(value))


def _with_seed(factory: Callable[..., Any], params: dict[str, Any], seed: int) -> dict[str, Any]:
    """`params` with the job's seed as `seed` when the step has that parameter and does not set it."""
    if "seed" in params or not (isinstance(factory, type) and dataclasses.is_dataclass(factory)):
        return params
    if "seed" not in {f.name for f in dataclasses.fields(factory) if f.init}:
        return params
    return {**params, "seed": seed}


def _step(doc: _Doc, index: int, item: Any, step_params: StepParams | None, seed: int = 0) -> StepSpec:
    if not isinstance(item, dict) or len(item) != 1:
        raise doc.error(
            ("steps", index), f"a step must be a single-key mapping like `- psi: {{}}`, got {_kind(item)}"
        )
    ((name, params),) = item.items()
    path: KeyPath = ("steps", index, str(name))
    if not isinstance(name, str) or not name:
        raise doc.error(path, f"step name must be a non-empty string, got {_kind(name)}")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise doc.error(path, f"step parameters must be a mapping, got {_kind(params)}")
    for key in params:
        _string(doc, (*path, str(key)), key, "a parameter name (a string)")
    if step_params is None:
        return StepSpec(name, dict(params), doc.line(path))
    if name not in step_params:
        raise doc.error(
            path, f"unknown step {name!r}; known steps: {', '.join(sorted(step_params)) or '(none)'}"
        )
    factory = step_params[name]
    built = _build(doc, path, factory, _with_seed(factory, params, seed))
    return StepSpec(name, _nested_params(doc, path, built, step_params, seed), doc.line(path))


def _nested_params(doc: _Doc, path: KeyPath, built: Any, step_params: StepParams, seed: int) -> Any:
    """Build a step's parameters that are another step's (`metadata={"params_of": "<field>"}`).

    `cross_validate: {step: hetero_lr, params: {...}}`: `params` is checked as hetero_lr's.
    """
    if not dataclasses.is_dataclass(built) or isinstance(built, type):
        return built
    for f in dataclasses.fields(built):
        other = f.metadata.get("params_of")
        value = getattr(built, f.name)
        if other is None or not isinstance(value, dict):
            continue
        target = getattr(built, other)
        if target not in step_params:
            raise doc.error((*path, other), f"unknown step {target!r}")
        factory = step_params[target]
        inner = _build(
            doc, (*path, f.name), factory, _with_seed(factory, value, getattr(built, "seed", seed))
        )
        built = dataclasses.replace(built, **{f.name: inner})
    return built


def _build(doc: _Doc, path: KeyPath, factory: Callable[..., Any], params: dict[str, Any]) -> Any:
    """Check `params` against the fields of the params dataclass `factory`, then construct it."""
    if isinstance(factory, type) and dataclasses.is_dataclass(factory):
        params = _typed_fields(doc, path, factory, params)
    try:
        return factory(**params)
    except ConfigError as exc:
        raise doc.error(path, str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise doc.error(path, f"invalid parameters: {exc}") from exc


def _typed_fields(doc: _Doc, path: KeyPath, cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """Check and coerce `params` against the dataclass `cls`.

    A field may declare `metadata={"alias": "lambda"}`: the job file may then use that name (for
    parameter names that are Python keywords, such as XGBoost's `lambda`).
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = {f.metadata["alias"]: f.name for f in fields.values() if "alias" in f.metadata}
    for alias, name in aliases.items():
        if alias in params:
            if name in params:
                raise doc.error((*path, alias), f"give either {alias!r} or {name!r}, not both")
            params = {(name if k == alias else k): v for k, v in params.items()}
    for key in params:
        if key == "workers" and key not in fields:
            raise doc.error(
                (*path, key),
                "unknown parameter 'workers': set a party's cores in its `compute: {workers: N}`",
            )
        if key not in fields and key in getattr(cls, "RENAMED", {}):
            raise doc.error((*path, key), f"parameter {key!r} is now written {cls.RENAMED[key]}")  # type: ignore[attr-defined]
        if key not in fields:
            expected = f"expected one of {', '.join(fields)}" if fields else "this step takes none"
            raise doc.error((*path, key), f"unknown parameter {key!r}; {expected}")
    required = {n for n, f in fields.items() if f.default is f.default_factory is dataclasses.MISSING}
    if missing := sorted(required - params.keys()):
        raise doc.error(path, f"missing required parameter(s): {', '.join(missing)}")
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # annotations that cannot be resolved are left to __post_init__
        hints = {}
    return {key: _coerce(doc, (*path, key), value, hints.get(key, Any)) for key, value in params.items()}


def _coerce(doc: _Doc, path: KeyPath, value: Any, tp: Any) -> Any:
    """Return `value` checked against the annotation `tp`, converting int -> float and list -> tuple."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise doc.error(path, f"must be one of {', '.join(map(repr, args))}, got {_kind(value)}")
    if origin in (types.UnionType, typing.Union):
        for member in args:
            try:
                return _coerce(doc, path, value, member)
            except ConfigError:
                continue
    elif origin in (tuple, list) or tp in (tuple, list):
        return _coerce_sequence(doc, path, value, tp, origin or tp, args)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build(doc, path, tp, value)
    elif tp is float and _is_number(value):
        return float(value)
    elif _scalar_ok(value, tp):
        return value
    name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
    raise doc.error(path, f"expected {name}, got {_kind(value)}")


def _scalar_ok(value: Any, tp: Any) -> bool:
    if tp is None or tp is type(None):
        return value is None
    if tp is int:
        return _is_number(value) and isinstance(value, int)
    return tp is Any or not isinstance(tp, type) or isinstance(value, tp)


def _coerce_sequence(doc: _Doc, path: KeyPath, value: Any, tp: Any, kind: Any, args: tuple[Any, ...]) -> Any:
    if not isinstance(value, list | tuple):
        raise doc.error(path, f"expected a list, got {_kind(value)}")
    if kind is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise doc.error(path, f"expected a list of {len(args)} items, got {len(value)}")
        items = [_coerce(doc, (*path, i), v, a) for i, (v, a) in enumerate(zip(value, args, strict=True))]
    else:
        inner = args[0] if args else Any
        items = [_coerce(doc, (*path, i), v, inner) for i, v in enumerate(value)]
    return tuple(items) if kind is tuple else items
