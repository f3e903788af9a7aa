"""A worker's approval policy: which jobs its organisation lets run on its data without asking.

```yaml
default: ask            # ask | approve | reject: what happens when no rule matches
auto_approve:           # a job is approved when one rule matches all of its keys
  - submitters: [admin]                   # who submitted it
    peers: [bank, shop, coord]            # every party of the job is one of these
    steps: [psi, hetero_lr, evaluate]     # every step of the job is one of these
    datasets: [breast_hetero_host.csv]    # every data file of this party is one of these
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sharelearn.core.errors import ConfigError
from sharelearn.runtime.jobspec import JobSpec

__all__ = ["Decision", "Policy", "Rule", "load_policy"]

Decision = Literal["approve", "reject", "ask"]
_RULE_KEYS = ("submitters", "peers", "steps", "datasets")


@dataclass(frozen=True, slots=True)
class Rule:
    submitters: frozenset[str] | None = None
    peers: frozenset[str] | None = None
    steps: frozenset[str] | None = None
    datasets: frozenset[str] | None = None

    def matches(self, job: JobSpec, party: str, submitter: str) -> bool:
        spec = job.parties.get(party)
        files = {spec.data.path.name} if spec is not None and spec.data is not None else set()
        checks = [
            (self.submitters, {submitter}),
            (self.peers, set(job.parties)),
            (self.steps, {s.name for s in job.steps}),
            (self.datasets, files),
        ]
        return all(allowed is None or wanted <= allowed for allowed, wanted in checks)


@dataclass(frozen=True, slots=True)
class Policy:
    default: Decision = "ask"
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    def decide(self, job: JobSpec, party: str, submitter: str) -> Decision:
        """`approve` when a rule matches, else the default."""
        if any(rule.matches(job, party, submitter) for rule in self.rules):
            return "approve"
        return self.default


def _rule(path: Path, index: int, doc: Any) -> Rule:
    if not isinstance(doc, dict) or set(doc) - set(_RULE_KEYS):
        raise ConfigError(
            f"{path}: auto_approve[{index}] must be a mapping with keys among {', '.join(_RULE_KEYS)}"
        )
    values: dict[str, frozenset[str]] = {}
    for key, value in doc.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: auto_approve[{index}].{key} must be a list of names")
        values[key] = frozenset(value)
    return Rule(**values)


def load_policy(path: Path | None) -> Policy:
    """Read a policy file; no file means `default: ask` (every job waits for a person)."""
    if path is None:
        return Policy()
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the approval policy: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) - {"default", "auto_approve"}:
        raise ConfigError(f"{path}: the policy is a mapping with `default` and `auto_approve`")
    default = doc.get("default", "ask")
    if default not in ("ask", "approve", "reject"):
        raise ConfigError(f"{path}: default must be ask, approve or reject, got {default!r}")
    rules = doc.get("auto_approve") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{path}: auto_approve must be a list of rules")
    return Policy(default, tuple(_rule(path, i, r) for i, r in enumerate(rules)))
