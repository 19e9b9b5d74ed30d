"""Encode BEIR collections into the embedding cache once, so that later jobs (and the test suite)
read their vectors instead of encoding them: the long part of a first run on a new machine.

    python -m benchmarks.encode_cache [--cache DIR] [--model M]... FOLDER...

A folder's test queries are encoded, and its train queries when it has `qrels/train.tsv`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from chelation.data import load_beir
from chelation.encoders import CachedEncoder
from chelation.protocol import encode_dataset
from chelation.settings import EncoderSettings

DEFAULT_CACHE = "~/.cache/chelation/embeddings"


def encode_folder(folder: Path, model: str, cache: Path) -> tuple[int, int, float]:
    """(texts encoded, texts already cached, seconds) for one collection and model."""
    train = "train" if (folder / "qrels" / "train.tsv").is_file() else None
    dataset = load_beir(folder, "test", train_split=train)
    encoder = CachedEncoder(model, cache)
    started = time.perf_counter()
    encode_dataset(dataset, encoder)
    return encoder.n_encoded, encoder.n_cached, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--model", action="append",
                        help=f"repeatable; default {EncoderSettings().model}")
    args = parser.parse_args()
    cache = Path(args.cache).expanduser()
    for model in args.model or [EncoderSettings().model]:
        for folder in args.folders:
            encoded, cached, seconds = encode_folder(folder, model, cache)
            print(f"{folder.name} with {model}: {encoded} texts encoded, {cached} already "
                  f"cached, {seconds:.1f} s")


if __name__ == "__main__":
    main()
