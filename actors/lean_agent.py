"""The raylet's dashboard agent without its modules, for a lean local Ray (``runtime.ray_lean``).

Run as ``python -m longwatch.actors.lean_agent <ray>/dashboard/agent.py ARGS…`` in place of
``python <ray>/dashboard/agent.py ARGS…`` (:func:`longwatch.actors.runtime._lean_head` builds that
command). The agent is a process the raylet waits for before a node is ready. At start it imports
every package under ``ray.dashboard.modules`` to find its modules (0.7 s here) and loads seven:
job submission, log and event streaming to the dashboard, the metrics reporter, a health page,
an event aggregator. A lean local Ray has no dashboard to serve them to, and Ray's minimal install
(``pip install ray``) runs the agent with none of them, so this does the same without the walk.
Anything unexpected (another Ray) leaves the agent as Ray wrote it.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def _no_agent_modules() -> None:
    try:
        from ray.dashboard import utils as dashboard_utils
    except ImportError:  # pragma: no cover - another Ray: the agent as it is
        return
    original = getattr(dashboard_utils, "get_all_modules", None)
    if original is None or not hasattr(dashboard_utils, "DashboardAgentModule"):  # pragma: no cover
        return

    def get_all_modules(module_type):
        if module_type is dashboard_utils.DashboardAgentModule:
            return []
        return original(module_type)

    dashboard_utils.get_all_modules = get_all_modules


def main() -> None:
    script = sys.argv[1]
    sys.argv = sys.argv[1:]  # the agent's own argv: its path, then its arguments
    sys.path.insert(0, str(Path(script).parent))  # as `python agent.py` would
    _no_agent_modules()
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
