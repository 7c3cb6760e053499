"""Accuracy on a trained network: ConvMLP trained briefly on a real labelled image set, then every
precision this tool writes evaluated on a held-out split with ``convmlp-deploy evaluate``.

The set: scikit-learn's handwritten digits (1,797 8x8 scans of 43 writers, the only labelled image set
a package here ships), upscaled to 64x64 RGB PNGs and split 80/20 (stratified, seed 0). The network is
trained from scratch on the training split as ``evaluate`` will see the images (the checkpoint's own
preprocessing: resize 248, centre crop 224, ImageNet mean/std), AdamW with a one-cycle schedule.

Then, with the CLI as a user runs it:

- ``export --fp16 --int8`` in both INT8 layouts, calibrated on training images, with
  ``--int8-fallback off`` and ``auto``;
- the same network with one activation outlier injected (``tests.draws.with_outlier``: the same function
  in FP32, the pattern that breaks per-tensor INT8), where the gate fails without the fallback: its
  rejected graph (kept in ``rejected/``) is evaluated too;
- ``evaluate --data test/`` on PyTorch FP32, onnxruntime FP32, the FP16 graph, OpenVINO (BF16 where
  the CPU has it, else its FP32), and each INT8 graph (onnxruntime; the CPU layout also on OpenVINO);
- the trained network's INT8 graphs before the fallback (the rejected graph) and after it, against
  its FP32 graph, timed interleaved on onnxruntime and OpenVINO (``deploy.commands.bench``, what ``benchmark``
  times).

Finished exports and evaluations are kept in ``--out`` and reused by a rerun.

    python benchmarks/trained_accuracy.py --out /tmp/digits --epochs 2       # ~35 min on 2 cores
    python benchmarks/trained_accuracy.py --out /tmp/d --epochs 1 --train-images 32 --test-images 8 \
        --image-size 16 --calibration 2 --duration-s 0.05 --rounds 1          # quick check

Prints Markdown tables for RESULTS.md and writes ``results.md`` and ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common
import numpy as np

#: AdamW peak learning rate: 1e-3 and above leave ConvMLP-S from scratch at chance on this set (measured)
LR = 5e-4


def write_split(out: Path, seed: int = 0, size: int = 64, train_images: int | None = None,
                test_images: int | None = None) -> tuple[Path, Path]:
    """``train/<digit>/*.png`` and ``test/<digit>/*.png`` (ImageFolder), 80/20 stratified (``tests.finetuned``);
    ``size`` pixels a side, and at most ``train_images`` / ``test_images`` of each split (all by default)."""
    from tests.finetuned import write_digits

    folders = write_digits(out, size=size, seed=seed)
    for folder, keep in zip(folders, (train_images, test_images), strict=True):
        if keep is not None:
            for extra in sorted(folder.rglob("*.png"), key=lambda q: q.name)[keep:]:
                extra.unlink()
    return folders


def train(train_dir: Path, epochs: int, variant: str, seed: int = 0) -> tuple[object, dict]:
    """ConvMLP-``variant`` with 10 classes trained on ``train_dir`` as ``evaluate`` preprocesses it."""
    import torch

    from convmlp import PRETRAINED_CFGS, create_model
    from convmlp.preprocess import load_image, preprocess

    cfg = PRETRAINED_CFGS[variant]
    files = sorted(train_dir.rglob("*.png"))
    x = torch.from_numpy(np.concatenate([preprocess(load_image(p), cfg) for p in files]))
    y = torch.tensor([int(p.parent.name) for p in files])
    torch.manual_seed(seed)
    model = create_model(variant, num_classes=10)
    batch = min(32, len(files))
    steps = epochs * (len(files) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(files), generator=g)
        losses = []
        for b in range(len(files) // batch):
            idx = order[b * batch:(b + 1) * batch]
            xb = x[idx]
            shift = torch.randint(-8, 9, (2,), generator=g)  # a little translation
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        common.log(f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.3f} ({time.perf_counter() - t0:.0f} s)")
    return model.eval(), {"epochs": epochs, "steps": steps, "batch": batch, "train_images": len(files),
                          "train_s": round(time.perf_counter() - t0, 1)}


def cli(*args: object) -> tuple[int, str, str]:
    from click.testing import CliRunner

    import cli as tool

    res = CliRunner().invoke(tool.main, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def export(ck: Path, out: Path, calib: Path, layout: str, fallback: str, calibration: int = 256) -> dict:
    code, stdout, stderr = cli("export", "-v", "s", "--weights", ck, "--fp16", "--int8", "--int8-layout", layout,
                               "--calibration", calib, "--calibration-count", calibration, "--int8-fallback", fallback,
                               "-o", out, "--json")
    report = json.loads(stdout) if stdout.strip().startswith("{") else {}
    return {"exit_code": code, "report": report, "error": stderr.strip().splitlines()[-1:] if code else []}


def time_before_after(exports: dict, fp32_folder: Path | None, duration_s: float, rounds: int) -> list[dict]:
    """The trained network's INT8 graphs before the fallback (the rejected graph) and after it, against its
    FP32 graph, timed interleaved per backend at batch 1 x 224 (``deploy.commands.bench``, as ``benchmark`` times)."""
    from deploy.commands.bench import Case, TimingConfig, prepare, resolve_target
    from deploy.commands.bench.interleave import run_interleaved

    graphs: dict[str, Path] = {} if fp32_folder is None else {"FP32": fp32_folder / "convmlp_s.onnx"}
    for (name, layout, fallback), e in exports.items():
        if name != "trained":
            continue
        if e["exit_code"] != 0 and (e["folder"] / "rejected" / "convmlp_s.int8.onnx").exists():
            graphs[f"INT8 {layout} layout, plain (gate failed)"] = e["folder"] / "rejected" / "convmlp_s.int8.onnx"
        elif e["exit_code"] == 0 and fallback == "off":  # the gate passed: the shipped graph, no fallback
            graphs[f"INT8 {layout} layout (gate passed)"] = e["folder"] / "convmlp_s.int8.onnx"
        elif e["exit_code"] == 0 and fallback == "auto":
            fb = (e["report"].get("int8") or {}).get("fallback") or {}
            graphs[f"INT8 {layout} layout, {len(fb.get('layers', []))} layer(s) in float"] = \
                e["folder"] / "convmlp_s.int8.onnx"
    cases = [Case(1, 224, 224)]
    timing = TimingConfig(warmup_s=0.3, duration_s=duration_s, min_iterations=rounds)
    rows: list[dict] = []
    for backend in ("onnxruntime", "openvino"):
        common.log(f"timing {len(graphs)} graphs on {backend}")
        targets = [prepare(resolve_target(variant="s", onnx=p, backend=backend, threads=2), cases)
                   for p in graphs.values()]
        report, _ = run_interleaved(targets, cases, timing, rounds=rounds)
        base = report.results[0].latency.median
        for label, r in zip(graphs, report.results, strict=True):
            rows.append({"backend": f"{backend} [{r.runner}]", "graph": label, "median_ms": r.latency.median,
                         "vs_fp32": base / r.latency.median})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_out(ap, "the digits, the exports, results.md and results.json (reused by a rerun)",
                   default=Path("/tmp/convmlp-digits"))
    ap.add_argument("--epochs", type=int, default=2)
    common.add_variants(ap, ["s"], one=True)
    common.add_timing(ap, duration_s=2.0, rounds=6, threads=None)
    ap.add_argument("--train-images", type=int, default=None, help="at most this many training images (default all)")
    ap.add_argument("--test-images", type=int, default=None, help="at most this many test images (default all)")
    ap.add_argument("--image-size", type=int, default=64, help="side of the digit PNGs")
    ap.add_argument("--calibration", type=int, default=256, help="calibration images per INT8 export")
    args = common.parse_args(ap, counts=("epochs", "calibration", "image_size"))

    import torch

    from deploy.machine import cpu_features, machine_info, versions
    from tests.draws import with_outlier

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    train_dir, test_dir = (out / "train", out / "test") if (out / "test").is_dir() else write_split(
        out, size=args.image_size, train_images=args.train_images, test_images=args.test_images)
    ck = out / "digits.pth"
    facts: dict = {}
    if not ck.exists():
        model, facts = train(train_dir, args.epochs, args.variant)
        torch.save(model.state_dict(), ck)
        (out / "train.json").write_text(json.dumps(facts))
    else:
        facts = json.loads((out / "train.json").read_text())
    outlier = out / "digits_outlier.pth"
    from convmlp import create_model

    m = create_model(args.variant, num_classes=10)
    m.load_state_dict(torch.load(ck, map_location="cpu"))
    torch.save(with_outlier(m.eval()).state_dict(), outlier)

    exports = {}
    outlier_graphs: dict[str, Path] = {}
    for name, weights in (("trained", ck), ("outlier", outlier)):
        for layout in ("tensorrt", "cpu"):
            for fallback in ("off", "auto"):
                folder = out / f"{name}_{layout}_{fallback}"
                if fallback == "auto" and exports[(name, layout, "off")]["exit_code"] == 0:
                    continue  # the gate passed without it: auto writes the same graph (the fallback never runs)
                done = out / f"{folder.name}.export.json"  # a rerun reuses finished exports
                if done.exists():
                    e = json.loads(done.read_text())
                else:
                    t = time.perf_counter()
                    e = export(weights, folder, train_dir, layout, fallback, args.calibration)
                    e["seconds"] = time.perf_counter() - t
                    done.write_text(json.dumps(e))
                exports[(name, layout, fallback)] = e
                e["folder"] = folder
                fb = ((e["report"].get("int8") or {}).get("fallback") or {})
                common.log(f"export {name} {layout} fallback={fallback}: exit {e['exit_code']}, "
                           f"fallback {'-' if not fb else (fb['layers'] if fb['passed'] else 'gave up')}, "
                           f"{e['seconds']:.0f} s")

    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()["flags"]))
    rows: list[dict] = []

    def evaluate(weights: Path, graphs: dict[str, Path]) -> None:
        """One ``evaluate`` run: PyTorch FP32 (the reference row), then each graph on onnxruntime and OpenVINO."""
        args: list[object] = ["evaluate", "--data", test_dir, "-v", args_variant, "--weights", weights,
                              "--backend", "onnxruntime", "--backend", "openvino", "--json"]
        for graph in graphs.values():
            args += ["--onnx", graph]
        cached = out / f"evaluate_{weights.stem}.json"  # a rerun reuses a finished evaluation
        if cached.exists():
            stdout = cached.read_text()
        else:
            code, stdout, stderr = cli(*args)
            if code != 0:
                rows.append({"row": f"{weights.name}: evaluate failed", "note": stderr.strip().splitlines()[-1:]})
                return
            cached.write_text(stdout)
        data = json.loads(stdout)
        labels = {str(p): label for label, p in graphs.items()}
        for r in data["results"]:
            label = labels.get(r["source"], "PyTorch FP32" if r["backend"] == "torch" else r["source"])
            rows.append({"row": f"{label} on {r['backend']}" + (f" ({r['precision']})" if r.get("precision") else ""), "weights": weights.name, "top1": r["top1"],
                         "top5": r["top5"], "agreement": r.get("agreement"), "images": data["images"]})

    args_variant = args.variant
    written = next((e["folder"] for (name, _, _), e in exports.items() if name == "trained" and e["exit_code"] == 0),
                   None)
    graphs: dict[str, Path] = {} if written is None else {"FP32 graph": written / "convmlp_s.onnx",
                                                          "FP16 graph": written / "convmlp_s.fp16.onnx"}
    for (name, layout, fallback), e in exports.items():
        folder = e["folder"]
        if e["exit_code"] == 0:
            graphs_for = graphs if name == "trained" else outlier_graphs
            graphs_for[f"{name} INT8, {layout} layout, fallback {fallback}"] = folder / "convmlp_s.int8.onnx"
        elif (folder / "rejected" / "convmlp_s.int8.onnx").exists():
            graphs_for = graphs if name == "trained" else outlier_graphs
            graphs_for[f"{name} INT8, {layout} layout, fallback {fallback} (gate failed: rejected graph)"] = \
                folder / "rejected" / "convmlp_s.int8.onnx"
    evaluate(ck, graphs)
    evaluate(outlier, outlier_graphs)

    speed = time_before_after(exports, written, args.duration_s, args.rounds)

    info = machine_info()
    lines = [common.machine_header(), "", f"training: {facts}", "",
             f"OpenVINO runs {'BF16' if bf16 else 'FP32: this CPU has no BF16'} at its default precision",
             "| weights | model [row] | top-1 | top-5 | agreement with PyTorch FP32 |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        if r.get("top1") is None:
            lines.append(f"| | {r['row']} | failed: {r.get('note')} | | |")
            continue
        agree = "" if r.get("agreement") is None else f"{100 * r['agreement']:.1f}%"
        lines.append(f"| {r['weights']} | {r['row']} | {100 * r['top1']:.2f}% | {100 * r['top5']:.2f}% | {agree} |")
    lines += ["", "| export | exit | fallback layers | rel L2 before -> after (ranking images) | search s | export s |",
              "| --- | --- | --- | --- | --- | --- |"]
    for (name, layout, fallback), e in exports.items():
        fb = ((e["report"].get("int8") or {}).get("fallback") or {})
        change = (f"{fb['before']['rel_l2']:.3f} -> {fb['after']['rel_l2']:.3f}" if fb.get("after") else
                  (f"{fb['before']['rel_l2']:.3f} -> gave up" if fb else
                   "gate failed, fallback off" if e["exit_code"] else "gate passed, not run"))
        lines.append(f"| {name}, {layout}, {fallback} | {e['exit_code']} | {len(fb.get('layers', [])) if fb else '-'} | "
                     f"{change} | {fb.get('search_s', '-')} | {e['seconds']:.0f} |")
    lines += ["", f"Interleaved medians, batch 1 x 224, {args.rounds} rounds of {args.duration_s} s, 2 threads:",
              "| backend | graph | median ms | vs FP32 graph |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['backend']} | {r['graph']} | {r['median_ms']:.2f} | {r['vs_fp32']:.2f}x |" for r in speed]
    common.write_results(out, "results", "\n".join(lines), {
        "machine": info, "versions": versions(), "training": facts, "rows": rows, "speed": speed,
        "exports": {" ".join(k): {"exit_code": v["exit_code"], "fallback": (v["report"].get("int8") or {}).get(
            "fallback"), "seconds": v["seconds"]} for k, v in exports.items()},
    })


if __name__ == "__main__":
    main()
