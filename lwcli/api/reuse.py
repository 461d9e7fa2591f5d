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
    intake: object = None        # what was taken from ``data`` (:class:`lwcli.intake.Intake`)
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"method": self.method, "ids": self.ids, "task": self.task,
                "n_rows": self.n_rows, "columns": self.columns, "output": self.output,
                "saved_model": self.saved_model, "details": self.details, "scores": self.scores,
                **(self.intake.to_dict() if self.intake is not None else {}),
                "warnings": self.warnings}


def read_search_choice(path: str | Path, top: int | None
                       ) -> tuple[list[str], list[float] | None]:
    """The mixture (ids and weights) of a saved ``lw search --json`` result, or with ``top``
    the ids of its ``top`` best single matches (weights ``None``).

    Raises :class:`NotFoundError` when ``path`` is no file, :class:`InvalidInputError` when
    it is not such a result (or is an anchor ranking, which has no mixture, and no ``top``)."""
    import json

    from ..errors import InvalidInputError

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"search result {path} does not exist", "check the path")
    try:
        doc = json.loads(path.read_text())
        if top is not None:
            return [str(r["id"]) for r in doc["single"][:top]], None
        mix = doc["mixture"]
        if mix is None and isinstance(doc.get("single"), list):
            raise InvalidInputError(f"{path} is a ranking from anchor scores, which has no "
                                    "mixture", "pass --top N to reuse its N best learnwares")
        ids, weights = [str(i) for i in mix["ids"]], [float(w) for w in mix["weights"]]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidInputError(f"{path} is not the JSON of lw search with a mixture ({exc!r})",
                                "save it with lw search --data ... --json > FILE") from exc
    return ids, weights


def _choose_learnwares(ids, weights, from_search, top, method):
    """Ids and weights, given directly or taken from a saved search: a one-member mixture
    is that learnware, applied directly (no weights), unless another method is asked for."""
    ids = list(ids)
    if from_search is None:
        if top is not None:
            raise UsageError("--top goes with --from-search", "drop --top, or pass --from-search")
        return ids, weights
    if ids or weights is not None:
        raise UsageError("--from-search gives the ids and weights", "drop the ids and --weights")
    ids, weights = read_search_choice(from_search, top)
    if weights is not None and len(ids) == 1 and method in (None, "single"):
        weights = None
    return ids, weights


def _fitted_reuser(market, ids, *, method, train, target, weights, voting, trust, cv, seed,
                   missing):
    """Load the learnwares and fit the reuser ``method`` names (by default single for one
    id, average for several); the open market comes back too (to save the reuser)."""
    from ..engine.reuse import METHODS, REUSERS, check_reuser_options, make_reuser
    from ..market.store import Market

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
    options = dict(weights=weights, voting=voting, random_state=seed, cv=cv)
    check_reuser_options(method, **options)
    mk = Market.open(market)
    lws = load_learnwares(mk, ids, trust=trust)
    r = make_reuser(method, lws, **options)
    notes = []
    if cls.needs_labels:
        tr = _reuse_table(lws, train, target, missing, target_optional=False)
        notes = [f"--train: {n}" for n in tr.intake.notes()]
        if lws[0].task == "classification" and len({str(v) for v in tr.y}) == 1:
            notes.append(f"--train: every label is {tr.y[0]!r}: your own model predicts it "
                         "for every row, and cross-validation on these labels cannot tell it "
                         "from a model that knows the other classes; label rows of the "
                         "other classes, or reuse the learnwares without --train")
        r.fit(tr.X, tr.y)
    else:
        r.fit()
    return r, mk, notes


