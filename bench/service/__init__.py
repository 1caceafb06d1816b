"""The inference service: the article's REST API and WebUI on FastAPI, with micro-batching, a cache, health,
metrics and strict input checking. `create_app` builds the app, `serve` runs it, `python -m bench.service` is
the command line (see `bench.service.cli`)."""
