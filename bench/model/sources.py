"""Model sources: every source ends as a plain Hugging Face BERT directory plus `source.json`.

Specs: `twin` / `twin:base` / `twin:tiny` (offline default, synthetic weights), `twin:trained` (a small BERT
trained offline on the corpus: real accuracy), `modelscope[:ID]`, `hf:ID`, a local directory, or `onnx:PATH` (a
user's ONNX graph, its tokenizer from the folder beside it or `onnx:PATH#tokenizer=DIR`: a model dir holding a copy
of the graph and the signature read from it, and no torch weights). A directory whose model structbench cannot
measure (bench.core.signature: family, task) is refused here, before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bench.core import paths
from bench.core.errors import BenchError

DEFAULT_MODELSCOPE_ID = "damo/nlp_structbert_sentiment-classification_chinese-base"
HUB_TIMEOUT_S = 5.0
REQUIRED_FILES = ("config.json",)
TRAINED_TWIN = "trained"  # `twin:trained`: bench.model.twin_trained, not one of bench.model.twin's synthetic shapes
TOKENIZER_MARK = "#tokenizer="
# what an onnx: model dir copies from the graph's (or --tokenizer's) folder
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json",
                   "modules.json")


@dataclass(frozen=True)
class ModelSource:
    """A parsed model spec. `kind` is twin | modelscope | hf | local."""

    kind: str
    ident: str
    seed: int = 0
    tokenizer: str | None = None  # onnx: the tokenizer's folder, when not the graph's own

    @property
    def spec(self) -> str:
        if self.kind == "onnx" and self.tokenizer:
            return f"onnx:{self.ident}{TOKENIZER_MARK}{self.tokenizer}"
        return self.ident if self.kind == "local" else f"{self.kind}:{self.ident}"

    @property
    def cache_name(self) -> str:
        name = self.ident.replace("/", "__")
        if self.kind == "twin":
            from bench.model.twin import RECIPE
            if self.ident == TRAINED_TWIN:  # its training recipe too: a changed recipe rebuilds it
                from bench.model.twin_trained import RECIPE as TRAINED_RECIPE
                return f"twin-{name}-seed{self.seed}-r{RECIPE}-t{TRAINED_RECIPE}"
            return f"twin-{name}-seed{self.seed}-r{RECIPE}"
        if self.kind == "onnx":  # the graph's name and a digest of where it and its tokenizer are
            import hashlib

            digest = hashlib.sha256(self.spec.encode()).hexdigest()[:10]
            return f"onnx-{Path(self.ident).stem}-{digest}"
        return f"{self.kind}-{name}"


def parse_source(spec: str, seed: int = 0) -> ModelSource:
    from bench.model.twin import SHAPES

    kind, _, ident = spec.partition(":")
    if kind == "twin":
        ident = ident or "base"
        if ident not in SHAPES and ident != TRAINED_TWIN:
            raise BenchError(f"unknown twin '{ident}' (choose from {', '.join([*SHAPES, TRAINED_TWIN])})")
        return ModelSource("twin", ident, seed)
    if kind == "modelscope":
        return ModelSource("modelscope", ident or DEFAULT_MODELSCOPE_ID)
    if kind == "onnx":
        path, _, tokenizer = ident.partition(TOKENIZER_MARK)
        if not path or not Path(path).is_file():
            raise BenchError(f"onnx:{path}: no such file (give the path of a .onnx graph: --model onnx:PATH)")
        folder = Path(tokenizer) if tokenizer else Path(path).resolve().parent
        if not folder.is_dir():
            raise BenchError(f"--tokenizer {tokenizer}: not a directory")
        return ModelSource("onnx", str(Path(path).resolve()), tokenizer=str(folder.resolve()) if tokenizer else None)
    if kind == "hf":
        if not ident:
            raise BenchError("hf: needs a model id, e.g. hf:uer/roberta-base-finetuned-jd-binary-chinese")
        return ModelSource("hf", ident)
    if Path(spec).is_dir():
        return ModelSource("local", str(Path(spec).resolve()))
    raise BenchError(f"unknown model source '{spec}': use twin, twin:tiny, twin:trained, modelscope[:ID], hf:ID, "
                     f"onnx:PATH or an existing local directory")


def onnx_spec_with_tokenizer(spec: str, tokenizer: str) -> str:
    """--tokenizer DIR folded into an onnx: spec; with any other model it is an error (its tokenizer is its own)."""
    if not spec.startswith("onnx:"):
        raise BenchError(f"--tokenizer is for --model onnx:PATH (the model {spec} has its tokenizer in its folder)")
    return f"{spec.partition(TOKENIZER_MARK)[0]}{TOKENIZER_MARK}{tokenizer}"


def check_reachable(url: str, source: str, timeout: float = HUB_TIMEOUT_S) -> None:
    """Fail fast, with one clear line, when a hub cannot be reached (hub clients retry for minutes)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or url, parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise BenchError(f"cannot reach {host} to download {source} ({exc.__class__.__name__}: {exc}); "
                         f"no network? use the offline twin instead: --model twin") from None


def materialize(spec: str, seed: int = 0, cache_root: Path | None = None) -> Path:
    """Return a ready HF BERT directory for `spec`, building or downloading it once into the cache."""
    src = parse_source(spec, seed)
    if src.kind == "local":
        validate_model_dir(Path(src.ident))
        check_signature(Path(src.ident))
        ensure_source_json(Path(src.ident), src)
        return Path(src.ident)
    out = (cache_root or paths.artifacts_dir() / "models") / src.cache_name
    if (out / "source.json").exists():
        return out
    paths.ensure_writable(out.parent)
    with paths.locked(paths.lock_for(out), f"the model folder {out}"):
        if (out / "source.json").exists():  # built by the process we waited for
            return out
        return build_into(src, out)


