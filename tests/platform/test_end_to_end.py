"""A coordinator and three workers as separate OS processes run psi + hetero_lr + evaluate."""

from __future__ import annotations

import json

from harness import DEMO_JOB, Platform


def test_three_workers_run_the_demo_job_over_rest(platform: Platform) -> None:
    for i, party in enumerate(("bank", "shop", "coord")):
        platform.start_worker(party, i)
    platform.wait_parties(["bank", "shop", "coord"])
    job_id = platform.submit(DEMO_JOB % {"epochs": 3})
    job = platform.wait(job_id)
    assert job["state"] == "succeeded", (job, platform.logs())
    print(json.dumps(job["metrics"]))
    assert job["metrics"]["evaluate"]["auc"] > 0.9
