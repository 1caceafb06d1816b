"""`python -m bench.service --model twin:tiny --backend ort-int8-cpu --port 0`."""

from bench.service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