def _reuse_table(lws, data, target, missing: str, target_optional: bool = True):
    """``data`` taken by name into the reuser's input columns (the union of the learnwares'
    features); missing inputs, and with ``missing="impute"`` whole input columns the file
    lacks (a learnware of another island: seed sec. 5), estimated from the learnwares'
    specifications (:func:`lwcli.engine.conditional.conditional_mean`), or refused with
    ``missing="error"``. One row per input row: rows are never dropped, but for a missing
    label in the labelled ``--train`` file."""
    from dataclasses import replace

    from ..engine.conditional import Reference, conditional_mean, ordinary_zeros
    from ..engine.reuse.base import union_features
    from ..errors import DataError
    from ..intake import open_source
    from .spec import label_hints

    src = open_source(data, target, target_optional=target_optional)
    src.policies = ("impute",)            # reuse never drops a row
    refs = [Reference.of_rkme(lw.rkme, lw.features) for lw in lws if lw.rkme is not None]
    src.keep_zeros(ordinary_zeros(refs, src.unmeasured()))
    names = union_features(lws)
    table = src.take(names, missing=missing, what=f"learnware {lws[0].id}" if len(lws) == 1
                     else f"the {len(lws)} learnwares",
                     unlabelled="keep" if target_optional else "drop",
                     absent="estimate" if missing == "impute" else "error")
    blind = [lw.id for lw in lws if set(lw.features) <= set(table.intake.absent)]
    if blind:
        raise DataError(f"{table.path} holds none of the input columns of learnware "
                        f"{blind[0]} ({list(lws[[lw.id for lw in lws].index(blind[0])].features)[:6]}):"
                        " its predictions would be one constant estimated from its "
                        "specification", "add its input columns, or leave it out")
    outputs = [o for lw in lws for o in lw.outputs]
    hints = label_hints(table.intake.ignored_columns(), outputs, lws[0].task, src.target,
                        "to score the predictions")
    intake = replace(table.intake, hints=hints)
    if table.n_missing:
        X, cells, rows = conditional_mean(table.X, names, refs)
        if np.isnan(X).any():
            raise DataError(f"{table.path} has {table.n_missing} missing input values and "
                            "this saved reuser carries no specification to estimate them from",
                            "fill them in, or reuse from the market with the learnware ids")
        n = len(refs)
        intake = replace(intake, rows_imputed=rows, cells_imputed=cells, imputed_from=(
            f"the specification of learnware {refs and lws[0].id}" if n == 1
            else f"the specifications of {n} learnwares"))
        table = replace(table, X=X)
    return replace(table, intake=intake)


def _prediction_frame(r, table, target, proba: bool):
    """The predictions of ``r`` on ``table``'s rows as a DataFrame (classes in the labels'
    own type when ``table`` has them; ``proba_<class>`` columns with ``proba``), and the raw
    predictions (to score)."""
    import pandas as pd

    from ..labels import label_str, label_values, values_array

    pred = r.predict(table.X)
    frame = pd.DataFrame(index=range(table.n_rows))
    if r.task_ == "classification":
        values = r.classes_
        if table.y is not None:    # labels in the data: predictions in the same type as them
            y = table.y[table.labelled]
            r.check_labels(y, f"target column {target!r}")
            values = values_array(label_values(r.class_keys_, y, r.classes_))
            pred = values[[list(r.class_keys_).index(label_str(p)) for p in pred]]
        frame["prediction"] = pred
        if proba:
            P = r.predict_proba(table.X)
            for j, c in enumerate(values):
                frame[f"proba_{c}"] = P[:, j]
        return frame, pred
    if proba:
        raise UsageError("--proba is for classification, and these learnwares do regression",
                         "drop --proba")
    P = pred.reshape(len(pred), -1)
    names = ["prediction"] if P.shape[1] == 1 else [f"prediction_{n}" for n in r.output_names_]
    for j, n in enumerate(names):
        frame[n] = P[:, j]
    return frame, pred


def _scores(r, table, pred) -> tuple[dict, dict | None]:
    """The predictions' scores against ``table``'s labels, and the user's own model's on the
    same rows for methods that blend one in (else ``None``)."""
    from ..engine.metrics import classification_scores, regression_scores

    rows = table.labelled           # rows without a label are predicted, not scored
    y = table.y[rows]

    def score(p):
        p = np.asarray(p)[rows]
        return classification_scores(y, p) if r.task_ == "classification" else \
            regression_scores(y, p)

    own = r.comparison_model()
    return score(pred), (score(own.predict(table.X)) if own is not None else None)


