"""Driver side: what the notebooks in ``notebooks/`` share, so they run on Databricks and as plain Python.

On Databricks the notebooks get ``dbutils`` (widgets, which a job's parameters fill) and write under a Unity
Catalog volume (``/Volumes/<catalog>/<schema>/<volume>``, mounted on every node; new workspaces no longer mount the
DBFS root); elsewhere the same parameters come from ``UCLUSTER_<NAME>`` environment variables or the defaults.
"""

from __future__ import annotations

import os
from typing import Any

from ucluster_spark import logs


def parameters(defaults: dict[str, str], dbutils: Any = None) -> dict[str, str]:
    """Text widgets named like ``defaults`` on Databricks; environment variables ``UCLUSTER_<NAME>`` elsewhere.
    Also shows the package's progress in the notebook's output (``logs``), as the jobs do."""
    logs.configure()
    if dbutils is not None:
        for name, default in defaults.items():
            dbutils.widgets.text(name, default)
        return {name: dbutils.widgets.get(name) for name in defaults}
    return {name: os.environ.get(f"UCLUSTER_{name.upper()}", default) for name, default in defaults.items()}


DATABRICKS_VOLUME = "/Volumes/main/default/ucluster"
"""The notebooks' default work folder on Databricks: the volume ``ucluster`` of schema ``main.default`` (create it,
or set each notebook's path widgets to a volume of your own; ``dbfs:/`` paths still work where DBFS is mounted)."""


def work_root(dbutils: Any = None) -> str:
    """Where the notebooks write by default: a Unity Catalog volume on Databricks, a local directory elsewhere."""
    return DATABRICKS_VOLUME if dbutils is not None else "notebook-work"


def overrides(text: str) -> list[str]:
    """A widget's ``section.key=value`` overrides, separated by spaces or newlines."""
    return text.split()
