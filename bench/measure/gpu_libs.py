"""The CUDA runtime, cuDNN and TensorRT a worker process actually loaded, with the versions the libraries report.

A package's version says what is installed, not what runs: torch brings its own CUDA runtime and cuDNN, and
onnxruntime-gpu loads whichever libcudart / libcudnn / libnvinfer the loader finds first. After a GPU cell ran,
its worker reads its own memory map (/proc/self/maps) for those libraries and asks each for its version through
ctypes. The libraries are already loaded, so this loads and initialises nothing. Standard library only.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from pathlib import Path

# name -> (file name in the map, version function); every function returns an integer version.
LIBRARIES = {
    "cuda_runtime": (re.compile(r"/libcudart\.so[.\d]*$"), "cudaRuntimeGetVersion"),
    "cudnn": (re.compile(r"/libcudnn\.so[.\d]*$"), "cudnnGetVersion"),
    "tensorrt": (re.compile(r"/libnvinfer\.so[.\d]*$"), "getInferLibVersion"),
}


def decode(name: str, value: int) -> str:
    """The integer a library reports as "major.minor[.patch]": cudart 12040 is 12.4; cuDNN 9 and TensorRT 10
    count majors in 10,000s (90100 is 9.1.0, 100300 is 10.3.0), cuDNN 8 and TensorRT 8 in 1,000s (8907: 8.9.7)."""
    if name == "cuda_runtime":
        return f"{value // 1000}.{value % 1000 // 10}"
    scale = 10000 if value >= (90000 if name == "cudnn" else 100000) else 1000
    return f"{value // scale}.{value % scale // 100}.{value % 100}"


def loaded_paths(maps: str) -> dict[str, str]:
    """name -> path of each library of LIBRARIES in a /proc/<pid>/maps text (the first mapping of each)."""
    out: dict[str, str] = {}
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)  # address, perms, offset, device, inode, path
        path = parts[5].strip() if len(parts) == 6 else ""
        for name, (pattern, _) in LIBRARIES.items():
            if name not in out and pattern.search(path):
                out[name] = path
    return out


def library_version(name: str, path: str, loader: Callable = ctypes.CDLL) -> str | None:
    """The version `path` reports of itself, or None where it cannot say (an old library without the call)."""
    try:
        lib = loader(path)
        function = getattr(lib, LIBRARIES[name][1])
    except (OSError, AttributeError):
        return None
    if name == "cuda_runtime":
        value = ctypes.c_int()
        return decode(name, value.value) if function(ctypes.byref(value)) == 0 else None
    function.restype = ctypes.c_size_t if name == "cudnn" else ctypes.c_int
    return decode(name, int(function()))


def loaded_gpu_libraries(maps_file: str | Path = "/proc/self/maps", loader: Callable = ctypes.CDLL) -> dict:
    """{"cuda_runtime": "12.4", "cudnn": "9.1.0", "tensorrt": "10.3.0"}: what this process loaded (a library it
    did not load is left out; an unreadable map gives {})."""
    try:
        maps = Path(maps_file).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    found = {name: library_version(name, path, loader) for name, path in loaded_paths(maps).items()}
    return {name: version for name, version in found.items() if version}
