"""The FastAPI application: the article's API contract (section 4.2) and WebUI (section 4.1), plus health, metrics,
micro-batching, a cache and strict input checking.

Routes: `POST /api/sentiment`, `POST /api/sentiment/batch`, `GET /healthz`, `GET /metrics`, `GET /` (WebUI),
`/docs` and `/openapi.json`. Answers carry `inference_time_ms` = tokenise + model time of the batch that computed
them (0 for a cached answer). Status codes for bad input are listed in `bench.service.inputs`; over-long texts are
422 (a field rule), over-large bodies 413 (a transport limit).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline

from bench.backends import Backend
from bench.service import schemas
from bench.service.config import ServiceConfig
from bench.service.http import ShedMiddleware, TimingMiddleware, install_error_handlers, request_timing
from bench.service.inputs import read_json_object, require_text, require_texts
from bench.service.metrics import CONTENT_TYPE
from bench.service.runtime import Service

log = logging.getLogger("bench.service")
STATIC = Path(__file__).resolve().parent / "static"


def create_app(config: ServiceConfig, backend: Backend | None = None, tokenizer=None,
               labels: Mapping[int, str] | Sequence[str] | None = None, service=None) -> FastAPI:
    """Build the app. Without `backend`, startup materialises `config.model`, exports ONNX for ort backends and
    creates the backend; an injected backend is loaded as given (unloaded) and its tokenizer and labels come
    from `backend.config.model_dir` unless passed. Loading runs in the background: /healthz says 503 until the
    model is loaded and warmed up. `service`: the model side to serve instead (a front process passes its link to
    the model scheduler, bench.service.fronts.RemoteService)."""
    service = service or Service(config, backend, tokenizer, labels)
    # FastAPIOffline: /docs and /redoc served from the package's own Swagger UI / ReDoc files, not a CDN,
    # so the docs work on an air-gapped host like the WebUI does.
    app = FastAPIOffline(title="structbench sentiment service", version="1", lifespan=_lifespan(service),
                         summary="Chinese sentiment classification (StructBERT-class model) with micro-batching",
                         static_url="/static-docs")
    app.state.service = service
    install_error_handlers(app, service.metrics.count_error)
    app.add_middleware(ShedMiddleware, full=service.queue_full, count=service.metrics.count_error)
    # added last, so outermost: Server-Timing and the request metrics cover shed requests too
    app.add_middleware(TimingMiddleware, observe=service.metrics.observe_request, count=service.metrics.count_error)
    _add_api_routes(app, service)
    _add_ops_routes(app, service)
    return app


def _lifespan(service: Service):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.open()
        yield
        # uvicorn has already waited for in-flight requests; drain whatever is still queued, then stop.
        await service.close()

    return lifespan


def _add_api_routes(app: FastAPI, service: Service) -> None:
    config = service.config

    @app.post("/api/sentiment", response_model=schemas.SentimentResult, responses=schemas.ERROR_RESPONSES,
              openapi_extra=schemas.request_body(schemas.SentimentRequest))
    async def sentiment(request: Request) -> JSONResponse:
        """Classify one text."""
        payload = await read_json_object(request, config.max_body_bytes, config.request_timeout_s)
        text = require_text(payload, config.max_text_chars)
        [answer] = await service.analyse([text], request_timing(request))
        return JSONResponse(answer)  # built here: FastAPI's response_model pass is a real share of a request's CPU

    @app.post("/api/sentiment/batch", response_model=schemas.BatchResult, responses=schemas.ERROR_RESPONSES,
              openapi_extra=schemas.request_body(schemas.BatchRequest))
    async def sentiment_batch(request: Request) -> dict:
        """Classify up to `max_batch_items` texts; answers come back in the order sent."""
        payload = await read_json_object(request, config.max_body_bytes, config.request_timeout_s)
        texts = require_texts(payload, config.max_text_chars, config.max_batch_items)
        return {"results": await service.analyse(texts, request_timing(request))}

    @app.post("/api/embed", response_model=schemas.EmbedResult, responses=schemas.ERROR_RESPONSES,
              openapi_extra=schemas.request_body(schemas.BatchRequest))
    async def embed(request: Request) -> JSONResponse:
        """One vector per text, in the order sent (an embedding model; a classifier answers 404 here)."""
        payload = await read_json_object(request, config.max_body_bytes, config.request_timeout_s)
        texts = require_texts(payload, config.max_text_chars, config.max_batch_items)
        return JSONResponse({"results": await service.analyse(texts, request_timing(request), "embedding")})


def _add_ops_routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz", responses={503: {"description": "loading, failed, or the model call is stuck"}})
    async def healthz() -> JSONResponse:
        """200 with model details once loaded and warmed up; 503 before that, if loading failed, or while a
        model call has run past `inference_timeout_s` (so a load balancer stops sending work here)."""
        body, status, headers = await service.health()
        return JSONResponse(body, status, headers=headers)

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(await service.metrics_text(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def webui() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))
