"""The child-process side of quality assurance: load a model, run it on probe inputs.

Run as ``python -m lwcli.market.probe JOB_DIR``. The job directory holds ``job.json``,
``model.bin`` and ``inputs.npy``; the worker writes ``outputs.npy`` or ``error.json``.
A model that hangs or crashes takes only this process down; the parent enforces a time limit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def run(job_dir: Path) -> int:
    from ..errors import LwError
    from .models import check_class_order, load_learnware_model, model_outputs

    job = json.loads((job_dir / "job.json").read_text())
    try:
        model = load_learnware_model((job_dir / "model.bin").read_bytes(), job["format"],
                                     job["features"], trust=job["trust"])
        X = np.load(job_dir / "inputs.npy", allow_pickle=False)
        Y = model_outputs(model, X, job["task"], job["outputs"])
        if job["task"] == "classification":
            check_class_order(model, X, Y, job["outputs"])
        np.save(job_dir / "outputs.npy", Y, allow_pickle=False)
        return 0
    except LwError as exc:
        (job_dir / "error.json").write_text(json.dumps(
            {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}))
        return 3
    except Exception as exc:  # the model's own code may raise anything
        (job_dir / "error.json").write_text(json.dumps(
            {"type": "ModelCheckError", "message": f"{type(exc).__name__}: {exc}", "hint": None}))
        return 3


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
