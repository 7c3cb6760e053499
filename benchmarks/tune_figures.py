"""``tune`` on the CPU at hand, and whether what it chose is real.

For each variant (S, L) the FP32 graph and the INT8 graph (CPU layout, calibrated on photographs) are
exported once; then for each workload (``224`` fixed, ``random:64-512``):

1. ``tune --onnx FP32 INT8 --images HELD --shapes W --batch 1 --objective latency --budget-s B`` in a fresh
   process: the chosen configuration, the search time and the share of the space it covered;
2. one interleaved run (``deploy.commands.tune.remeasure.measure_configs``: each configuration opened
   fresh, then timed in rotating rounds over the workload) of the chosen configuration against
   onnxruntime FP32 with its default settings and the README's recommendations for a CPU with BF16
   (OpenVINO on the INT8 graph when calibrated INT8 is accepted; OpenVINO BF16 on the FP32 graph without
   calibration): the speed-ups, as ratios of p50 latency from that one run;
3. ``benchmark --config deploy.json`` in a fresh process: the chosen configuration re-measured, as a ratio
   to the figure ``tune`` recorded (the issue asks for it within 10%).

Weights are synthetic (no checkpoint can be downloaded here): the speeds and the gates hold for the
architecture; held-out photographs are crops of scikit-image's (``tests/photos.py``).

    python benchmarks/tune_figures.py --variants s l --budget-s 240 360     # ~45 min on 2 cores
    python benchmarks/tune_figures.py --variants l --workloads random:64-512 --budget-s 600 --keep   # one row again

Writes benchmarks/results/tune_figures.{md,json}, after each (variant, workload), so a run cut short
keeps what it measured.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import common  # noqa: E402,I001  (the repository on sys.path)

WORKLOADS = ("224", "random:64-512")
#: queries per slice of the interleaved run (whole passes over the workload's sizes): enough that a dynamic
#: policy's first sights and background specialisations are a small part of each configuration's figures
SLICE_QUERIES = 32


def tool(*args: object, timeout: float = 3600) -> tuple[int, dict[str, Any], str, float]:
    """``convmlp-deploy ARGS --json`` in a fresh process: (exit code, the JSON, the last stderr line, wall s)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, str(common.ROOT / "cli.py"), *map(str, args), "--json"], cwd=common.ROOT,
                         capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    try:
        data = json.loads(res.stdout) if res.stdout.strip() else {}
    except ValueError:
        data = {}
    tail = (res.stderr.strip().splitlines() or [""])[-1]
    return res.returncode, data, tail, wall


def baselines(chosen: Any, fp32: Path, int8: Path, workload: Any) -> dict[str, Any]:
    """The configurations the chosen one is held against, as ``DeployConfig``s on the same workload: the
    README's OpenVINO rows with its shape advice (the dynamic policy, ``--warmup`` for the sizes known, i.e.
    the workload's when they are few: ``tune``'s own dynamic policy)."""
    from convmlp.weights import file_sha256
    from deploy.commands.tune.space import shape_policies
    from deploy.deployconfig import ModelFile

    def on(path: Path, precision: str) -> tuple[ModelFile, ...]:
        return (ModelFile("model", str(path), file_sha256(path), "onnx", precision),)

    one = {"batch": 1, "max_batch": 1, "max_queue_delay_us": 0}
    dynamic = shape_policies(workload)[0].to_dict()
    return {
        "onnxruntime FP32, default settings": replace(
            chosen, backend="onnxruntime", files=on(fp32, "fp32"), precision=None, computes="fp32", threads=None,
            streams=1, batching=one, shape_policy={}),
        "README, calibrated INT8: OpenVINO on the INT8 graph": replace(
            chosen, backend="openvino", files=on(int8, "int8"), precision=None, computes="int8", threads=None,
            streams=1, batching=one, shape_policy=dynamic),
        "README, no calibration: OpenVINO BF16 on the FP32 graph": replace(
            chosen, backend="openvino", files=on(fp32, "fp32"), precision="bf16", computes="bf16", threads=None,
            streams=1, batching=one, shape_policy=dynamic),
    }


def chosen_line(best: dict[str, Any]) -> str:
    d = best["deployment"]
    files = ", ".join(Path(f["path"]).name for f in best["files"] if f.get("path"))
    return (f"{d['backend']} {d['computes']} on {files}, {d['threads'] or 'default'} threads, {d['streams']} "
            f"stream(s), shapes {d['shape_policy'].get('mode')}")


