"""The application on top: a run's stages (pipeline), the command line (cli, args), the serving-config tune and
the benchmark checks."""
