"""`python -m exporters` / `python -m bench export`: flags mapped onto ExportConfig, and the printed summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from exporters.pipeline import ExportConfig


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=ExportConfig.model,
                   help="twin | twin:tiny | twin:trained | modelscope[:ID] | hf:ID | local directory | onnx:PATH "
                        "(default: twin, offline; docs/models.md)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="with --model onnx:PATH: the folder of its tokenizer (default: the graph's own folder)")
    p.add_argument("--seed", type=int, default=ExportConfig.seed, help="seed of the twin's weights and of workloads")


def add_export_args(p: argparse.ArgumentParser) -> None:
    d = ExportConfig()
    add_model_args(p)
    p.add_argument("--out", type=Path, default=d.out_dir, help="output folder (default: artifacts/onnx/<model>)")
    p.add_argument("--parity-n", type=int, default=d.parity_n,
                   help="held-out corpus texts for the parity gate (default: 1000 for trained weights, 256 for a "
                        "synthetic twin)")
    p.add_argument("--parity-max-length", type=int, default=d.parity_max_length,
                   help=f"tokens per parity text ({d.parity_max_length})")
    p.add_argument("--threads", type=int, default=d.threads, help="intra-op threads (default: all cores)")
    p.add_argument("--eval-data", type=Path, default=None, metavar="FILE",
                   help="your labelled data (CSV or JSONL: text,label; for an embedding model text1,text2,score) "
                        "for the gate's accuracy, instead of held-out corpus reviews")
    p.add_argument("--force", action="store_true", help="rebuild even if the artifacts are up to date")


def cmd_export(args: argparse.Namespace) -> int:
    from exporters.pipeline import export_all

    cfg = ExportConfig(model=args.model, seed=args.seed, out_dir=args.out, parity_n=args.parity_n,
                       parity_max_length=args.parity_max_length, threads=args.threads, force=args.force,
                       eval_data=args.eval_data)
    out_dir, manifest = export_all(cfg)
    print_export_summary(out_dir, manifest)
    return 0


def print_export_summary(out_dir: Path, manifest: dict) -> None:
    synthetic = " (synthetic weights: labels meaningless)" if manifest["synthetic"] else ""
    print(f"model: {manifest['source']['source']}{synthetic}")
    signature = manifest.get("signature") or {}
    if signature:
        from bench.core.signature import ModelSignature

        sig = ModelSignature.from_dict(signature)
        print(f"task:  {sig.what}; family {sig.family}; inputs {', '.join(sig.inputs)}")
    for name, v in manifest["variants"].items():
        par = v.get("parity", {})
        size_b = (v.get("size_bytes") or 0) + ((v.get("weights") or {}).get("size_bytes") or 0)
        size = f"{size_b / 1e6:7.1f} MB" if v.get("file") else "  (runtime)" if not v.get("not_built") else "  (none)"
        verdict = {True: "parity ok", False: "PARITY FAILED", None: "parity not measured"}[par.get("passed")]
        figures = (f"agree {par['label_agreement']:.3f}  max|Δ| {par['max_abs_diff']:.2e}"
                   if "label_agreement" in par else
                   f"cosine mean {par['cosine_mean']:.5f}  min {par['cosine_min']:.5f}" if "cosine_mean" in par
                   else par.get("not_measured", v.get("not_built", "")))
        print(f"  {name:<11} {size}  {verdict:<20} {figures}")
    fused = manifest['variants']['fp32-fused']
    print(f"fused ops: {fused.get('fused_ops')} ({fused.get('fusion', 'onnxruntime optimizer')})")
    print(f"models:   {out_dir}")
    print(f"manifest: {out_dir / 'manifest.json'}")


def main(argv: list[str] | None = None) -> int:
    from bench.core.errors import run_entry
    from bench.core.quiet import quiet_libraries

    parser = argparse.ArgumentParser(prog="python -m exporters", description="Export the ONNX variants.")
    add_export_args(parser)
    args = parser.parse_args(argv)
    quiet_libraries()
    return run_entry(lambda: cmd_export(args))
