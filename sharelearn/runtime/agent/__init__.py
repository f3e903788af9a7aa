"""The worker service (`sharelearn worker`): one organisation's long-running task executor."""

from sharelearn.runtime.agent.client import CoordinatorClient, decision_payload
from sharelearn.runtime.agent.policy import Policy, load_policy
from sharelearn.runtime.agent.service import Worker, WorkerOptions, enroll_worker

__all__ = [
    "CoordinatorClient",
    "Policy",
    "Worker",
    "WorkerOptions",
    "decision_payload",
    "enroll_worker",
    "load_policy",
]
