"""A fine-tuned model end to end: ConvMLP-S trained from scratch on scikit-learn's digits at 32 px with the
digits' own mean/std (``tests.finetuned``), exported with ``--input-size 32 --mean ... --std ...`` as FP32,
FP16 and INT8 (both layouts), each graph's ``evaluate`` top-1 on the held-out split with its top-1
agreement with FP32 and which set carried its gate; then the same network exported without its
preprocessing options (224 px, ImageNet mean/std), to show what a wrong input size costs.

    python benchmarks/finetuned_digits.py --out /tmp/finetuned --steps 300     # a few minutes on 2 cores

Writes benchmarks/results/finetuned_digits.{json,md}.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import common  # noqa: E402,I001  (the repository on sys.path)


def cli(*args: object) -> tuple[int, str, str]:
    from click.testing import CliRunner

    import cli as tool

    res = CliRunner().invoke(tool.main, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def export(ck: Path, out: Path, train: Path, layout: str, prep: list[object]) -> dict:
    code, stdout, stderr = cli("export", "-v", "s", "--weights", ck, "--fp16", "--int8", "--int8-layout", layout,
                               "--calibration", train, "--calibration-count", 256, *prep, "-o", out, "--json")
    report = json.loads(stdout) if stdout.strip().startswith("{") else {}
    return {"exit_code": code, "report": report, "error": stderr.strip().splitlines()[-1:] if code else []}


def top1(graph: Path, test: Path) -> float | None:
    code, stdout, _ = cli("evaluate", "--onnx", graph, "--data", test, "--json")
    if code:
        return None
    rows = json.loads(stdout).get("results") or [{}]
    return rows[0].get("top1")


def agreement(a: Path, b: Path, test: Path) -> float:
    import numpy as np

    import deploy

    files = sorted(test.rglob("*.png"))
    with deploy.load(a) as ma, deploy.load(b) as mb:
        xa = np.concatenate([ma.preprocess(f) for f in files])
        xb = np.concatenate([mb.preprocess(f) for f in files])
        return float((ma(xa).argmax(1) == mb(xb).argmax(1)).mean())


def main() -> None:
    ap = common.parser(__doc__, first_line=True)
    common.add_out(ap, "finetuned_digits.md", "finetuned_digits.json")
    ap.add_argument("--steps", type=int, default=300, help="training steps")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="finetuned-digits-"))
    from tests.finetuned import SIZE, digits_cfg, save_checkpoint, train_digits, write_digits

    train, test = write_digits(work)
    cfg = digits_cfg(train)
    model, facts = train_digits(train, cfg, args.steps)
    ck = save_checkpoint(model, work / "digits.pth")
    prep = ["--input-size", SIZE, "--mean", *cfg.mean, "--std", *cfg.std, "--crop-pct", cfg.crop_pct,
            "--interpolation", cfg.interpolation]
    rows, runs = [], {}
    for setup, options in (("recorded 32 px", prep), ("no preprocessing options (224 px, ImageNet)", [])):
        for layout in ("tensorrt", "cpu"):
            out = work / f"{'own' if options else 'none'}_{layout}"
            run = runs[f"{setup}/{layout}"] = export(ck, out, train, layout, options)
            graphs = (run["report"].get("graphs") or {})
            fp32 = out / "convmlp_s.onnx"
            for name in ("fp32", "fp16", "int8"):
                if layout == "cpu" and name != "int8":
                    continue
                g = graphs.get(name, {})
                val = g.get("validation", {})
                path = out / Path(g.get("path", "")).name if g else None
                ok = path is not None and path.is_file()
                rows.append({
                    "setup": setup, "graph": name if name != "int8" else f"int8 ({layout})",
                    "export_exit": run["exit_code"], "gate": "passed" if val.get("passed") else "failed",
                    "gate_on": val.get("accuracy_gate_on"), "failures": val.get("failures", [])[:2],
                    "top1": top1(path, test) if ok else None,
                    "agree_fp32": agreement(path, fp32, test) if ok and fp32.is_file() else None,
                })
    result = {"machine": common.machine_info("cpu"), "versions": common.versions(), "training": facts,
              "preprocessing": {"input_size": list(cfg.input_size), "mean": list(cfg.mean), "std": list(cfg.std),
                                "crop_pct": cfg.crop_pct, "interpolation": cfg.interpolation}, "rows": rows}
    lines = [f"ConvMLP-S trained from scratch on the digits at {SIZE} px ({facts['steps']} steps, "
             f"{facts['train_s']} s). {common.machine_header()}", "",
             "| setup | graph | export exit | gate | accuracy gate on | top-1 (held-out split) | agrees with FP32 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        t1 = "-" if r["top1"] is None else f"{r['top1']:.1%}"
        ag = "-" if r["agree_fp32"] is None else f"{r['agree_fp32']:.1%}"
        lines.append(f"| {r['setup']} | {r['graph']} | {r['export_exit']} | {r['gate']} | {r['gate_on'] or '-'} | "
                     f"{t1} | {ag} |")
    common.write_results(args.out, "finetuned_digits", "\n".join(lines), result)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
