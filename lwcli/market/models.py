"""Model loaders, one per format. Nothing here imports torch.

- ``skops`` (default, safe): loaded with ``skops.io``; only types from scikit-learn, numpy and
  scipy are trusted; any other type in the file is refused.
- ``onnx`` (safe): run by onnxruntime (the optional extra ``lwcli[onnx]``).
- ``pickle`` / ``joblib``: loading runs arbitrary code, so it happens only with ``trust=True``.
"""

from __future__ import annotations

import io
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import MissingExtraError, ModelCheckError, UntrustedModelError
from ..labels import encode_outputs, label_str
from .manifest import TRUST_FORMATS

SAFE_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


def skops_untrusted(data: bytes) -> list[str]:
    """Types in a skops file that lw will not load (anything outside the safe prefixes)."""
    import skops.io as sio

    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelCheckError(f"the skops model file is unreadable: {exc}",
                              "save the model with skops.io.dump") from exc
    return [t for t in types if not t.startswith(SAFE_TYPE_PREFIXES)]


def _load_skops(data: bytes):
    import skops.io as sio

    bad = skops_untrusted(data)
    if bad:
        raise UntrustedModelError(
            f"the skops model contains types outside scikit-learn/numpy/scipy: {bad[:5]}",
            "use only scikit-learn estimators, or export the model to ONNX",
        )
    types = sio.get_untrusted_types(data=data)
    return sio.loads(data, trusted=types)


@dataclass
class OnnxModel:
    """A minimal predict/predict_proba facade over an onnxruntime session."""

    session: Any
    n_features: int

    def _run(self, X: np.ndarray):
        name = self.session.get_inputs()[0].name
        return self.session.run(None, {name: np.ascontiguousarray(X, dtype=np.float32)})

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self._run(X)[0])
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        outs = self._run(X)
        if len(outs) < 2:
            raise ModelCheckError("the ONNX model has no probability output",
                                  "export it with a probability output (skl2onnx default)")
        proba = outs[1]
        if isinstance(proba, list):  # ZipMap output: a list of {label: p}
            keys = list(proba[0].keys())
            proba = np.array([[row[k] for k in keys] for row in proba])
            self.classes_ = np.array(keys)
        return np.asarray(proba, dtype=np.float64)


def _load_onnx(data: bytes):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingExtraError("this learnware's model is ONNX, and onnxruntime is not installed",
                                "pip install 'lwcli[onnx]'") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelCheckError(f"onnxruntime cannot load the model: {exc}",
                              "export the model again with a supported opset") from exc
    shape = sess.get_inputs()[0].shape
    return OnnxModel(sess, int(shape[-1]) if isinstance(shape[-1], int) else -1)


def load_model(data: bytes, fmt: str, *, trust: bool = False):
    """Load a model from its bytes. Pickle and joblib need ``trust=True``."""
    if fmt in TRUST_FORMATS and not trust:
        raise UntrustedModelError(
            f"model format {fmt!r} runs arbitrary code when loaded, and trust was not given",
            "pass --trust only if you trust the model's author, or repackage it as skops/ONNX",
        )
    if fmt == "skops":
        return _load_skops(data)
    if fmt == "onnx":
        return _load_onnx(data)
    if fmt == "pickle":
        import pickle

        return pickle.loads(data)  # noqa: S301 - only reached with explicit trust
    if fmt == "joblib":
        import joblib

        return joblib.load(io.BytesIO(data))
    raise ModelCheckError(f"unknown model format {fmt!r}", "use skops, onnx, pickle or joblib")


def model_outputs(model, X: np.ndarray, task: str, outputs: Sequence[str]) -> np.ndarray:
    """The model's outputs on ``X`` in the island's encoding (one-hot classes or values)."""
    try:
        pred = model.predict(X)
    except Exception as exc:
        raise ModelCheckError(f"the model failed to predict on {X.shape[0]} x {X.shape[1]} inputs:"
                              f" {type(exc).__name__}: {exc}",
                              "check that the model takes the declared input features") from exc
    pred = np.asarray(pred)
    if pred.shape[0] != X.shape[0]:
        raise ModelCheckError(f"the model returned {pred.shape[0]} predictions for {X.shape[0]} rows",
                              "the model must return one prediction per row")
    if task == "classification":
        labels = [label_str(v) for v in pred.ravel()]
        unknown = sorted(set(labels) - set(outputs))
        if unknown:
            raise ModelCheckError(f"the model predicted labels {unknown[:5]} outside the declared "
                                  f"classes {list(outputs)}", "declare every class in output.classes")
        return encode_outputs(np.array(labels, dtype=object), task, outputs, "model output")
    Y = pred.astype(np.float64).reshape(len(X), -1)
    if Y.shape[1] != len(outputs):
        raise ModelCheckError(f"the model returned {Y.shape[1]} output columns, the manifest declares "
                              f"{len(outputs)}", "fix output.dimension")
    if not np.all(np.isfinite(Y)):
        raise ModelCheckError("the model returned NaN or infinite outputs",
                              "fix the model so that it returns finite values")
    return Y


def canonical_skops(data: bytes) -> bytes:
    """Rewrite a skops file so that the same model always gives the same bytes.

    skops names array members after Python object ids (memory addresses), so dumping one model
    twice gives different files, and a content-derived learnware id would change each time.
    Members and object memo ids are renumbered in order of first appearance in ``schema.json``
    and zipped with fixed timestamps. The result loads exactly like the original.
    """
    import re
    import zipfile

    try:
        src = zipfile.ZipFile(io.BytesIO(data))
        schema = src.read("schema.json").decode()
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise ModelCheckError(f"the skops model file is unreadable: {exc}",
                              "save the model with skops.io.dump") from exc
    names = [n for n in src.namelist() if n != "schema.json"]
    order = []
    for m in re.finditer(r'"([^"/\\]+\.npy)"', schema):
        if m.group(1) in names and m.group(1) not in order:
            order.append(m.group(1))
    order += sorted(n for n in names if n not in order)
    rename = {old: f"a{i:06d}{Path(old).suffix}" for i, old in enumerate(order)}
    schema = re.sub(r'"([^"/\\]+\.npy)"',
                    lambda m: f'"{rename.get(m.group(1), m.group(1))}"', schema)
    memo: dict[str, int] = {}  # object memo ids are addresses too: renumber consistently
    schema = re.sub(r'"__id__": (\d+)',
                    lambda m: f'"__id__": {memo.setdefault(m.group(1), len(memo) + 1)}', schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, payload in [("schema.json", schema.encode())] + \
                [(rename[o], src.read(o)) for o in order]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, payload)
    return out.getvalue()
