"""The ONNX Runtime session every peer server builds, with structbench's backend's options (intra-op threads as
given, one inter-op thread, every graph optimisation). Imported by the peer scripts beside it, in their own venvs:
it imports nothing of structbench."""

from __future__ import annotations


def cpu_session(model_file: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_file, so, providers=["CPUExecutionProvider"])
