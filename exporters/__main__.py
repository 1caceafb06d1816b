import sys

from bench.cli import main

raise SystemExit(main(["export", *sys.argv[1:]]))
