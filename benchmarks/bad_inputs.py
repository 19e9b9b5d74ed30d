"""A battery of bad inputs through the real CLI, each classified by what a user would see.

    python -m benchmarks.bad_inputs [--repo PATH] [--cache DIR] [--json FILE]
    python -m benchmarks.bad_inputs --compare BEFORE.json AFTER.json > results/bad_inputs.md

Every case is one `python -m experiments.train` process (run from `--repo`, so an older
checkout can be measured the same way) against a temporary MLflow store. A case that must fail
is
- clear: the process fails and its last lines name what is wrong (the case's token);
- unclear: it fails, but the last lines do not say what;
- silent: it exits 0, the bad input accepted;
and, apart, `one_line`: it failed with exit code 2 and exactly one line on stderr. A case that
must go on (a data edge, a teacher that cannot be found) is `warned` when it exits 0 and its
output names the token, `silent` when it exits 0 without a word, `failed` when it fails. Every
case also counts the runs it left RUNNING and the runs it created at all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAIL_LINES = 12
FAST = ("cycles=1", "queries_per_cycle=5", "query_cost_sample=0", "show_progress=false")


def _fixtures(folder: Path) -> dict[str, Path]:
    """Small BEIR folders, each wrong in one way."""
    def beir(name: str, corpus: str, queries: str, qrels: str | None) -> Path:
        path = folder / name
        (path / "qrels").mkdir(parents=True)
        (path / "corpus.jsonl").write_text(corpus)
        (path / "queries.jsonl").write_text(queries)
        if qrels is not None:
            (path / "qrels" / "test.tsv").write_text(qrels)
        return path

    def small(name: str, edit: dict) -> Path:
        """A collection large enough to run (12 documents, 6 judged queries), with the
        documents of `edit` replaced by the records given."""
        words = ["wing", "flow", "heat", "shock", "plate", "boundary"]
        docs = {f"d{i}": {"_id": f"d{i}", "title": f"{words[i % 6]} study",
                          "text": f"{words[i % 6]} {words[(i + 1) % 6]} measured case {i}"}
                for i in range(12)}
        docs.update(edit)
        lines = [json.dumps(d) for d in docs.values()]
        queries = "".join(json.dumps({"_id": f"q{i}", "text": f"{w} results"}) + "\n"
                          for i, w in enumerate(words))
        qrels = header + "".join(f"q{i}\td{i}\t1\nq{i}\td{i + 6}\t1\n" for i in range(6))
        return beir(name, "\n".join(lines) + "\n", queries, qrels)

    doc = json.dumps({"_id": "d1", "title": "", "text": "wings"}) + "\n"
    query = json.dumps({"_id": "q1", "text": "wing"}) + "\n"
    header = "query-id\tcorpus-id\tscore\n"
    return {
        "bad_json": beir("bad_json", doc + "{oops\n", query, header + "q1\td1\t1\n"),
        "unknown_doc": beir("unknown_doc", doc, query, header + "q1\td9\t1\n"),
        "no_qrels": beir("no_qrels", doc, query, None),
        "bad_score": beir("bad_score", doc, query, header + "q1\td1\thigh\n"),
        "no_id": beir("no_id", json.dumps({"text": "x"}) + "\n", query, header + "q1\td1\t1\n"),
        "empty_corpus": beir("empty_corpus", "", query, header + "q1\td1\t1\n"),
        # line 3 has a title and no "text"; line 4 neither
        "no_text": small("no_text", {"d2": {"_id": "d2", "title": "wing study"}}),
        "empty_doc": small("empty_doc", {"d3": {"_id": "d3", "title": "", "text": ""}}),
    }


def cases(fx: dict[str, Path]) -> list[tuple[str, tuple[str, ...], str]]:
    """(name, overrides, the token a clear message contains): cases that must fail."""
    beir = ("dataset.kind=beir", "dataset.name=x")
    return [
        ("unknown mode", ("mode=nope",), "mode"),
        ("unknown teacher", ("teacher=nope",), "teacher"),
        ("unknown weight schedule", ("weight=nope",), "weight"),
        ("unknown dataset", ("dataset=nope",), "dataset"),
        ("weight above 1", ("weight.value=1.5",), "weight.value"),
        ("negative weight", ("weight.value=-0.1",), "weight.value"),
        ("negative epochs", ("training.epochs=-1",), "training.epochs"),
        ("zero learning rate", ("training.lr=0",), "training.lr"),
        ("negative cycles", ("cycles=-1",), "cycles"),
        ("cycles not a number", ("cycles=many",), "cycles"),
        ("zero queries per cycle", ("queries_per_cycle=0",), "queries_per_cycle"),
        ("unknown protocol", ("protocol=sometimes",), "protocol"),
        ("test fraction above 1", ("test_fraction=1.5",), "test_fraction"),
        ("one fold", ("protocol=kfold", "folds=1"), "folds"),
        ("validation fraction 1", ("validation_fraction=1.0",), "validation_fraction"),
        ("unknown chelation trigger", ("chelation.trigger=sometimes",), "chelation.trigger"),
        ("unknown projection", ("teacher.projection=pad",), "teacher.projection"),
        ("typo in a key", ("training.epoch=3",), "epoch"),
        ("unknown key added with +", ("+foo=1",), "foo"),
        ("typo added with +", ("+training.epoch=5",), "training.epoch"),
        ("unknown precision", ("student.precision=float16",), "student.precision"),
        ("unknown index documents", ("index.documents=both",), "index.documents"),
        ("index teacher weight above 1", ("index.teacher_weight=2",), "index.teacher_weight"),
        ("negative query cost sample", ("query_cost_sample=-1",), "query_cost_sample"),
        ("seed not a number", ("seed=abc",), "seed"),
        ("tracking URI of no known scheme", ("tracking.uri=garbage://x",), "tracking.uri"),
        ("tracking URI in an impossible folder",
         ("tracking.uri=sqlite:////proc/nope/mlflow.db",), "tracking.uri"),
        ("dead Qdrant server", ("engine.url=http://127.0.0.1:1",), "engine.url"),
        ("engine folder that cannot exist", ("engine.location=/proc/nope/shard",),
         "engine.location"),
        ("unknown dataset kind", ("dataset.kind=nope",), "dataset.kind"),
        ("BEIR folder that does not exist", (*beir, "dataset.path=/nonexistent/beir"),
         "/nonexistent/beir"),
        ("corpus line that is not JSON", (*beir, f"dataset.path={fx['bad_json']}"),
         "corpus.jsonl, line 2"),
        ("judgment of an unknown document", (*beir, f"dataset.path={fx['unknown_doc']}"),
         "d9"),
        ("no qrels file", (*beir, f"dataset.path={fx['no_qrels']}"), "qrels"),
        ("judgment score not a number", (*beir, f"dataset.path={fx['bad_score']}"), "score"),
        ("document without an id", (*beir, f"dataset.path={fx['no_id']}"), "_id"),
        ("empty corpus", (*beir, f"dataset.path={fx['empty_corpus']}"), "no documents"),
        ("official protocol without train queries", ("dataset=cranfield", "protocol=official"),
         "train"),
        ("student model that does not exist", ("student.model=/nonexistent/model",),
         "student.model"),
        ("corpus line without text, strict",
         (*beir, f"dataset.path={fx['no_text']}", "dataset.strict=true"), "corpus.jsonl, line 3"),
    ]


def go_on_cases(fx: dict[str, Path]) -> list[tuple[str, tuple[str, ...], str]]:
    """(name, overrides, the token its warning contains): inputs a job survives, never silently."""
    beir = ("dataset.kind=beir", "dataset.name=x")
    return [
        ("corpus line without text", (*beir, f"dataset.path={fx['no_text']}"),
         "corpus.jsonl, line 3"),
        ("document with neither title nor text", (*beir, f"dataset.path={fx['empty_doc']}"),
         "corpus.jsonl, line 4"),
        ("teacher model that does not exist", ("mode=offline",
                                               "teacher.model=/nonexistent/teacher"),
         "teacher.model"),
    ]


def _count_runs(db: Path, where: str = "1") -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute(f"select count(*) from runs where {where}").fetchone()[0]
    except sqlite3.Error:
        return 0


def run_case(repo: Path, work: Path, overrides: tuple[str, ...], token: str,
             cache: str | None = None, must_fail: bool = True) -> dict:
    work.mkdir(parents=True)
    db = work / "mlflow.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(repo)}
    uri = () if any(o.startswith("tracking.uri=") for o in overrides) else \
        (f"tracking.uri=sqlite:///{db}",)
    extra = (f"cache_dir={cache}",) if cache else ()
    out = subprocess.run([sys.executable, "-m", "experiments.train", *FAST, *extra, *uri,
                          *overrides,
                          f"hydra.run.dir={work}/run", "tracking.experiment=battery"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    text = (out.stdout + out.stderr).strip().splitlines()
    errors = out.stderr.strip().splitlines()
    tail = "\n".join(text[-TAIL_LINES:])
    if not must_fail:
        verdict = "failed" if out.returncode else \
            ("warned" if token in "\n".join(text) else "silent")
    elif out.returncode == 0:
        verdict = "silent"
    else:
        verdict = "clear" if token in tail else "unclear"
    return {"verdict": verdict, "exit": out.returncode, "lines": len(text),
            "stderr_lines": len(errors),
            "one_line": must_fail and out.returncode == 2 and len(errors) == 1,
            "running_left": _count_runs(db, "status = 'RUNNING'"),
            "runs_created": _count_runs(db), "last": text[-1][:160] if text else ""}


def _verdict(record: dict) -> str:
    extra = [f"exit {record['exit']}", f"{record['stderr_lines']} stderr lines"]
    if record["runs_created"]:
        extra.append(f"{record['runs_created']} run created")
    if record["running_left"]:
        extra.append("left RUNNING")
    return f"{record['verdict']} ({', '.join(extra)})"


def compare(before: dict, after: dict) -> str:
    """A markdown table of two batteries' records, case by case, with their counts."""
    keys = ("clear", "unclear", "silent", "warned", "failed", "one_line")
    rows = ["| | " + " | ".join(keys) + " | failures that created a run | left RUNNING |",
            "|---|" + "---|" * (len(keys) + 2)]
    for name, battery in (("before", before), ("after", after)):
        records = battery["records"]
        counts = {k: sum(r["verdict"] == k for r in records) for k in keys}
        counts["one_line"] = sum(r["one_line"] for r in records)
        rows.append(f"| {name} | " + " | ".join(str(counts[k]) for k in keys)
                    + f" | {sum(r['runs_created'] > 0 and r['must_fail'] for r in records)}"
                    + f" | {sum(r['running_left'] > 0 for r in records)} |")
    rows += ["", "| case | overrides | must | before | after |", "|---|---|---|---|---|"]
    old = {r["case"]: r for r in before["records"]}
    for record in after["records"]:
        prior = old.get(record["case"])
        overrides = re.sub(r"=\S*/fixtures/", "=<fixtures>/", record["overrides"])
        rows.append(f"| {record['case']} | `{overrides}` | "
                    f"{'fail' if record['must_fail'] else 'go on'} | "
                    f"{_verdict(prior) if prior else '-'} | {_verdict(record)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(REPO))
    parser.add_argument("--json", default=None, help="write the records here")
    parser.add_argument("--cache", default=None, help="cache_dir for every case")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="print two recorded batteries side by side (markdown)")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        print(compare(before, after))
        return
    repo = Path(args.repo).resolve()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        fx = _fixtures(Path(tmp) / "fixtures")
        every = [(c, True) for c in cases(fx)] + [(c, False) for c in go_on_cases(fx)]
        for i, ((name, overrides, token), must_fail) in enumerate(every):
            record = {"case": name, "overrides": " ".join(overrides), "token": token,
                      "must_fail": must_fail,
                      **run_case(repo, Path(tmp) / f"case{i}", overrides, token, args.cache,
                                 must_fail)}
            records.append(record)
            print(json.dumps(record), flush=True)
    counts = {v: sum(r["verdict"] == v for r in records)
              for v in ("clear", "unclear", "silent", "warned", "failed")}
    counts["one_line"] = sum(r["one_line"] for r in records)
    left = sum(r["running_left"] > 0 for r in records)
    print(json.dumps({"repo": str(repo), "cases": len(records), **counts,
                      "cases_leaving_a_run_running": left}))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "records": records}, indent=2))


if __name__ == "__main__":
    main()
