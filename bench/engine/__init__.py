"""The measuring engine: the grid of cells (harness), each run in fresh worker processes (runner, worker), and
the GPU peak probe, a measuring subprocess of its own."""
