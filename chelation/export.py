"""A run as one sentence-transformers model that encodes queries and documents exactly as the run
did, with no part of this library but its modules.

A run whose index held the student's own documents becomes the student's modules followed by the
trained adapter. A run whose index held teacher (or blended) documents becomes a query/document
`Router` followed by the adapter: the query path is the student (a query costs one student
encoding), the document path `BlendedDocuments` encodes with student and teacher and indexes
`normalize((1 - w) * student + w * normalize(teacher @ P))`, P the run's fitted projection and
w its teacher share, saved with the model. `encode_query` and `encode_document` pick the path.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from chelation.adapter import ResidualAdapter
from chelation.documents import STUDENT_DOCUMENTS_FALLBACK
from chelation.settings import IndexSettings

try:  # sentence-transformers >= 5 keeps the module base classes here
    from sentence_transformers.base.modules.input_module import InputModule as _InputModule
    from sentence_transformers.base.modules.module import Module as _Module
except ImportError:  # pragma: no cover - older releases
    from sentence_transformers.models import InputModule as _InputModule
    from sentence_transformers.models import Module as _Module

log = logging.getLogger(__name__)


def _hub_options(subfolder: str, token, cache_folder, revision,
                 local_files_only: bool) -> dict[str, Any]:
    """What sentence-transformers passes a module's `load`, handed on to its config and
    weight readers."""
    return {"subfolder": subfolder, "token": token, "cache_folder": cache_folder,
            "revision": revision, "local_files_only": local_files_only}


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
        hub = _hub_options(subfolder, token, cache_folder, revision, local_files_only)
        config = cls.load_config(model_name_or_path, **hub)
        module = cls(int(config["dim"]), int(config["hidden_dim"]))
        return cls.load_torch_weights(model_name_or_path, model=module, **hub)


class BlendedDocuments(_InputModule):
    """The document path of a blended index: the texts encoded by the student and by the teacher
    (each its own sentence-transformers pipeline, unit vectors as the run's encoders made them),
    the teacher's mapped into the student's frame by the run's projection P, then
    `normalize((1 - w) * student + w * normalize(teacher @ P))` (w = 1: the projected teacher
    alone), as `chelation.documents.blend_documents` made the index's documents."""

    config_keys = ["teacher_weight"]
    config_file_name = "blended_documents_config.json"
    STUDENT, TEACHER, PROJECTION = "student", "teacher", "projection.safetensors"

    def __init__(self, student, teacher, projection: torch.Tensor | np.ndarray,
                 teacher_weight: float):
        super().__init__()
        if not 0.0 < teacher_weight <= 1.0:
            raise ValueError(f"teacher_weight must be in (0, 1], got {teacher_weight}")
        self.student, self.teacher = student, teacher
        self.teacher_weight = float(teacher_weight)
        self.register_buffer("projection", torch.as_tensor(np.asarray(projection,
                                                                      dtype=np.float32)))

    @property
    def tokenizer(self):
        return self.student.tokenizer

    def get_embedding_dimension(self) -> int:
        return int(self.projection.shape[1])

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None,
                   **kwargs) -> dict[str, Any]:
        features: dict[str, Any] = {}
        for name, model in ((self.STUDENT, self.student), (self.TEACHER, self.teacher)):
            for key, value in model.preprocess(inputs, prompt=prompt).items():
                features[f"{name}.{key}"] = value
        return features

    def _encode(self, name: str, model, features: dict[str, Any]) -> torch.Tensor:
        prefix = f"{name}."
        own = {k[len(prefix):]: v for k, v in features.items() if k.startswith(prefix)}
        return F.normalize(model(own)["sentence_embedding"], dim=-1)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        student = self._encode(self.STUDENT, self.student, features)
        teacher = self._encode(self.TEACHER, self.teacher, features)
        projected = F.normalize(teacher @ self.projection.to(teacher.dtype), dim=-1)
        w = self.teacher_weight
        blended = projected if w == 1.0 else F.normalize((1.0 - w) * student + w * projected,
                                                         dim=-1)
        return {"sentence_embedding": blended}

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        from safetensors.torch import save_file

        out = Path(output_path)
        self.save_config(str(out))
        self.student.save(str(out / self.STUDENT), create_model_card=False)
        self.teacher.save(str(out / self.TEACHER), create_model_card=False)
        save_file({"projection": self.projection.contiguous()}, str(out / self.PROJECTION))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None,
             revision=None, local_files_only: bool = False, **kwargs) -> BlendedDocuments:
        from safetensors.torch import load_file
        from sentence_transformers import SentenceTransformer

        hub = _hub_options(subfolder, token, cache_folder, revision, local_files_only)
        config = cls.load_config(model_name_or_path, **hub)
        folder = Path(cls.load_dir_path(model_name_or_path, **hub))
        student = SentenceTransformer(str(folder / cls.STUDENT), device="cpu")
        teacher = SentenceTransformer(str(folder / cls.TEACHER), device="cpu")
        projection = load_file(str(folder / cls.PROJECTION))["projection"]
        return cls(student, teacher, projection, float(config["teacher_weight"]))


class ExportError(RuntimeError):
    """The run cannot be exported as a query-and-document encoder (the message says why)."""


