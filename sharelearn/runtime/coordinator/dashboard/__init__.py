"""The web dashboard the coordinator serves at `/`: jobs, job pages, the wire, approvals, models,
parties. Server-rendered (Jinja2 + htmx), plots by plotly; every script and style ships here."""

from sharelearn.runtime.coordinator.dashboard.web import mount_dashboard

__all__ = ["mount_dashboard"]
