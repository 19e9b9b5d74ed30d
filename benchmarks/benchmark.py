"""Speed against the encoding floor, on Cranfield with the default student.

    python -m benchmarks.benchmark [--teacher sentence-transformers/all-mpnet-base-v2]

Measures, each in a fresh process (so peak memory is the job's own):
- the encoding floor: load the model and encode the corpus and all judged queries once, cold;
- per mode, one cold job (empty cache) and one warm job (cache filled) of the seed protocol:
  3 cycles, 50 train queries per cycle, 10 epochs, with each phase's time and peak RSS;
- a warm 3-mode x 5-weight multirun through the Hydra entry point, total and per job.
Writes results/benchmark.json and benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chelation.kinds import MODES, Mode
from chelation.settings import DEFAULT_STUDENT

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
STUDENT = DEFAULT_STUDENT
MPNET = "sentence-transformers/all-mpnet-base-v2"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_floor(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    from chelation.data import load_beir
    from chelation.encoders import CachedEncoder
    from chelation.protocol import encode_dataset

    dataset = load_beir(args.data)
    encoder = CachedEncoder(args.model, args.cache, batch_size=args.batch_size,
                            show_progress=False)
    work = time.perf_counter()
    encode_dataset(dataset, encoder)
    return {"model": args.model, "n_encoded": encoder.n_encoded,
            "encode_s": time.perf_counter() - work, "in_process_s": time.perf_counter() - started,
            "peak_rss_mib": _peak_rss_mib()}


def worker_job(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    from chelation.data import load_beir
    from chelation.protocol import run_job
    from chelation.settings import RunSettings, TeacherSettings, TrainingSettings

    dataset = load_beir(args.data)
    settings = RunSettings(
        seed=0, cycles=3, queries_per_cycle=50, cache_dir=args.cache,
        teacher=TeacherSettings(name="bench", model=args.teacher,
                                batch_size=args.teacher_batch_size),
        training=TrainingSettings(mode=args.mode, epochs=10),
    )
    work = time.perf_counter()
    result = run_job(dataset, settings, show_progress=False)
    cycles = result.cycles
    return {
        "mode": args.mode, "teacher": args.teacher, "n_encoded": result.n_encoded,
        "job_s": time.perf_counter() - work, "in_process_s": time.perf_counter() - started,
        "encode_s": result.encode_time_s,
        "teacher_encode_s": result.teacher_encode_time_s,
        "setup_s": result.setup_time_s,
        "reindex_s": sum(c.index_time_s for c in cycles),
        "distill_s": result.distill_time_s,
        "queries_s": sum(c.query_time_s for c in cycles),
        "sediment_s": sum(c.sediment_time_s for c in cycles),
        "eval_s": sum(c.eval_time_s for c in cycles),
        "final_ndcg_at_10": cycles[-1].ndcg_at_10,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _timed_module(module: str, args: list[str], cwd: Path,
                  extra_env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m module args` in a fresh interpreter, offline; wall time includes imports and
    model loading. Raises with the end of stderr if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", **extra_env}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True,
                         text=True, check=False, cwd=cwd)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{module} {args} failed:\n{out.stderr[-4000:]}")
    return out, wall


def _spawn(*argv: str) -> dict:
    """Run a benchmark worker; its record gains the process's wall time."""
    out, wall = _timed_module("benchmarks.benchmark", list(argv), REPO, {})
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["process_wall_s"] = wall
    return record


SWEEP_MODES = tuple(m.value for m in Mode if m.trains)
SWEEP_WEIGHTS = ("0.1", "0.3", "0.5", "0.7", "0.9")


