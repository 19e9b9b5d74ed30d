"""The adapted student as a sentence-transformers model: the student's own modules followed by the
trained adapter as one more module, so that `SentenceTransformer(folder)` encodes queries (and
documents) exactly as the run's index saw them, with no part of this library but the module."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from chelation.adapter import ResidualAdapter
from chelation.settings import IndexSettings

try:  # sentence-transformers >= 5 keeps the module base class here
    from sentence_transformers.base.modules.module import Module as _Module
except ImportError:  # pragma: no cover - older releases
    from sentence_transformers.models import Module as _Module


class AdapterModule(_Module):
    """The residual adapter as a sentence-transformers module: it replaces `sentence_embedding`
    (unit vectors from the student's Normalize module) with the adapted unit vectors."""

    config_keys = ["dim", "hidden_dim"]

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.dim, self.hidden_dim = dim, hidden_dim
        self.adapter = ResidualAdapter(dim, hidden_dim)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        features["sentence_embedding"] = self.adapter(features["sentence_embedding"])
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None,
             revision=None, local_files_only: bool = False, **kwargs) -> AdapterModule:
        hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder,
               "revision": revision, "local_files_only": local_files_only}
        config = cls.load_config(model_name_or_path, **hub)
        module = cls(int(config["dim"]), int(config["hidden_dim"]))
        return cls.load_torch_weights(model_name_or_path, model=module, **hub)


class ExportError(RuntimeError):
    """The run cannot be exported as a query-and-document encoder (the message says why)."""


def export_adapted_student(student_model: str, adapter_state: dict[str, torch.Tensor],
                           hidden_dim: int, out_dir: str | Path,
                           max_seq_length: int | None = None) -> Path:
    """Write the student followed by the adapter to `out_dir` (a sentence-transformers folder)."""
    from sentence_transformers import SentenceTransformer

    from chelation.models import load_model, resolve_model

    student = load_model(resolve_model(student_model), max_seq_length)
    dim = int(adapter_state["up.weight"].shape[0])
    module = AdapterModule(dim, hidden_dim)
    module.adapter.load_state_dict(adapter_state)
    module.eval()
    # a new pipeline over the student's modules: the cached student itself stays as it was
    model = SentenceTransformer(modules=[*student, module], device="cpu")
    out = Path(out_dir)
    model.save(str(out))
    return out


def export_run(run_id: str, out_dir: str | Path, tracking_uri: str, fold: int = 0) -> Path:
    """Export a finished run's adapter (of `fold`; a split or official run has one, a k-fold run
    one per fold, each trained without its fold's test queries)."""
    from chelation import tracking

    client = tracking.client(tracking_uri)
    params = client.get_run(run_id).data.params
    index = IndexSettings(documents=params.get("index.documents", IndexSettings().documents),
                          teacher_weight=float(params.get("index.teacher_weight", 0) or 0))
    if index.document_weight > 0:
        raise ExportError(f"run {run_id} indexed documents partly from the teacher "
                          f"(index.documents={index.documents}, teacher share "
                          f"{index.document_weight:g}): the adapted student alone would not "
                          "reproduce its index")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, f"adapters/fold_{fold}.pt", tmp)
        except Exception as err:  # noqa: BLE001 - say which fold and run
            raise ExportError(f"run {run_id} has no adapter for fold {fold} ({err})") from None
        state = torch.load(path, map_location="cpu", weights_only=True)
    seq = params.get("student.max_seq_length")
    return export_adapted_student(params["student.model"], state,
                                  int(params["adapter.hidden_dim"]), out_dir,
                                  int(seq) if seq not in (None, "None", "") else None)


MLFLOW_MODEL_NAME = "adapted_student"


def log_exported_model(run_id: str, model_dir: str | Path, tracking_uri: str) -> str:
    """Log an exported folder to its run with MLflow's sentence_transformers flavour (the
    package's code travels with it, so `mlflow.sentence_transformers.load_model` needs nothing
    installed but sentence-transformers); returns the model's URI."""
    import mlflow
    import sentence_transformers

    from chelation import tracking

    model = sentence_transformers.SentenceTransformer(str(model_dir), device="cpu",
                                                      trust_remote_code=True)
    mlflow.set_tracking_uri(tracking.with_busy_timeout(tracking_uri))
    requirements = [f"sentence-transformers=={sentence_transformers.__version__}",
                    f"torch=={torch.__version__.split('+')[0]}"]
    info = mlflow.sentence_transformers.log_model(
        model, name=MLFLOW_MODEL_NAME, run_id=run_id, pip_requirements=requirements,
        code_paths=[str(Path(__file__).parent)])
    return info.model_uri
