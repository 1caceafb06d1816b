"""The core: errors, paths, every stored record and results.json (schema, upgrades, summary, the Parquet store),
statistics, argument types. It imports nothing from the other bench packages (pyproject.toml's import contracts)."""
