"""Bring finished jobs' on-disk results into an MLflow store (a job whose store was gone, a
folder copied from another machine):

    chelation-import FOLDER... [--tracking-uri URI] [--experiment NAME]

A FOLDER is a job's folder (config.yaml, results.json, per_query_ndcg.csv, adapters/) or a sweep's
folder (its job folders). Each becomes a FINISHED run that the analysis reads like any other; a
configuration already finished in the experiment is left as it is (so importing twice is safe).
By default each job goes to the store and experiment its config.yaml names.
"""

from __future__ import annotations

import argparse
import logging
import sys

from chelation.job_import import NotAFinishedJob, import_job, job_folders
from chelation.tracking import TrackingUnavailable

log = logging.getLogger("chelation-import")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chelation-import",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", metavar="FOLDER")
    parser.add_argument("--tracking-uri", default=None,
                        help="the store (default: each job's tracking.uri)")
    parser.add_argument("--experiment", default=None,
                        help="the experiment (default: each job's tracking.experiment)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    refused = 0
    for folder in job_folders(args.folders):
        try:
            done = import_job(folder, args.tracking_uri, args.experiment)
        except (NotAFinishedJob, TrackingUnavailable) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            refused += 1
            continue
        if done.created:
            log.info("imported %s as run %s (config hash %s)", folder, done.run_id,
                     done.config_hash)
        else:
            log.info("%s: already in the store as run %s (config hash %s)", folder, done.run_id,
                     done.config_hash)
    return 2 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
