"""How a text becomes a request to a server, and how its answer is checked: one class per protocol, as
perf_analyzer keeps one client backend per server kind. The load generator (loadtests/locustfile.py), the overload
probe and the readiness wait speak to a server only through these; which server answers is the target's business
(loadtests/targets.py).

  structbench        ours: POST /api/sentiment {"text"} (a classifier) or /api/embed {"texts": [text]} (an embedding
                     model)
  tei                Hugging Face Text Embeddings Inference: POST /predict {"inputs"} or /embed {"inputs"}
  kserve-v2          the Open Inference Protocol over REST: POST /v2/models/{name}/infer with the model's INT64
                     input tensors, tokenised here with the model's tokenizer (or, with text_input=NAME, one BYTES
                     tensor of the text for a server that tokenises); readiness from /v2/health/ready
  openai-embeddings  POST /v1/embeddings {"model", "input": [text]}
  http-json          anything else, from a template: path=/x, body={"q": "{text}"}, answer=a.b (a key path that
                     must be in the answer), method=POST, ready=/health

A check returns None for a good answer, else its cause in a few words (Locust counts failures by that message).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from bench.core.errors import ConfigError

PROTOCOLS = ("structbench", "tei", "kserve-v2", "openai-embeddings", "http-json")
TEXT_SLOT = "{text}"


@dataclass(frozen=True)
class ProtocolSpec:
    """What a protocol needs to be built: its name, the model's task, the server's name for the model (KServe,
    OpenAI), the model folder (KServe tensors are tokenised with its tokenizer) and protocol options (KEY=VALUE)."""

    name: str = "structbench"
    task: str = "classification"
    model_name: str | None = None
    model_dir: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.name!r} (choose from {', '.join(PROTOCOLS)})")
        known = OPTIONS[self.name]
        unknown = [k for k, _ in self.options if k not in known]
        if unknown:
            raise ConfigError(f"protocol {self.name} takes no option {', '.join(unknown)}"
                              f" ({'options: ' + ', '.join(known) if known else 'it takes none'})")
        if self.name == "http-json" and "path" not in dict(self.options):
            raise ConfigError("protocol http-json needs --protocol-option path=/route (and body=…, answer=…)")
        if self.name == "kserve-v2" and not self.model_name:
            raise ConfigError("protocol kserve-v2 needs --model-name (the name the server serves the model under)")

    @property
    def option(self) -> dict[str, str]:
        return dict(self.options)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "task": self.task, "model_name": self.model_name,
                           "model_dir": self.model_dir, "options": [list(o) for o in self.options]})

    @classmethod
    def from_json(cls, text: str) -> "ProtocolSpec":
        d = json.loads(text)
        return cls(d["name"], d["task"], d.get("model_name"), d.get("model_dir"),
                   tuple((str(k), str(v)) for k, v in d.get("options", ())))


OPTIONS = {"structbench": (), "tei": (), "openai-embeddings": (), "kserve-v2": ("text_input",),
           "http-json": ("path", "body", "answer", "method", "ready")}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any


def numbers(values: Any, at_least: int = 1) -> bool:
    """A list of at least `at_least` finite numbers (the first few checked: answers are long vectors)."""
    return isinstance(values, list) and len(values) >= at_least and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values[:8])


class Protocol:
    """One protocol for one model task. `route` names the requests in Locust's stats."""

    name = ""
    ready_path: str | None = None

    def __init__(self, spec: ProtocolSpec) -> None:
        self.spec = spec
        self.embedding = spec.task == "embedding"

    @property
    def route(self) -> str:
        return self.request("").path

    def request(self, text: str) -> Request:
        raise NotImplementedError

    def check(self, body: Any, text: str) -> str | None:
        raise NotImplementedError


class Structbench(Protocol):
    name, ready_path = "structbench", "/healthz"

    def request(self, text: str) -> Request:
        if self.embedding:
            return Request("POST", "/api/embed", {"texts": [text]})
        return Request("POST", "/api/sentiment", {"text": text})

    def check(self, body: Any, text: str) -> str | None:
        if not isinstance(body, dict):
            return "answer is not a JSON object"
        if self.embedding:
            results = body.get("results")
            ok = isinstance(results, list) and len(results) == 1 and isinstance(results[0], dict) \
                and results[0].get("text") == text and numbers(results[0].get("embedding"))
            return None if ok else "answer has no vector for this text"
        score = body.get("score")
        ok = body.get("text") == text and isinstance(body.get("label"), str) and isinstance(score, (int, float)) \
            and 0 <= score <= 1
        return None if ok else "answer has no label and score for this text"


class Tei(Protocol):
    """TEI's routes (its OpenAPI: /predict answers [{"label", "score"}, …] for one input, /embed [[…]])."""

    name, ready_path = "tei", "/health"

    def request(self, text: str) -> Request:
        return Request("POST", "/embed" if self.embedding else "/predict", {"inputs": text})

    def check(self, body: Any, text: str) -> str | None:
        if self.embedding:
            ok = isinstance(body, list) and len(body) == 1 and numbers(body[0])
            return None if ok else "answer is not one vector"
        ok = isinstance(body, list) and len(body) > 0 and all(
            isinstance(p, dict) and isinstance(p.get("label"), str) and isinstance(p.get("score"), (int, float))
            for p in body)
        return None if ok else "answer is not a list of label scores"