def run_sweep(data: str, cache: str, workdir: Path, teacher: str) -> dict:
    overrides = ["-m", f"mode={','.join(SWEEP_MODES)}", f"weight.value={','.join(SWEEP_WEIGHTS)}",
                 "dataset=cranfield", f"cache_dir={cache}", f"teacher.model={teacher}",
                 f"tracking.uri=sqlite:///{workdir}/mlflow.db", "tracking.experiment=bench",
                 "show_progress=false", f"hydra.sweep.dir={workdir}/multirun"]
    out, wall = _timed_module("experiments.train", overrides, workdir,
                              {"CHELATION_DATA": str(Path(data).parent)})
    launched = len(SWEEP_MODES) * len(SWEEP_WEIGHTS)
    skipped = (out.stdout + out.stderr).count("skipping")
    return {"launched": launched, "ran": launched - skipped, "skipped_as_same_config": skipped,
            "wall_s": wall, "per_launched_job_s": wall / launched,
            "per_run_job_s": wall / max(launched - skipped, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared/datasets/cranfield"))
    parser.add_argument("--teacher", default=MPNET)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--worker", choices=["floor", "job"])
    parser.add_argument("--model", default=STUDENT)
    parser.add_argument("--mode", default=Mode.BASELINE.value)
    parser.add_argument("--cache")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--teacher-batch-size", type=int, default=8)
    parser.add_argument("--render", action="store_true",
                        help="only re-render benchmark.md from the JSON in --out")
    args = parser.parse_args()
    if args.render:
        report = json.loads((Path(args.out) / "benchmark.json").read_text())
        (Path(args.out) / "benchmark.md").write_text(markdown(report))
        return
    if args.worker:
        fn = worker_floor if args.worker == "floor" else worker_job
        print(json.dumps(fn(args)))
        return

    report: dict = {"data": args.data, "student": STUDENT, "teacher": args.teacher,
                    "cpu_count": os.cpu_count(), "floor": {}, "jobs": {}}
    root = Path(tempfile.mkdtemp(prefix="chelation-bench-"))
    try:
        for name, model, bs in (("student", STUDENT, 64),
                                ("teacher", args.teacher, args.teacher_batch_size)):
            cache = root / f"floor-{name}"
            report["floor"][name] = _spawn("--worker", "floor", "--data", args.data,
                                           "--model", model, "--cache", str(cache),
                                           "--batch-size", str(bs))
            print(name, "floor", report["floor"][name], flush=True)
        warm_cache = root / "warm"
        for mode in args.modes.split(","):
            cold_cache = root / f"cold-{mode}"
            common = ("--worker", "job", "--data", args.data, "--mode", mode,
                      "--teacher", args.teacher,
                      "--teacher-batch-size", str(args.teacher_batch_size))
            cold = _spawn(*common, "--cache", str(cold_cache))
            shutil.copytree(cold_cache, warm_cache, dirs_exist_ok=True)
            warm = _spawn(*common, "--cache", str(warm_cache))
            floor = report["floor"]["student"]["process_wall_s"]
            if Mode(mode).teacher_targets:
                floor += report["floor"]["teacher"]["process_wall_s"]
            report["jobs"][mode] = {"cold": cold, "warm": warm, "floor_s": floor,
                                    "cold_over_floor": cold["process_wall_s"] / floor,
                                    "warm_over_cold": warm["process_wall_s"]
                                    / cold["process_wall_s"]}
            print(mode, json.dumps(report["jobs"][mode]), flush=True)
        report["sweep"] = run_sweep(args.data, str(warm_cache), root, args.teacher)
        print("sweep", report["sweep"], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    (out / "benchmark.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Benchmark: speed against the encoding floor",
        "",
        f"Generated by `python -m benchmarks.benchmark` on {report['cpu_count']} CPU cores; "
        f"data `{report['data']}`, student `{report['student']}`, teacher `{report['teacher']}`. "
        "Every time is a fresh process's wall time (imports and model loading included).",
        "",
        "| encoding floor | texts encoded | process wall (s) | encode only (s) | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for name, f in report["floor"].items():
        lines.append(f"| {name} `{f['model']}` | {f['n_encoded']} | {f['process_wall_s']:.1f} "
                     f"| {f['encode_s']:.1f} | {f['peak_rss_mib']:.0f} |")
    lines += ["", "Phases in seconds. *setup* is the student's encoding plus building the index; a "
              "cold offline job encodes the teacher inside *distill*, a cold hybrid job inside its "
              "first *sediment*; *encode* is all encoding (student + teacher) wherever it "
              "happened.", "",
              "| mode | job | wall | setup | distill | queries | sediment | eval | encode "
              "| peak RSS (MiB) | NDCG@10 | wall / floor |", "|" + "---|" * 12]
    for mode, j in report["jobs"].items():
        for kind in ("cold", "warm"):
            r = j[kind]
            ratio = (f"{j['cold_over_floor']:.2f}x floor" if kind == "cold"
                     else f"{j['warm_over_cold']:.1%} of cold")
            lines.append(
                f"| {mode} | {kind} | {r['process_wall_s']:.1f} | {r['setup_s']:.1f} "
                f"| {r['distill_s']:.1f} | {r['queries_s']:.1f} | {r['sediment_s']:.1f} "
                f"| {r['eval_s']:.1f} | {r['encode_s']:.1f} | {r['peak_rss_mib']:.0f} "
                f"| {r['final_ndcg_at_10']:.4f} | {ratio} |")
    s = report.get("sweep")
    if s:
        lines += ["", f"Warm 3-mode x 5-weight multirun: {s['launched']} jobs launched, "
                  f"{s['ran']} ran, {s['skipped_as_same_config']} skipped as the same "
                  f"configuration (baseline and offline ignore the weight); total "
                  f"{s['wall_s']:.1f} s, {s['per_launched_job_s']:.1f} s per launched job, "
                  f"{s['per_run_job_s']:.1f} s per job run."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