def one_workload(variant: str, workload: str, graphs: dict[str, Path], held: Path, budget: float, work: Path,
                 rounds: int, slice_queries: int) -> dict[str, Any]:
    from deploy.commands.tune.remeasure import config_workload, measure_configs
    from deploy.deployconfig import load_config

    out = work / f"{variant}_{workload.replace(':', '_')}"
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "deploy.json"
    common.log(f"tune {variant} {workload} (budget {budget:g} s) ...")
    code, tuned, err, wall = tool("tune", "--onnx", graphs["fp32"], graphs["int8"], "--images", held, "--shapes",
                                  workload, "--batch", 1, "--objective", "latency", "--budget-s", budget, "-o", cfg_path,
                                  "--csv", out / "candidates.csv")
    row: dict[str, Any] = {"variant": variant, "workload": workload, "budget_s": budget, "tune_exit": code,
                           "tune_wall_s": round(wall, 1), "error": err if code else None}
    if code or not tuned.get("best"):
        return row
    best = tuned["best"]
    row.update(chosen=chosen_line(best), coverage=tuned["coverage"], coverage_line=tuned["coverage_line"],
               space=tuned["space"], gate_set=tuned["gate_set"], recorded=best["measured"], gate=best["gate"],
               candidates=tuned["candidates"])
    chosen = load_config(cfg_path).config
    workload = config_workload(chosen)
    others = baselines(chosen, graphs["fp32"], graphs["int8"], workload)
    names = ["tune's choice", *others]
    common.log(f"interleaved: {', '.join(names)} ...")
    passes = max(1, math.ceil(slice_queries / len(workload.sizes)))
    figs = measure_configs([chosen, *others.values()], workload, rounds=rounds, passes=passes)
    base = figs[0].p50_ms
    row["interleaved_passes"] = passes
    row["interleaved"] = [{"config": n, **f.to_dict(), "choice_speedup": f.p50_ms / base}
                          for n, f in zip(names, figs, strict=True)]
    common.log("benchmark --config in a fresh process, twice ...")
    for key in ("remeasure", "remeasure_again"):  # two fresh processes: their spread is the check's noise floor
        code, again, err, _ = tool("benchmark", "--config", cfg_path)
        row[key] = again if code == 0 else {"exit": code, "error": err}
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [f"`tune` on the CPU at hand: {common.machine_header()}", "",
             "| variant | workload | chosen | search | covered | vs onnxruntime FP32 default | vs README INT8 "
             "(OpenVINO) | vs README BF16 (OpenVINO) | `benchmark --config` / tune |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "chosen" not in r:
            lines.append(f"| {r['variant'].upper()} | {r['workload']} | tune exit {r['tune_exit']}: {r['error']} "
                         "| | | | | | |")
            continue
        cov = r["coverage"]
        sp = {i["config"]: i["choice_speedup"] for i in r["interleaved"]}
        vs = [next((f"{v:.2f}x" for k, v in sp.items() if k.startswith(prefix)), "-")
              for prefix in ("onnxruntime", "README, calibrated", "README, no calibration")]
        again = " / ".join(f"{x:.2f}" for x in (r.get(k, {}).get("ratio") for k in ("remeasure", "remeasure_again"))
                           if x is not None) or "-"
        lines.append(f"| {r['variant'].upper()} | {r['workload']} | {r['chosen']} | {cov['elapsed_s']:.0f} s "
                     f"({cov['stopped']}) | {cov['decided']}/{cov['candidates']} ({cov['fraction']:.0%}) | "
                     f"{' | '.join(vs)} | {again} |")
    lines += ["", "Speed-ups are p50-latency ratios from one interleaved run of the four configurations, each "
              "opened fresh and timed in 6 rotating rounds of whole passes over the workload (32 queries or more "
              "per slice): each one's p50 over the choice's, >1: the choice is faster. The last column is p50 in a "
              "fresh `benchmark --config` process over what `tune` recorded (1.00 = the same), for each of two fresh "
              "processes (where both were run)."]
    for r in rows:
        if "interleaved" not in r:
            continue
        lines += ["", f"**{r['variant'].upper()}, {r['workload']}** ({r['gate_set']}; {r['coverage_line']}):", "",
                  "| configuration | p50 ms | p99 ms | images/s | ms/Mpx |", "| --- | --- | --- | --- | --- |"]
        for i in r["interleaved"]:
            lines.append(f"| {i['config']} | {i['p50_ms']:.1f} | {i['p99_ms']:.1f} | {i['images_per_s']:.1f} | "
                         f"{i['ms_per_mpx']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = common.parser(__doc__, first_line=True)
    common.add_out(ap, "tune_figures.md", "tune_figures.json")
    ap.add_argument("--variants", nargs="+", default=["s", "l"], choices=["s", "m", "l"])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    ap.add_argument("--budget-s", nargs="+", type=float, default=[240.0, 360.0],
                    help="tune's budget per variant (one value each, or one for all)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the interleaved run")
    ap.add_argument("--slice-queries", type=int, default=SLICE_QUERIES, help="queries per slice of the interleaved run")
    ap.add_argument("--held-out", type=int, default=32, help="held-out photographs")
    ap.add_argument("--calibration", type=int, default=64, help="calibration photographs")
    ap.add_argument("--keep", action="store_true",
                    help="keep the rows of OUT/tune_figures.json for other (variant, workload) pairs: re-run one row")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tune-figures-"))
    calib, held = common.photo_sets(work / "photos", args.calibration, args.held_out)
    rows: list[dict[str, Any]] = []
    if args.keep and (args.out / "tune_figures.json").is_file():
        rows += json.loads((args.out / "tune_figures.json").read_text())["rows"]
    result = {"machine": common.machine_info("cpu"), "versions": common.versions(), "rows": rows}

    def put(row: dict[str, Any]) -> None:  # in place of the row of the same (variant, workload), if any
        at = next((i for i, r in enumerate(rows) if (r["variant"], r["workload"]) == (row["variant"], row["workload"])),
                  None)
        if at is None:
            rows.append(row)
        else:
            rows[at] = row

    for n, variant in enumerate(args.variants):
        budget = args.budget_s[min(n, len(args.budget_s) - 1)]
        folder = work / f"graphs_{variant}"
        common.log(f"export {variant}: FP32 and INT8 (CPU layout) ...")
        code, report, err, wall = tool("export", "-v", variant, "--int8", "--int8-layout", "cpu", "--calibration",
                                       calib[0].parent, "-o", folder)
        if code:
            put({"variant": variant, "workload": "*", "tune_exit": None, "error": f"export exit {code}: {err}"})
            continue
        graphs = {"fp32": folder / f"convmlp_{variant}.onnx", "int8": folder / f"convmlp_{variant}.int8.onnx"}
        for workload in args.workloads:
            put(one_workload(variant, workload, graphs, held[0].parent, budget, work, args.rounds,
                             args.slice_queries))
            common.write_results(args.out, "tune_figures", markdown(rows), result)


if __name__ == "__main__":
    main()
