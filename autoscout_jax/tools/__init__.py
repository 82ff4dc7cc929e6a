"""Command-line tools: programs around the simulators, the bench and the
measured tables (WORKSPACE.md lists them).

Where it sits: on top of the library; no library module imports a tool.
Each is a small absl program over library functions; the ones that build
scoutbench tasks load them through bench/gin_tasks.py."""
