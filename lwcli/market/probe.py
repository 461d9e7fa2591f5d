"""The worker side of a contained model run (:mod:`lwcli.market.contained`).

Run as ``python -m lwcli.market.probe JOB_DIR START``. ``job.json`` lists the items; item
``i`` has ``model-i.bin`` and ``inputs-i.npy``. Before each item the worker writes its index to
``progress``; it writes ``out-i.npy`` or ``err-i.json``. A model that hangs or crashes takes
only this process down; the parent enforces the time limit and reruns the remaining items.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def _outputs(item: dict, model, X: np.ndarray) -> np.ndarray:
    from .models import check_class_order, model_outputs

    mode = item["mode"]
    if mode in ("qa", "outputs"):
        Y = model_outputs(model, X, item["task"], item["outputs"])
        if mode == "qa" and item["task"] == "classification":
            check_class_order(model, X, Y, item["outputs"])
        return Y
    from ..engine.reuse import Learnware

    lw = Learnware(item["id"], item["name"], model, item["task"], tuple(item["features"]),
                   tuple(item["outputs"]), None, tuple(item["class_values"]))
    return lw.predict_values(X) if mode == "values" else lw.predict_proba(X)


def _error(job_dir: Path, i: int, kind: str, message: str, hint) -> None:
    (job_dir / f"err-{i}.json").write_text(json.dumps(
        {"type": kind, "message": message, "hint": hint}))


def run(job_dir: Path, start: int = 0) -> int:
    from ..errors import LwError
    from .models import load_learnware_model

    job = json.loads((job_dir / "job.json").read_text())
    for i in range(start, len(job["items"])):
        item = job["items"][i]
        tmp = job_dir / ".progress"
        tmp.write_text(str(i))
        os.replace(tmp, job_dir / "progress")
        try:
            model = load_learnware_model((job_dir / f"model-{i}.bin").read_bytes(),
                                         item["format"], item["features"], trust=job["trust"])
            X = np.load(job_dir / f"inputs-{i}.npy", allow_pickle=False)
            Y = np.asarray(_outputs(item, model, X))
            np.save(job_dir / f".out-{i}.npy", Y, allow_pickle=False)
            os.replace(job_dir / f".out-{i}.npy", job_dir / f"out-{i}.npy")
        except LwError as exc:
            _error(job_dir, i, type(exc).__name__, exc.message, exc.hint)
        except (Exception, SystemExit) as exc:  # the model's own code may raise anything
            _error(job_dir, i, "ModelCheckError", f"{type(exc).__name__}: {str(exc)[:500]}", None)
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
