"""Use case: put learnwares to work on the user's data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import NotFoundError, UsageError


def load_learnwares(market, ids: Sequence[str], *, trust: bool = False,
                    with_specs: bool = True) -> list:
    """Load learnwares from a market for reuse: models by format (pickle/joblib only with
    ``trust``), declared features and outputs, and (``with_specs``) their RKMEs."""
    from ..engine.reuse import Learnware
    from ..market.models import load_learnware_model
    from ..market.store import Market

    mk = market if isinstance(market, Market) else Market.open(market)
    out = []
    for lw_id in ids:
        man = mk.manifest(lw_id)
        model = load_learnware_model(mk.model_bytes(lw_id), man.model_format, man.features,
                                     trust=trust)
        rkme = mk.spec(lw_id).rkme if with_specs else None
        out.append(Learnware(lw_id, man.name, model, man.task, man.features, man.outputs, rkme,
                             man.class_values))
    return out


@dataclass(frozen=True)
class ReuseResult:
    method: str
    ids: list[str]
    task: str
    n_rows: int
    columns: list[str]
    output: str | None
    saved_model: str | None
    details: dict
    scores: dict | None
    predictions: object = field(repr=False, default=None)     # a pandas DataFrame

    def to_dict(self) -> dict:
        return {"method": self.method, "ids": self.ids, "task": self.task,
                "n_rows": self.n_rows, "columns": self.columns, "output": self.output,
                "saved_model": self.saved_model, "details": self.details, "scores": self.scores}


def _reuse_details(r) -> dict:
    d = {}
    ids = list(r.learnware_ids_)
    if hasattr(r, "weights_"):
        names = (["user_model"] + ids) if r.method == "with-user" else ids
        d["weights"] = dict(zip(names, [float(w) for w in r.weights_]))
    for a in ("cv_losses_", "user_model_name_", "final_model_name_", "fallback_",
              "blend_gain_z_"):
        if hasattr(r, a):
            v = getattr(r, a)
            d[a.rstrip("_")] = None if isinstance(v, float) and not np.isfinite(v) else v
    return d


def reuse(market: str | Path | None = None, ids: Sequence[str] = (), *, data: str | Path,
          method: str | None = None, train: str | Path | None = None,
          target: str | None = None, weights: Sequence[float] | None = None,
          voting: str = "soft", proba: bool = False, out: str | Path | None = None,
          save_model: str | Path | None = None, model: str | Path | None = None,
          trust: bool = False, cv: int = 5, seed: int = 0) -> ReuseResult:
    """Put learnwares to work on ``data``: fit a reuser (or load a saved one with ``model``),
    predict every row in order, and optionally write the predictions and save the reuser.

    ``method``: single (default for one id), average (default for several), with-user,
    job-selector or feature-augment. with-user and feature-augment learn from ``train``
    (labelled rows, label column ``target``); the others need no labels. When ``data`` also
    holds the ``target`` column, the result carries the predictions' scores.
    """
    import pandas as pd

    from ..engine.metrics import classification_scores, regression_scores
    from ..engine.reuse import METHODS, REUSERS, make_reuser
    from ..io import read_table
    from ..labels import label_str, label_values, values_array
    from ..market.store import Market, write_output
    from ..reusefile import dump_reuser, load_reuser

    for o, what in ((out, "output"), (save_model, "--save-model")):
        if o is not None and not Path(o).parent.exists():
            raise NotFoundError(f"{what} folder {Path(o).parent} does not exist",
                                "create it first")
    if model is not None:
        if ids or method or train is not None or save_model is not None or weights is not None:
            raise UsageError("--model applies a saved reuser as it is",
                             "drop the learnware ids, --method, --train, --weights and "
                             "--save-model")
        r = load_reuser(model, trust=trust)
    else:
        ids = list(ids)
        if not ids:
            raise UsageError("no learnware ids given", "pass ids from lw search, or --model PATH")
        method = method or ("single" if len(ids) == 1 else "average")
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}",
                             "see lw reuse --help")
        cls = REUSERS[method]
        if cls.needs_labels and (train is None or target is None):
            raise UsageError(f"the {method} method learns from your labels, and none were given",
                             "pass --train LABELLED.csv --target COL (or use single, average or "
                             "job-selector, which need none)")
        if not cls.needs_labels and train is not None:
            raise UsageError(f"the {method} method uses no labelled data, but --train was given",
                             "drop --train, or use with-user or feature-augment")
        params: dict = {}
        if weights is not None:
            if method not in ("average", "job-selector"):
                raise UsageError(f"--weights is for average and job-selector, not {method}",
                                 "drop --weights")
            params["weights"] = list(weights)
        if method == "average":
            params["voting"] = voting
        if method in ("with-user", "feature-augment", "job-selector"):
            params["random_state"] = seed
        if method in ("with-user", "feature-augment"):
            params["cv"] = cv
        mk = Market.open(market)
        lws = load_learnwares(mk, ids, trust=trust, with_specs=method == "job-selector")
        r = make_reuser(method, lws, **params)
        if cls.needs_labels:
            tr = read_table(train, target=target, features=lws[0].features)
            r.fit(tr.X, tr.y)
        else:
            r.fit()
    feats = list(r.feature_names_in_)
    table = read_table(data, target=target, features=feats, target_optional=True)
    pred = r.predict(table.X)
    frame = pd.DataFrame(index=range(table.n_rows))
    if r.task_ == "classification":
        values = r.classes_
        if table.y is not None:    # labels in the data: predictions in the same type as them
            r.check_labels(table.y, f"target column {target!r}")
            values = values_array(label_values(r.class_keys_, table.y, r.classes_))
            pred = values[[list(r.class_keys_).index(label_str(p)) for p in pred]]
        frame["prediction"] = pred
        if proba:
            P = r.predict_proba(table.X)
            for j, c in enumerate(values):
                frame[f"proba_{c}"] = P[:, j]
    else:
        if proba:
            raise UsageError("--proba is for classification, and these learnwares do regression",
                             "drop --proba")
        P = pred.reshape(len(pred), -1)
        names = ["prediction"] if P.shape[1] == 1 else [f"prediction_{n}" for n in r.output_names_]
        for j, n in enumerate(names):
            frame[n] = P[:, j]
    scores = None
    details = _reuse_details(r)
    if table.y is not None:
        def score(p):
            return classification_scores(table.y, p) if r.task_ == "classification" else \
                regression_scores(table.y, p)

        scores = score(pred)
        if r.method == "with-user":   # the same rows, the user's model alone: the comparison
            details["user_model_scores"] = score(r.user_model_.predict(table.X))
    if out is not None:
        write_output(out, frame.to_csv(index=False).encode())
    if save_model is not None:   # only reached with learnware ids: ``mk`` is open
        files = {i: mk.manifest_and_model_files(i) for i in r.learnware_ids_}
        write_output(save_model, dump_reuser(r, files))
    return ReuseResult(r.method, list(r.learnware_ids_), r.task_, table.n_rows,
                       list(frame.columns), str(out) if out is not None else None,
                       str(save_model) if save_model is not None else None, details,
                       scores, frame)
