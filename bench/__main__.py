"""`python -m bench`: see bench.app.cli."""

from bench.app.cli import main

# Guarded: the tune and the service start replicas with multiprocessing "spawn", which imports this module
# again in every child.
if __name__ == "__main__":
    raise SystemExit(main())
