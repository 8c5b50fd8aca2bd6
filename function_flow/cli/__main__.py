"""`python -m function_flow.cli`: the same as the `function-flow` command."""

from function_flow.cli import main

main()
