"""Write the synthetic collection, at any size, as a BEIR folder (for end-to-end runs on real
encoded text at scale: the texts are generated, the model really encodes them).

    python -m benchmarks.synthetic_beir OUT [--topics 16 --docs-per-topic 1250]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chelation.data import make_synthetic


def write_beir(out: Path, seed: int, topics: int, docs_per_topic: int,
               queries_per_topic: int) -> Path:
    data = make_synthetic(seed, topics, docs_per_topic, queries_per_topic)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as fh:
        for doc_id, text in data.corpus.items():
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with open(out / "queries.jsonl", "w") as fh:
        for query_id, text in data.queries.items():
            fh.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    with open(out / "qrels" / "test.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for query_id, docs in data.qrels.items():
            for doc_id, score in docs.items():
                fh.write(f"{query_id}\t{doc_id}\t{score}\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--topics", type=int, default=16)
    parser.add_argument("--docs-per-topic", type=int, default=1250)
    parser.add_argument("--queries-per-topic", type=int, default=14)
    args = parser.parse_args()
    out = write_beir(Path(args.out), args.seed, args.topics, args.docs_per_topic,
                     args.queries_per_topic)
    print(out)


if __name__ == "__main__":
    main()
