"""`python -m function_flow` and the `function-flow` console script.

The command line needs the `cli` extra (click, rich), which a deployed
Cloud Function does not install. Without it, this says what to install in
one line instead of an ImportError's traceback.
"""

from __future__ import annotations

import sys

#: The command line's own distributions (pyproject.toml's `cli` extra), by import name.
CLI_MODULES = {"click": "click", "rich": "rich"}
INSTALL_HINT = "pip install 'function-flow-orchestrator[cli]'"


def main() -> None:
    """Run the command line, or say in one line what it is missing."""
    import importlib.util

    missing = [name for name, module in CLI_MODULES.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        sys.stderr.write(f"error: the function-flow command needs {' and '.join(missing)}, "
                         f"which this Python does not have: {INSTALL_HINT}\n")
        sys.exit(2)
    from function_flow.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
