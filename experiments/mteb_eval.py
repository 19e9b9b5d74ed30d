"""Score a sentence-transformers model folder on a local BEIR folder with mteb's own retrieval
evaluation (a referee for the harness's own figures).

    chelation-mteb MODEL BEIR_FOLDER [--split test] [--batch-size 32] [--json OUT.json]

MODEL is a folder (a `chelation-export` output, whose query/document Router mteb routes through
`encode_query` / `encode_document`) or a model name the harness resolves offline
(`sentence-transformers/all-MiniLM-L6-v2`). Nothing is fetched from the hub and mteb's result
cache is neither read nor written.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from chelation.mteb_eval import score_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", help="also write every score mteb reported to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    score = score_model(args.model, args.folder, args.split, args.batch_size,
                        show_progress=True)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(score), indent=2, default=str))
    print(score.line())


if __name__ == "__main__":
    main()
