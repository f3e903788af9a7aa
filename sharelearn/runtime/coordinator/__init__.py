"""The coordinator: job store, task flow manager, task manager and REST API (`sharelearn coordinator`)."""

from sharelearn.runtime.coordinator.dispatch import Dispatcher
from sharelearn.runtime.coordinator.service import CoordinatorOptions, open_coordinator, serve
from sharelearn.runtime.coordinator.states import JobState, TaskState

__all__ = ["CoordinatorOptions", "Dispatcher", "JobState", "TaskState", "open_coordinator", "serve"]