def build_into(src: ModelSource, out: Path) -> Path:
    """Build `src` beside `out` and rename it there when complete (the caller holds the folder's lock)."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build_source(src, tmp)
        check_signature(tmp)
        ensure_source_json(tmp, src)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)  # only a finished directory ever carries the final name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_source(src: ModelSource, out: Path) -> None:
    if src.kind == "twin" and src.ident == TRAINED_TWIN:
        from bench.model.twin_trained import build_trained_twin
        build_trained_twin(out, src.seed)
    elif src.kind == "twin":
        from bench.model.twin import build_twin
        build_twin(out, src.ident, src.seed)
    elif src.kind == "onnx":
        build_onnx_dir(src, out)
    elif src.kind == "modelscope":
        from bench.model.convert import convert_modelscope
        convert_modelscope(download_modelscope(src.ident), out)
    else:
        shutil.copytree(download_hf(src.ident), out)


def download_modelscope(model_id: str) -> Path:
    endpoint = os.environ.get("MODELSCOPE_DOMAIN", "https://www.modelscope.cn")
    return snapshot(model_id, "modelscope", "ModelScope", endpoint if "://" in endpoint else f"https://{endpoint}",
                    "modelscope.hub.snapshot_download")


def download_hf(model_id: str) -> Path:
    return snapshot(model_id, "hf", "Hugging Face", os.environ.get("HF_ENDPOINT", "https://huggingface.co"),
                    "huggingface_hub")


def snapshot(model_id: str, scheme: str, hub: str, endpoint: str, module: str) -> Path:
    """A hub's snapshot of `model_id` in the artifacts folder (`module`.snapshot_download, imported once the hub is
    known to be reachable): a clear error, not a stack trace, when it is out of reach or the download fails."""
    import importlib

    check_reachable(endpoint, f"{scheme}:{model_id}")
    download = importlib.import_module(module).snapshot_download
    try:
        return Path(download(model_id, cache_dir=str(paths.artifacts_dir() / "hub" / scheme)))
    except Exception as exc:
        raise BenchError(f"{hub} download of {model_id} failed: {type(exc).__name__}: {str(exc)[:200]}; "
                         f"use --model twin offline") from None


def build_onnx_dir(src: ModelSource, out: Path) -> None:
    """A model dir for a user's graph: the graph (as artifacts.GIVEN_ONNX), its tokenizer files (and a config,
    sentence-transformers files where they are beside it), and the signature read from the graph."""
    from bench.core.signature import SIGNATURE_FILE, from_graph
    from bench.model.artifacts import GIVEN_ONNX
    from bench.model.tokenize import pad_token_id

    folder = Path(src.tokenizer or Path(src.ident).parent)
    if not any((folder / t).exists() for t in ("tokenizer.json", "vocab.txt")):
        raise BenchError(f"no tokenizer beside {src.ident} (tokenizer.json or vocab.txt in {folder}): give its "
                         f"folder with --tokenizer DIR")
    out.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (folder / name).exists():
            shutil.copy(folder / name, out / name)
    if (folder / "1_Pooling").is_dir():
        shutil.copytree(folder / "1_Pooling", out / "1_Pooling")
    shutil.copyfile(src.ident, out / GIVEN_ONNX)
    signature = from_graph(out / GIVEN_ONNX, out if (out / "config.json").exists() else None,
                           pad_token_id(str(out)) or 0)
    (out / SIGNATURE_FILE).write_text(json.dumps(signature.to_dict(), ensure_ascii=False, indent=2),
                                      encoding="utf-8")
    meta = {"source": src.spec, "synthetic": False, "given_onnx": src.ident,
            "note": "a user's ONNX graph, measured as given; its signature read from the graph"}
    (out / "source.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")


def check_signature(path: Path) -> None:
    """The model's signature can be read (a supported family and task): else one clear error, before any export."""
    from bench.core.signature import read_signature

    read_signature(path)


def validate_model_dir(path: Path) -> None:
    """A usable model directory has a config, weights and a tokenizer; name what is missing."""
    missing = [f for f in REQUIRED_FILES if not (path / f).exists()]
    if not any((path / w).exists() for w in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors or pytorch_model.bin")
    if not any((path / t).exists() for t in ("tokenizer.json", "vocab.txt")):
        missing.append("tokenizer.json or vocab.txt")
    if missing:
        raise BenchError(f"model directory {path} is missing: {', '.join(missing)}")


def ensure_source_json(path: Path, src: ModelSource) -> None:
    """Record where the weights came from and whether they are synthetic (twins wrote their own metadata)."""
    if (path / "source.json").exists():
        return
    meta = {"source": src.spec, "synthetic": synthetic_by_config(path)}
    try:
        (path / "source.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    except OSError:
        pass  # read-only local model dirs are fine; read_source_meta falls back to the same dict


def read_source_meta(model_dir: Path) -> dict:
    path = model_dir / "source.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"source": str(model_dir), "synthetic": synthetic_by_config(model_dir)}


def synthetic_by_config(model_dir: Path) -> bool:
    """A copied twin keeps `structbench.synthetic` in its config.json even without its source.json."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool((cfg.get("structbench") or {}).get("synthetic", False))
