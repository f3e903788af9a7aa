"""`fedavg`'s option groups (secagg, dp, simulation, server) parse from nested job mappings."""

from __future__ import annotations

import re

import pytest

from sharelearn.algorithms.horizontal.fedavg import FedAvgParams
from sharelearn.algorithms.horizontal.options import RENAMED, DpOptions, SecAggOptions, ServerOptions
from sharelearn.algorithms.registry import step_params
from sharelearn.algorithms.rolecheck import ROLE_CHECKS
from sharelearn.core.errors import ConfigError
from sharelearn.interfaces.cli.app import exit_code
from sharelearn.runtime.jobspec import parse_job

PARTIES = (
    "parties:\n  agg: {role: server}\n  a: {role: client, data: a.csv}\n  b: {role: client, data: b.csv}\n"
)


def _parse(params: str) -> FedAvgParams:
    job = parse_job(
        f"{PARTIES}steps:\n  - fedavg: {params}\n",
        source="job.yaml",
        step_params=step_params(),
        step_checks=ROLE_CHECKS,
    )
    built = job.steps[0].params
    assert isinstance(built, FedAvgParams)
    return built


def _error(params: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _parse(params)
    assert exit_code(info.value) == 2
    return info.value


def test_nested_groups_build_frozen_option_dataclasses() -> None:
    p = _parse(
        "{rounds: 2, secure_aggregation: true, secagg: {threshold: 2, neighbours: 4, stage_timeout_s: 5},"
        " dp: {noise_multiplier: 1, clip_norm: 0.5}, server: {optimizer: adam, learning_rate: 0.05},"
        " simulation: {compute: local}}"
    )
    assert p.secagg == SecAggOptions(threshold=2, neighbours=4, stage_timeout_s=5.0)
    assert p.dp == DpOptions(noise_multiplier=1.0, clip_norm=0.5) and p.dp.enabled
    assert p.server == ServerOptions(optimizer="adam", learning_rate=0.05)
    assert p.compute == "local" and p.server_opt().kind == "adam"
    cfg = p.dp_config()
    assert cfg is not None and cfg.clip_norm == 0.5 and cfg.noise_multiplier == 1.0
    with pytest.raises(AttributeError):
        p.secagg.threshold = 3  # type: ignore[misc]
    defaults = _parse("{}")
    assert defaults.dp_config() is None and defaults.secagg == SecAggOptions() and defaults.compute == "local"


@pytest.mark.parametrize(
    ("params", "where", "what"),
    [
        ("{secagg: {threshold: -1}}", r"steps\[0\]\.fedavg\.secagg", "secagg.threshold"),
        ("{secagg: {modulus_bits: 65}}", r"steps\[0\]\.fedavg\.secagg", "secagg.modulus_bits"),
        ("{dp: {clip_norm: 0}}", r"steps\[0\]\.fedavg\.dp", "dp.clip_norm"),
        ("{dp: {noise: 1}}", r"steps\[0\]\.fedavg\.dp\.noise", "unknown parameter 'noise'"),
        ("{server: {optimizer: lamb}}", r"steps\[0\]\.fedavg\.server\.optimizer", "'sgd', 'adam', 'yogi'"),
        ("{simulation: {compute: spark}}", r"steps\[0\]\.fedavg\.simulation\.compute", "'local', 'ray'"),
        ("{simulation: {clients: 1}}", r"steps\[0\]\.fedavg\.simulation", "simulation.clients"),
        ("{model: forest}", r"steps\[0\]\.fedavg\.model", "'logistic'"),
        ("{dp: 3}", r"steps\[0\]\.fedavg\.dp", "DpOptions"),
    ],
)
def test_a_bad_group_value_names_its_key(params: str, where: str, what: str) -> None:
    message = str(_error(params))
    assert re.search(where, message), message
    assert what in message, message


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_flat_key_of_earlier_releases_says_its_new_spelling(old: str) -> None:
    message = str(_error(f"{{{old}: 1}}"))
    assert f"parameter {old!r} is now written {RENAMED[old]}" in message, message
    group = RENAMED[old].split(":")[0]
    assert group in ("secagg", "dp", "simulation", "server")


def test_python_callers_must_pass_option_objects() -> None:
    with pytest.raises(ConfigError, match="fedavg.secagg must be a SecAggOptions"):
        FedAvgParams(secagg={"threshold": 2})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FedAvgParams(secagg_threshold=2)  # type: ignore[call-arg]