class OpenAIEmbeddings(Protocol):
    name, ready_path = "openai-embeddings", None

    def request(self, text: str) -> Request:
        return Request("POST", "/v1/embeddings", {"model": self.spec.model_name or "default", "input": [text]})

    def check(self, body: Any, text: str) -> str | None:
        data = body.get("data") if isinstance(body, dict) else None
        ok = isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict) \
            and numbers(data[0].get("embedding"))
        return None if ok else "answer has no data[0].embedding"


class KServeV2(Protocol):
    """Open Inference Protocol v2 (REST): INT64 tensors in the model's input order, row-major data."""

    name, ready_path = "kserve-v2", "/v2/health/ready"

    def __init__(self, spec: ProtocolSpec) -> None:
        super().__init__(spec)
        self.text_input = spec.option.get("text_input")
        self.path = f"/v2/models/{spec.model_name}/infer"
        self.tokenizer = None
        if not self.text_input:
            if not spec.model_dir:
                raise ConfigError("protocol kserve-v2 builds token tensors with the model's tokenizer: give --model "
                                  "(or --protocol-option text_input=NAME for a server that tokenises)")
            from bench.model.tokenize import load_tokenizer

            self.tokenizer = load_tokenizer(spec.model_dir)
        self.outputs = (len(self.tokenizer.signature.labels) if self.tokenizer and not self.embedding else None)

    def request(self, text: str) -> Request:
        if self.tokenizer is None:
            inputs = [{"name": self.text_input, "shape": [1], "datatype": "BYTES", "data": [text]}]
        else:
            from bench.model.tokenize import encode

            feed = encode(self.tokenizer, [text])
            inputs = [{"name": name, "shape": list(a.shape), "datatype": "INT64", "data": a.ravel().tolist()}
                      for name, a in feed.items()]
        return Request("POST", self.path, {"id": "0", "inputs": inputs})

    def check(self, body: Any, text: str) -> str | None:
        outputs = body.get("outputs") if isinstance(body, dict) else None
        if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
            return "answer has no outputs"
        first = outputs[0]
        shape, data = first.get("shape"), first.get("data")
        if not (isinstance(shape, list) and numbers(data) and math.prod(shape) == len(data)):
            return "output data does not match its shape"
        if self.outputs and shape[-1] != self.outputs:
            return f"output has {shape[-1]} scores, the model {self.outputs} labels"
        return None


class HttpJson(Protocol):
    """A template: path, body (JSON with "{text}" where the text goes), the answer's key path, method."""

    name = "http-json"

    def __init__(self, spec: ProtocolSpec) -> None:
        super().__init__(spec)
        o = spec.option
        self.method, self.path = o.get("method", "POST").upper(), o["path"]
        self.ready_path = o.get("ready")
        self.answer = [k for k in o.get("answer", "").split(".") if k]
        try:
            self.template = json.loads(o.get("body", '{"text": "{text}"}'))
        except ValueError as exc:
            raise ConfigError(f"protocol http-json: body is not JSON ({exc})") from None
        if TEXT_SLOT not in json.dumps(self.template, ensure_ascii=False):
            raise ConfigError(f'protocol http-json: the body has no "{TEXT_SLOT}" where the text goes')

    def request(self, text: str) -> Request:
        return Request(self.method, self.path, fill(self.template, text))

    def check(self, body: Any, text: str) -> str | None:
        node = body
        for key in self.answer:
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict) and key in node:
                node = node[key]
            else:
                return f"answer has no {'.'.join(self.answer)}"
        return None


def fill(template: Any, text: str) -> Any:
    """The template with every "{text}" in its strings replaced by the text (JSON-safe: no string formatting)."""
    if isinstance(template, str):
        return text if template == TEXT_SLOT else template.replace(TEXT_SLOT, text)
    if isinstance(template, list):
        return [fill(v, text) for v in template]
    if isinstance(template, dict):
        return {k: fill(v, text) for k, v in template.items()}
    return template


KINDS: Mapping[str, type[Protocol]] = {"structbench": Structbench, "tei": Tei, "kserve-v2": KServeV2,
                                       "openai-embeddings": OpenAIEmbeddings, "http-json": HttpJson}


def build(spec: ProtocolSpec) -> Protocol:
    return KINDS[spec.name](spec)


def ready_path(spec: ProtocolSpec) -> str | None:
    """The protocol's health route (http-json: its `ready` option), without building it (no tokenizer loaded)."""
    return spec.option.get("ready") if spec.name == "http-json" else KINDS[spec.name].ready_path


def parse_options(items: tuple[str, ...] | list[str]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` strings (--protocol-option) as pairs; a malformed one is a ConfigError."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--protocol-option takes KEY=VALUE (got {item!r})")
        out.append((key.strip(), value))
    return tuple(out)


def parse_headers(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`'K: V'` strings (--header) as a dict; credentials travel in these and are never written to results."""
    out = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise ConfigError(f"--header takes 'Name: value' (got {item!r})")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Spoken:
    """A protocol with the request headers to send (kept out of every record)."""

    spec: ProtocolSpec = field(default_factory=ProtocolSpec)
    headers: tuple[tuple[str, str], ...] = ()
