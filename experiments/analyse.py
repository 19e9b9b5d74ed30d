"""Execute notebooks/analysis.ipynb headless against an MLflow experiment.

    python -m experiments.analyse --tracking-uri sqlite:///mlflow.db --experiment NAME \
        [--output-dir analysis_output] [--results-md results/RESULTS.md] [--post-hoc WHY]

`--post-hoc WHY` marks a study whose candidate set was chosen after results on the same test
queries had been read; its report says so.

The parameters cell (tagged `parameters`) is replaced by the given values; the executed notebook,
its figures and the comparison table land in the output folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"


def execute_notebook(params: dict[str, object], output_dir: str | Path,
                     notebook: str | Path = NOTEBOOK, kernel: str = "python3",
                     timeout: int = 600):
    """Run the notebook with `params` injected; returns the executed notebook node."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(notebook), as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'")
    cell.source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    NotebookClient(nb, kernel_name=kernel, timeout=timeout,
                   resources={"metadata": {"path": str(output_dir)}}).execute()
    nbformat.write(nb, str(output_dir / "analysis.executed.ipynb"))
    return nb


def absolute_sqlite(uri: str) -> str:
    """A relative SQLite path made absolute: the notebook runs in its output folder, where the
    relative path would name (and MLflow would create) another, empty store."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--output-dir", default="analysis_output")
    parser.add_argument("--results-md", default=None)
    parser.add_argument("--post-hoc", default=None, metavar="WHY",
                        help="the candidate set was chosen after results on these test queries "
                             "were read: say why; the report marks the answer post hoc")
    args = parser.parse_args()
    output = Path(args.output_dir).resolve()
    execute_notebook({"TRACKING_URI": absolute_sqlite(args.tracking_uri),
                      "EXPERIMENT": args.experiment,
                      "OUTPUT_DIR": str(output),
                      "RESULTS_MD": str(Path(args.results_md).resolve()) if args.results_md
                      else None,
                      "POST_HOC": args.post_hoc}, output)
    print(f"executed notebook and figures in {output}")


if __name__ == "__main__":
    main()
