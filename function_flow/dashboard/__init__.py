"""The web dashboard: runs, a run's graph and tasks, live, with its control buttons.

`function-flow dashboard` serves it (cli/dashboard.py); `create_app` builds
the Flask app for any store. Modules, one job each: app.py (the factory and
what requests share), guard.py (refusing cross-site actions), views.py
(pages), api.py (JSON and actions), actions.py (what the buttons do),
model.py and layout.py (what a run page draws, and where), graph.py (the
graph drawn: the definition or the records), details.py (one task),
definitions.py (finding a run's workflow). Templates and static files
are package data: an install ships them.
"""

from function_flow.dashboard.app import create_app

__all__ = ["create_app"]
