"""Command-line tools: programs around the simulators, the bench and the
measured tables (WORKSPACE.md lists them).

Where it sits: on top of the library; no library module imports a tool.
Each is a small absl program over library functions; the ones that build
scoutbench tasks load them through the bench's entry (bench/__main__.py:
load_task), which only a program may import: it imports gin."""