def reuse(market: str | Path | None = None, ids: Sequence[str] = (), *, data: str | Path,
          method: str | None = None, train: str | Path | None = None,
          target: str | None = None, weights: Sequence[float] | None = None,
          voting: str = "soft", proba: bool = False, out: str | Path | None = None,
          save_model: str | Path | None = None, model: str | Path | None = None,
          trust: bool = False, cv: int = 5, seed: int = 0,
          from_search: str | Path | None = None, top: int | None = None,
          missing: str = "impute") -> ReuseResult:
    """Put learnwares to work on ``data``: fit a reuser (or load a saved one with ``model``),
    predict every row in order, and optionally write the predictions and save the reuser.

    ``method``: single (default for one id), average (default for several), with-user,
    job-selector or feature-augment. with-user and feature-augment learn from ``train``
    (labelled rows, label column ``target``); the others need no labels. When ``data`` also
    holds the ``target`` column, the result carries the predictions' scores. With
    ``from_search`` (a saved ``lw search --json``) the ids and weights are its mixture, or
    with ``top`` its ``top`` best single matches (see :func:`read_search_choice`).
    Reusers: seed sec. 3.2 (direct use, ensembles, feature augmentation) and eq. 8 (the job
    selector).

    ``data`` (and ``train``) are taken by name: the learnwares' input columns; the rest are
    left and listed in ``result.intake``. Every input row gets a prediction: a missing input
    is estimated from the learnwares' specifications (``missing="impute"``, the kernel
    conditional mean of :mod:`lwcli.engine.conditional`) or refused (``"error"``).

    Raises :class:`UsageError` for options that do not go together, :class:`NotFoundError`
    for missing output folders, ids or files, and the errors of the data and model checks.
    """
    from ..market.store import write_output
    from ..reusefile import dump_reuser, load_reuser

    _check_missing(missing)
    ids, weights = _choose_learnwares(ids, weights, from_search, top, method)
    for o, what in ((out, "output"), (save_model, "--save-model")):
        if o is not None and not Path(o).parent.exists():
            raise NotFoundError(f"{what} folder {Path(o).parent} does not exist",
                                "create it first")
    if model is not None:
        if ids or method or train is not None or save_model is not None or weights is not None:
            raise UsageError("--model applies a saved reuser as it is",
                             "drop the learnware ids, --method, --train, --weights and "
                             "--save-model")
        r, mk, notes = load_reuser(model, trust=trust), None, []
    else:
        r, mk, notes = _fitted_reuser(market, ids, method=method, train=train, target=target,
                                      weights=weights, voting=voting, trust=trust, cv=cv,
                                      seed=seed, missing=missing)
    table = _reuse_table(r.learnwares_, data, target, missing)
    frame, pred = _prediction_frame(r, table, target, proba)
    scores, details = None, r.details()
    if table.y is not None:
        scores, own = _scores(r, table, pred)
        if own is not None:   # the same rows, the user's model alone: the comparison
            details["user_model_scores"] = own
    if out is not None:
        write_output(out, frame.to_csv(index=False).encode())
    if save_model is not None:   # only reached with learnware ids: ``mk`` is open
        files = {i: mk.learnware_files(i) for i in r.learnware_ids_}
        write_output(save_model, dump_reuser(r, files))
    return ReuseResult(r.method, list(r.learnware_ids_), r.task_, table.n_rows,
                       list(frame.columns), str(out) if out is not None else None,
                       str(save_model) if save_model is not None else None, details,
                       scores, frame, table.intake, [*table.intake.notes(), *notes])


def _check_missing(missing: str) -> None:
    """Reuse imputes or refuses; it never drops a row (one prediction per input row)."""
    from ..intake import check_policy

    if missing == "drop":
        raise UsageError("--missing drop does not go with reuse: it predicts every input row",
                         "pass --missing impute (the default) or --missing error")
    check_policy(missing, ("impute", "error"))
