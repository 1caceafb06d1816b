"""Logging for a command: structbench's own loggers shown, library chatter that buries our progress output silenced
by the library's name (call once, at the top of a command)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Libraries whose warnings are about themselves, not the user's run (torch.onnx's tracer, torch.ao's deprecations,
# transformers' and ORT's notices). Matched against the module that issues the warning.
NOISY = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "onnx_ir", "openvino", "nncf", "modelscope",
         "huggingface_hub", "optimum", "timm", "sklearn")
# Library loggers kept to errors; onnxruntime.quantization also logs "consider pre-processing" on the *root*
# logger, which `LibraryOnRoot` drops by the file that emitted it.
QUIET_LOGGERS = ("onnxruntime", "nncf", "openvino", "transformers", "modelscope", "huggingface_hub", "urllib3",
                 "httpx", "asyncio", "filelock", "matplotlib", "PIL")
OURS = ("bench", "exporters", "loadtests", "reports")


class LibraryOnRoot(logging.Filter):
    """Drops records that a library sent to the root logger (`logging.warning(...)` inside a site-package)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root":
            return True
        path = record.pathname.replace(os.sep, "/")
        return not any(f"/{lib}/" in path for lib in NOISY)


def quiet_libraries(level: int = logging.INFO) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    noisy = r"(%s)(\..*)?$" % "|".join(NOISY)
    for category in (UserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=noisy)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    if not any(isinstance(f, LibraryOnRoot) for f in root.filters):
        root.addFilter(LibraryOnRoot())
    # Our own loggers (replica restarts, front exits, CUDA-graph fallbacks): one stderr handler, INFO and up.
    for name in OURS:
        ours = logging.getLogger(name)
        ours.setLevel(level)
        if not ours.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
            ours.addHandler(handler)
