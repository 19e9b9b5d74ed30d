"""Tests of chelation.data: loaders, synthetic data and query splits."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from chelation.data import (
    DatasetError,
    RetrievalDataset,
    inner_folds,
    kfold_queries,
    load_beir,
    load_mteb,
    make_synthetic,
    selection_slice,
    split_queries,
    validation_slice,
)
from chelation.data.mteb_loader import _from_mteb_dicts

CRANFIELD = Path(__file__).resolve().parents[2] / "shared/datasets/cranfield"


def _write_beir(
    root: Path,
    corpus: list[dict[str, object]] | None = None,
    queries: list[dict[str, object]] | None = None,
    qrels: list[str] | None = None,
    split: str = "test",
) -> Path:
    corpus = (
        corpus
        if corpus is not None
        else [
            {"_id": "d1", "title": " Wing ", "text": " lift and drag "},
            {"_id": "d2", "title": "", "text": "heat transfer"},
            {"_id": "d3", "text": "boundary layer"},
        ]
    )
    queries = (
        queries
        if queries is not None
        else [
            {"_id": "1", "text": "wing lift"},
            {"_id": "2", "text": "heat"},
            {"_id": "10", "text": "layer"},
            {"_id": "3", "text": "unjudged"},
        ]
    )
    qrels = (
        qrels
        if qrels is not None
        else [
            "query-id\tcorpus-id\tscore",
            "1\td1\t2",
            "1\td2\t0",
            "10\td3\t1",
            "2\td2\t1",
            "3\td1\t0",
        ]
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(qrels) + "\n")
    return root


# --- BEIR -----------------------------------------------------------------------------------


@pytest.mark.skipif(not CRANFIELD.is_dir(), reason="shared Cranfield copy not present")
def test_cranfield_counts() -> None:
    data = load_beir(CRANFIELD)
    assert data.name == "cranfield"
    assert len(data.corpus) == 1400
    assert len(data.judged_query_ids) == 225
    assert len(data.queries) == 225
    assert sum(len(docs) for docs in data.qrels.values()) == 1612
    assert data.doc_ids[:3] == ["1", "2", "3"]
    assert data.judged_query_ids[:3] == ["1", "2", "3"]
    assert data.judged_query_ids[-1] == "225"
    assert data.corpus["1"].startswith("experimental investigation of the aerodynamics")
    assert all(isinstance(s, int) for docs in data.qrels.values() for s in docs.values())


def test_beir_small(tmp_path: Path) -> None:
    data = load_beir(_write_beir(tmp_path / "tiny"))
    assert isinstance(data, RetrievalDataset)
    assert data.name == "tiny"
    assert data.corpus == {
        "d1": "Wing lift and drag",
        "d2": "heat transfer",
        "d3": "boundary layer",
    }
    assert data.doc_ids == ["d1", "d2", "d3"]
    # "3" has only a zero judgment, so it is not a judged query; natural order puts 10 last
    assert data.judged_query_ids == ["1", "2", "10"]
    assert list(data.queries) == ["1", "2", "10"]
    assert data.qrels["1"] == {"d1": 2, "d2": 0}  # zero rows are kept
    assert "3" not in data.qrels
    sub = data.subset_qrels(["10"])
    assert sub == {"10": {"d3": 1}}
    sub["10"]["d3"] = 5
    assert data.qrels["10"]["d3"] == 1
    with pytest.raises(KeyError):
        data.subset_qrels(["3"])


def test_beir_blank_lines_and_other_split(tmp_path: Path) -> None:
    root = _write_beir(
        tmp_path, qrels=["query-id\tcorpus-id\tscore", "", "2\td2\t3", "  "], split="dev"
    )
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write("\n   \n")
    data = load_beir(root, split="dev", name="custom")
    assert data.name == "custom"
    assert data.judged_query_ids == ["2"]
    assert data.qrels == {"2": {"d2": 3}}


def _assert_names(exc: pytest.ExceptionInfo[DatasetError], filename: str, line: int | None) -> None:
    message = str(exc.value)
    assert filename in message
    assert exc.value.path is not None
    assert exc.value.path.endswith(filename)
    if line is not None:
        assert f"line {line}" in message
        assert exc.value.line == line


def test_invalid_json_line(tmp_path: Path) -> None:
    root = _write_beir(tmp_path)
    lines = (root / "corpus.jsonl").read_text().splitlines()
    lines.insert(2, '{"_id": "d9", "text": ')
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="invalid JSON") as exc:
        load_beir(root)
    _assert_names(exc, "corpus.jsonl", 3)


def test_missing_id(tmp_path: Path) -> None:
    queries = [{"_id": "1", "text": "a"}, {"text": "no id here"}]
    with pytest.raises(DatasetError, match="_id") as exc:
        load_beir(_write_beir(tmp_path, queries=queries, qrels=["1\td1\t1"]))
    _assert_names(exc, "queries.jsonl", 2)


def test_duplicate_id(tmp_path: Path) -> None:
    corpus = [{"_id": "d1", "text": "x"}, {"_id": "d2", "text": "y"}, {"_id": "d1", "text": "z"}]
    with pytest.raises(DatasetError, match="duplicate") as exc:
        load_beir(_write_beir(tmp_path, corpus=corpus))
    _assert_names(exc, "corpus.jsonl", 3)


def test_non_object_json_line(tmp_path: Path) -> None:
    root = _write_beir(tmp_path)
    (root / "queries.jsonl").write_text('{"_id": "1", "text": "a"}\n[1, 2]\n')
    with pytest.raises(DatasetError) as exc:
        load_beir(root)
    _assert_names(exc, "queries.jsonl", 2)


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ("1\td1", "3 tab-separated columns"),
        ("1\td1\t2\textra", "3 tab-separated columns"),
        ("1\td1\thigh", "not an integer"),
        ("1\td1\t1.5", "not an integer"),
        ("1\tnope\t1", "unknown document"),
        ("99\td1\t1", "unknown query"),
    ],
)
def test_bad_qrels_row(tmp_path: Path, row: str, pattern: str) -> None:
    rows = ["query-id\tcorpus-id\tscore", "1\td1\t2", "", row]
    with pytest.raises(DatasetError, match=pattern) as exc:
        load_beir(_write_beir(tmp_path, qrels=rows))
    _assert_names(exc, "test.tsv", 4)


def test_conflicting_duplicate_judgment(tmp_path: Path) -> None:
    rows = ["query-id\tcorpus-id\tscore", "1\td1\t2", "1\td1\t1"]
    with pytest.raises(DatasetError, match="conflicting") as exc:
        load_beir(_write_beir(tmp_path, qrels=rows))
    _assert_names(exc, "test.tsv", 3)


@pytest.mark.parametrize("filename", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file(tmp_path: Path, filename: str) -> None:
    root = _write_beir(tmp_path)
    (root / filename).unlink()
    with pytest.raises(DatasetError, match="not found") as exc:
        load_beir(root)
    _assert_names(exc, Path(filename).name, None)


def test_missing_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_beir(_write_beir(tmp_path), split="train")
    _assert_names(exc, "train.tsv", None)


def test_no_judged_queries(tmp_path: Path) -> None:
    rows = ["query-id\tcorpus-id\tscore", "1\td1\t0", "2\td2\t0"]
    with pytest.raises(DatasetError, match="no judged queries") as exc:
        load_beir(_write_beir(tmp_path, qrels=rows))
    _assert_names(exc, "test.tsv", None)


def test_invalid_utf8(tmp_path: Path) -> None:
    root = _write_beir(tmp_path)
    with (root / "corpus.jsonl").open("ab") as fh:
        fh.write(b'{"_id": "d4", "text": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match="UTF-8") as exc:
        load_beir(root)
    _assert_names(exc, "corpus.jsonl", 4)


def test_dataset_error_is_value_error() -> None:
    assert issubclass(DatasetError, ValueError)


# --- MTEB -----------------------------------------------------------------------------------


def test_load_mteb_without_mteb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mteb", None)  # makes `import mteb` raise ImportError
    with pytest.raises(ImportError, match=r"pip install chelation\[mteb\]"):
        load_mteb("SciFact")


def test_load_mteb_reports_load_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    class OfflineTask:
        def load_data(self) -> None:
            raise ConnectionError("hub unreachable")

    fake = types.ModuleType("mteb")
    fake.get_task = lambda name: OfflineTask()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mteb", fake)
    with pytest.raises(RuntimeError, match="SciFact"):
        load_mteb("SciFact")


def _v1_parts() -> tuple[dict, dict, dict]:
    corpus = {
        "d1": {"title": "Title one", "text": " body one "},
        "d2": {"title": "", "text": "body two"},
        "d3": "plain string doc",
    }
    queries = {"q1": "first query", "q2": "second query", "q3": "zero only"}
    relevant_docs = {"q1": {"d1": 1, "d3": 0}, "q2": {"d2": 2.0}, "q3": {"d1": 0}}
    return corpus, queries, relevant_docs


def _check_small(data: RetrievalDataset) -> None:
    assert data.corpus == {"d1": "Title one body one", "d2": "body two", "d3": "plain string doc"}
    assert data.judged_query_ids == ["q1", "q2"]
    assert data.queries == {"q1": "first query", "q2": "second query"}
    assert data.qrels == {"q1": {"d1": 1, "d3": 0}, "q2": {"d2": 2}}
    assert isinstance(data.qrels["q2"]["d2"], int)


def test_from_mteb_flat_and_split_keyed() -> None:
    corpus, queries, relevant_docs = _v1_parts()
    _check_small(_from_mteb_dicts("toy", corpus, queries, relevant_docs))
    data = _from_mteb_dicts(
        "toy", {"test": corpus}, {"test": queries}, {"test": relevant_docs}, split="test"
    )
    _check_small(data)
    assert data.name == "toy"
    with pytest.raises(DatasetError, match="dev"):
        _from_mteb_dicts(
            "toy", {"test": corpus}, {"test": queries}, {"test": relevant_docs}, split="dev"
        )


def test_from_mteb_subset_keyed() -> None:
    corpus, queries, relevant_docs = _v1_parts()
    wrap = {"default": {"test": corpus}}, {"default": {"test": queries}}
    _check_small(_from_mteb_dicts("toy", *wrap, {"default": {"test": relevant_docs}}))
    two = {
        "en": {"test": relevant_docs},
        "de": {"test": {"q1": {"d2": 1}}},
    }
    c = {"en": {"test": corpus}, "de": {"test": corpus}}
    q = {"en": {"test": queries}, "de": {"test": queries}}
    with pytest.raises(DatasetError, match="subset"):
        _from_mteb_dicts("toy", c, q, two)
    _check_small(_from_mteb_dicts("toy", c, q, two, subset="en"))
    assert _from_mteb_dicts("toy", c, q, two, subset="de").qrels == {"q1": {"d2": 1}}


def test_from_mteb_row_tables_and_unknown_ids() -> None:
    corpus_rows = [
        {"id": "d1", "title": "Title one", "text": "body one"},
        {"id": "d2", "title": None, "text": "body two"},
        {"id": "d3", "title": "", "text": "plain string doc"},
    ]
    query_rows = [{"id": "q1", "text": "first query"}, {"id": "q2", "text": "second query"}]
    relevant_docs = {"q1": {"d1": 1, "d3": 0, "missing": 1}, "q2": {"d2": 2}, "q9": {"d1": 1}}
    data = _from_mteb_dicts("toy", corpus_rows, query_rows, relevant_docs)
    _check_small(data)


def test_load_mteb_with_fake_v2_task(monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, queries, relevant_docs = _v1_parts()

    class V2Task:
        def __init__(self) -> None:
            self.dataset: dict = {}

        def load_data(self) -> None:
            self.dataset = {
                "default": {
                    "test": {
                        "corpus": [
                            {"id": k, **(v if isinstance(v, dict) else {"text": v})}
                            for k, v in corpus.items()
                        ],
                        "queries": [{"id": k, "text": v} for k, v in queries.items()],
                        "relevant_docs": relevant_docs,
                        "top_ranked": None,
                    }
                }
            }

    fake = types.ModuleType("mteb")
    fake.get_task = lambda name: V2Task()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mteb", fake)
    data = load_mteb("Toy")
    assert data.name == "Toy"
    _check_small(data)


def test_from_mteb_no_judged_queries() -> None:
    with pytest.raises(DatasetError, match="no judged queries"):
        _from_mteb_dicts("toy", {"d1": "x"}, {"q1": "y"}, {"q1": {"d1": 0}})


# --- synthetic ------------------------------------------------------------------------------


def test_synthetic_shape_and_grades() -> None:
    data = make_synthetic()
    assert data.name == "synthetic"
    assert len(data.corpus) == 12 * 30
    assert len(data.queries) == 12 * 6
    assert data.doc_ids[0] == "d0001"
    assert data.doc_ids[-1] == "d0360"
    assert data.judged_query_ids[0] == "q001"
    assert data.judged_query_ids[-1] == "q072"
    for text in data.corpus.values():
        assert 15 <= len(text.split()) <= 40
    for docs in data.qrels.values():
        assert set(docs.values()) <= {0, 1, 2}
        assert 2 in docs.values()
        assert set(docs) <= set(data.corpus)


def test_synthetic_deterministic() -> None:
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    assert a == b
    c = make_synthetic(seed=4)
    assert a.corpus != c.corpus
    assert a.queries != c.queries


def test_synthetic_sizes_and_validation() -> None:
    data = make_synthetic(seed=1, n_topics=3, docs_per_topic=5, queries_per_topic=2)
    assert len(data.corpus) == 15
    assert len(data.queries) == 6
    with pytest.raises(ValueError, match="n_topics"):
        make_synthetic(n_topics=99)


# --- splits ---------------------------------------------------------------------------------

IDS = [str(i) for i in range(1, 101)]


def test_split_queries_properties() -> None:
    train, test = split_queries(IDS, 0.2, seed=7)
    assert len(test) == 20
    assert len(train) == 80
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(IDS)
    assert split_queries(list(reversed(IDS)), 0.2, seed=7) == (train, test)
    assert split_queries(IDS, 0.2, seed=8) != (train, test)
    tiny_train, tiny_test = split_queries(["a", "b"], 0.01, seed=0)
    assert len(tiny_train) == 1
    assert len(tiny_test) == 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_queries_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match=re.escape(str(fraction))):
        split_queries(IDS, fraction, seed=0)


def test_split_queries_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="more than once"):
        split_queries(["1", "2", "2"], 0.5, seed=0)


def test_kfold_properties() -> None:
    folds = kfold_queries(IDS, k=5, seed=11)
    assert len(folds) == 5
    tested: list[str] = []
    for train, test in folds:
        assert not set(train) & set(test)
        assert set(train) | set(test) == set(IDS)
        assert len(test) == 20
        tested.extend(test)
    assert sorted(tested) == sorted(IDS)  # every id tested exactly once
    assert kfold_queries(list(reversed(IDS)), k=5, seed=11) == folds
    assert kfold_queries(IDS, k=5, seed=12) != folds
    uneven = kfold_queries(IDS[:7], k=3, seed=0)
    assert sorted(len(test) for _, test in uneven) == [2, 2, 3]


@pytest.mark.parametrize("k", [1, 0, 101])
def test_kfold_bad_k(k: int) -> None:
    with pytest.raises(ValueError, match=f"got {k}"):
        kfold_queries(IDS, k=k, seed=0)


def test_validation_slice() -> None:
    train, _ = split_queries(IDS, 0.2, seed=0)
    fit, val = validation_slice(train, 0.1, seed=0)
    assert len(val) == 8
    assert not set(fit) & set(val)
    assert set(fit) | set(val) == set(train)
    assert validation_slice(list(reversed(train)), 0.1, seed=0) == (fit, val)
    assert validation_slice(train, 0.0, seed=0) == (train, [])
    assert validation_slice(["x"], 0.5, seed=0) == (["x"], [])
    fit2, val2 = validation_slice(["a", "b"], 0.01, seed=3)
    assert len(fit2) == 1
    assert len(val2) == 1
    with pytest.raises(ValueError, match=re.escape("1.0")):
        validation_slice(train, 1.0, seed=0)


def test_the_selection_slice_is_drawn_apart_from_the_guard_slice() -> None:
    train, _ = split_queries(IDS, 0.2, seed=0)
    rest, select = selection_slice(train, 0.25, seed=0)
    assert len(select) == 20 and not set(rest) & set(select)  # a quarter of 80
    assert set(rest) | set(select) == set(train)
    # order-independent, and not the guard's shuffle
    assert selection_slice(list(reversed(train)), 0.25, seed=0) == (rest, select)
    assert select != validation_slice(train, 0.25, seed=0)[1]


def test_inner_folds_partition_the_training_side_apart_from_the_outer_folds() -> None:
    train, _ = split_queries(IDS, 0.2, seed=0)
    inner = inner_folds(train, 3, seed=0)
    tests = [set(t) for _, t in inner]
    assert sum(map(len, tests)) == len(train) and set().union(*tests) == set(train)
    for fit, test in inner:
        assert set(fit) | set(test) == set(train) and not set(fit) & set(test)
    assert [t for _, t in inner] != [t for _, t in kfold_queries(train, 3, seed=0)]


# --- a collection's own train split ---------------------------------------------------------

SCIFACT = Path(__file__).resolve().parents[2] / "shared/datasets/scifact"


def test_train_split_adds_train_queries_beside_the_evaluation_split(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "c")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n3\td1\t1\n")
    data = load_beir(root, "test", train_split="train")
    assert data.judged_query_ids == ["1", "2", "10"]
    assert data.train_query_ids == ("3",)
    assert data.all_query_ids == ["1", "2", "10", "3"]
    assert data.subset_qrels(["3"]) == {"3": {"d1": 1}}
    # without the train split the same folder loads as before
    assert load_beir(root).train_query_ids == ()


def test_a_query_in_both_splits_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "c")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n2\td1\t1\n")
    with pytest.raises(DatasetError, match=r"train\.tsv.*both the train and the evaluation"):
        load_beir(root, "test", train_split="train")


@pytest.mark.skipif(not SCIFACT.is_dir(), reason="shared SciFact copy not present")
def test_scifact_official_split_counts() -> None:
    data = load_beir(SCIFACT, "test", train_split="train")
    assert len(data.corpus) == 5183
    assert len(data.judged_query_ids) == 300
    assert len(data.train_query_ids) == 809
    assert not set(data.judged_query_ids) & set(data.train_query_ids)
    assert sum(len(data.qrels[q]) for q in data.judged_query_ids) == 339


def test_documents_with_no_text_warn_once_with_count_and_ids(caplog) -> None:
    import logging

    from chelation.data import load_beir

    with caplog.at_level(logging.WARNING, logger="chelation.data.beir"):
        load_beir(Path(__file__).resolve().parents[1].parent / "shared/datasets/cranfield")
    warnings = [r.getMessage() for r in caplog.records if "no title and no text" in r.message]
    assert len(warnings) == 1 and "2 document(s)" in warnings[0] and "471, 995" in warnings[0]
    assert "corpus.jsonl, lines " in warnings[0]


def test_a_corpus_line_without_text_is_named_and_refused_when_strict(tmp_path, caplog) -> None:
    import logging

    from chelation.data import DatasetError, load_beir

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "", "text": "wings"}\n{"_id": "d2", "title": "flow"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "wing"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with caplog.at_level(logging.WARNING, logger="chelation.data.beir"):
        data = load_beir(tmp_path)
    assert data.corpus["d2"] == "flow"
    assert any("corpus.jsonl, line 2" in r.getMessage() and '"text"' in r.getMessage()
               for r in caplog.records)
    with pytest.raises(DatasetError, match="corpus.jsonl, line 2"):
        load_beir(tmp_path, strict=True)


def test_named_synthetic_collections() -> None:
    from chelation.data import make_synthetic_variant

    hard = make_synthetic_variant("synthetic_hard", seed=0)
    assert hard.name == "synthetic_hard" and len(hard.corpus) == 16 * 60
    assert len(hard.judged_query_ids) == 16 * 8
    assert make_synthetic_variant("synthetic_hard", seed=0).corpus == hard.corpus
    assert make_synthetic_variant("synthetic").corpus == make_synthetic(0).corpus
    with pytest.raises(ValueError, match="dataset.name='nope'"):
        make_synthetic_variant("nope")


def test_a_synthetic_dataset_must_name_a_known_collection() -> None:
    from chelation.settings import DatasetSpec, SettingsError

    with pytest.raises(SettingsError, match="dataset.name='cranfield'"):
        DatasetSpec(name="cranfield", kind="synthetic").validate()