def _adapter_module(adapter_state: dict[str, torch.Tensor], hidden_dim: int) -> AdapterModule:
    """The run's trained adapter (its saved state) as the pipeline's last module."""
    module = AdapterModule(int(adapter_state["up.weight"].shape[0]), hidden_dim)
    module.adapter.load_state_dict(adapter_state)
    return module.eval()


def export_adapted_student(student_model: str, adapter_state: dict[str, torch.Tensor],
                           hidden_dim: int, out_dir: str | Path,
                           max_seq_length: int | None = None) -> Path:
    """Write the student followed by the adapter to `out_dir` (a sentence-transformers folder)."""
    from sentence_transformers import SentenceTransformer

    from chelation.models import load_model, resolve_model

    student = load_model(resolve_model(student_model), max_seq_length)
    # a new pipeline over the student's modules: the cached student itself stays as it was
    model = SentenceTransformer(modules=[*student, _adapter_module(adapter_state, hidden_dim)],
                                device="cpu")
    out = Path(out_dir)
    model.save(str(out))
    return out


def export_blended_student(student_model: str, adapter_state: dict[str, torch.Tensor],
                           hidden_dim: int, teacher_model: str, projection: np.ndarray,
                           teacher_weight: float, out_dir: str | Path,
                           max_seq_length: int | None = None) -> Path:
    """Write the query/document model of a run whose index held teacher (or blended) documents:
    a Router (query: the student; document: `BlendedDocuments`) followed by the adapter."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Router

    from chelation.models import load_model, resolve_model

    student = load_model(resolve_model(student_model), max_seq_length)
    teacher = load_model(resolve_model(teacher_model))
    if projection.shape != (teacher.get_embedding_dimension(), student.get_embedding_dimension()):
        raise ExportError(f"the projection is {projection.shape}, but the teacher is "
                          f"{teacher.get_embedding_dimension()} wide and the student "
                          f"{student.get_embedding_dimension()}")
    documents = BlendedDocuments(SentenceTransformer(modules=[*student], device="cpu"),
                                 SentenceTransformer(modules=[*teacher], device="cpu"),
                                 projection, teacher_weight)
    router = Router.for_query_document(query_modules=[*student], document_modules=[documents])
    model = SentenceTransformer(modules=[router, _adapter_module(adapter_state, hidden_dim)],
                                device="cpu")
    model.eval()
    out = Path(out_dir)
    model.save(str(out))
    return out


def _artifact(client, run_id: str, path: str, tmp: str, what: str) -> str:
    try:
        return client.download_artifacts(run_id, path, tmp)
    except Exception as err:  # noqa: BLE001 - say what is missing and where
        raise ExportError(f"run {run_id} has no {what} ({path}: {err})") from None


def export_run(run_id: str, out_dir: str | Path, tracking_uri: str, fold: int = 0) -> Path:
    """Export a finished run's model of `fold` (a split or official run has one, a k-fold run one
    per fold, each trained without its fold's test queries). A run that indexed teacher (or
    blended) documents exports as a query/document model with the fold's projection."""
    from chelation import tracking
    from chelation.job_files import ADAPTERS_FOLDER, PROJECTIONS_FOLDER
    from chelation.tags import Tag

    client = tracking.client(tracking_uri)
    run = client.get_run(run_id)
    params = run.data.params
    index = IndexSettings(documents=params.get("index.documents", IndexSettings().documents),
                          teacher_weight=float(params.get("index.teacher_weight", 0) or 0))
    weight = index.document_weight
    if weight > 0 and STUDENT_DOCUMENTS_FALLBACK in run.data.tags.get(Tag.FALLBACK, ""):
        log.warning("run %s could not have its teacher and indexed the student's documents: "
                    "exporting the adapted student", run_id)
        weight = 0.0
    seq = params.get("student.max_seq_length")
    seq = int(seq) if seq not in (None, "None", "") else None
    with tempfile.TemporaryDirectory() as tmp:
        path = _artifact(client, run_id, f"{ADAPTERS_FOLDER}/fold_{fold}.pt", tmp,
                         f"adapter for fold {fold}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if weight == 0:
            return export_adapted_student(params["student.model"], state,
                                          int(params["adapter.hidden_dim"]), out_dir, seq)
        path = _artifact(client, run_id, f"{PROJECTIONS_FOLDER}/fold_{fold}.npy", tmp,
                         f"saved projection for fold {fold} (runs before projections were "
                         "saved cannot be exported with teacher documents: run it again)")
        projection = np.load(path)
    for key in ("student.precision", "teacher.precision"):
        if params.get(key, "float32") != "float32":
            log.warning("%s=%s: the export encodes in float32, so its vectors differ slightly "
                        "from the run's", key, params[key])
    out = export_blended_student(params["student.model"], state,
                                 int(params["adapter.hidden_dim"]), params["teacher.model"],
                                 projection, weight, out_dir, seq)
    (out / "chelation_export.json").write_text(json.dumps(
        {"run_id": run_id, "fold": fold, "index.documents": index.documents,
         "teacher_weight": weight, "teacher.model": params["teacher.model"],
         "student.model": params["student.model"]}, indent=2))
    return out


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
