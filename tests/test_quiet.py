"""Our own log lines are shown, library chatter is silenced by the library's name (bench/core/quiet.py)."""

import subprocess
import sys

from conftest import REPO

SCRIPT = """
import logging, warnings
from bench.core.quiet import quiet_libraries
quiet_libraries()
logging.getLogger("bench.service").warning("replica 0 died; restarting it (restart 1)")
logging.getLogger("onnxruntime").warning("library chatter by name")
# a library logging on the root logger from its own file (as onnxruntime.quantization does)
code = compile("import logging\\nlogging.warning('consider pre-processing')", "/x/onnxruntime/q.py", "exec")
exec(code, {})
logging.warning("the user's own root warning")
exec(compile("import warnings\\nwarnings.warn('tracer says', UserWarning)", "torch_fake.py", "exec"),
     {"__name__": "torch.onnx.fake"})
warnings.warn("our own warning", UserWarning)
"""


def test_our_loggers_and_warnings_show_and_libraries_are_quiet_by_name():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    err = out.stderr
    assert "WARNING bench.service: replica 0 died" in err
    assert "the user's own root warning" in err and "our own warning" in err
    assert "library chatter" not in err and "consider pre-processing" not in err and "tracer says" not in err
