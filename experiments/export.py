"""Export a finished run's model as a sentence-transformers model folder.

    chelation-export RUN_ID OUT_DIR [--tracking-uri sqlite:///mlflow.db] [--fold 0] [--no-log]

`SentenceTransformer(OUT_DIR, trust_remote_code=True)` then loads it offline: the adapter (and,
for a run with teacher or blended documents, the document path) are modules of this package
(installed), which sentence-transformers imports only when trusted. A run with teacher or blended
documents exports as one query/document model: use `encode_query` and `encode_document`.
A split or official run has one adapter; a k-fold run has one per fold, each
trained without its fold's test queries: `--fold` picks which. The folder is also logged to the
run with MLflow's sentence_transformers flavour (`--no-log` skips that), so
`mlflow.sentence_transformers.load_model(URI)` loads it from the store.
"""

from __future__ import annotations

import argparse

from chelation.export import export_run, log_exported_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("out_dir")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--no-log", action="store_true", help="do not log the model to the run")
    args = parser.parse_args()
    out = export_run(args.run_id, args.out_dir, args.tracking_uri, args.fold)
    print(f"wrote {out}: SentenceTransformer('{out}', trust_remote_code=True) loads it "
          "(the 'remote code' is this package's modules, installed here)")
    if not args.no_log:
        uri = log_exported_model(args.run_id, out, args.tracking_uri)
        print(f"logged to run {args.run_id} as {uri}: "
              f"mlflow.sentence_transformers.load_model('{uri}') loads it")


if __name__ == "__main__":
    main()
