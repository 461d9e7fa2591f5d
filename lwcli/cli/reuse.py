from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import options
from ._errors import handle_errors
from ._output import info, print_csv, print_json, warn


def _weights(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    from ..errors import UsageError

    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights {text!r} is not a comma-separated list of numbers",
                         "e.g. --weights 0.7,0.3 (one per id, in order)") from None


@handle_errors
def reuse(
    ids: Optional[List[str]] = typer.Argument(None, metavar="[ID]...",
                                              help="Learnware ids, e.g. from lw search."),
    data: Path = typer.Option(..., "--data", "-d", help="Rows to predict (.csv, .csv.gz, .parquet, .npy)."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Predictions CSV, in --data's row order ('-': stdout)."),
    method: Optional[str] = typer.Option(
        None, "--method",
        help="single | average | with-user | job-selector | feature-augment "
             "(default: single for one id, average for several)."),
    train: Optional[Path] = typer.Option(None, "--train",
                                         help="Your labelled rows (with-user, feature-augment)."),
    target: Optional[str] = typer.Option(None, "--target", "-t",
                                         help="Label column of --train (and of --data, if "
                                              "present there: then the predictions are scored)."),
    weights: Optional[str] = typer.Option(None, "--weights",
                                          help="average / job-selector: one weight per id, "
                                               "comma-separated (e.g. the mixture weights)."),
    from_search: Optional[Path] = typer.Option(None, "--from-search",
                                               help="Take ids and weights from the mixture of "
                                                    "a saved lw search --json result."),
    top: Optional[int] = typer.Option(None, "--top", min=1,
                                      help="With --from-search: the N best single matches "
                                           "instead of the mixture."),
    voting: str = typer.Option("soft", "--voting", help="average, classification: soft | hard."),
    proba: bool = typer.Option(False, "--proba", help="Add class probabilities as columns."),
    save_model: Optional[Path] = typer.Option(None, "--save-model",
                                              help="Save the fitted reuser (self-contained)."),
    model: Optional[Path] = typer.Option(None, "--model",
                                         help="Apply a reuser saved with --save-model."),
    trust: bool = typer.Option(False, "--trust", help="Allow loading pickle/joblib models."),
    cv: int = typer.Option(5, "--cv", min=2, help="Cross-validation folds (with-user, "
                                                   "feature-augment)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the methods that learn "
                                               "(with-user, job-selector, feature-augment)."),
    missing: str = options.Missing(
        "impute", "estimate missing inputs from the learnwares' specifications (the default: "
                  "every row gets a prediction), or refuse the file (error)."),
    market: Optional[str] = options.Market,
    as_json: bool = options.Json,
) -> None:
    """Put learnwares to work on your data and write predictions.

    Columns are taken by name (the learnwares' inputs); the others are ignored and listed.

    lw reuse ID --data new.csv -o pred.csv
    lw reuse ID1 ID2 --method with-user --train mine.csv --target y --data new.csv -o pred.csv
    lw reuse --from-search search.json --data new.csv -o pred.csv --save-model reuser.lwr
    lw reuse --from-search search.json --top 2 --method with-user --train mine.csv -t y ...
    lw reuse --model reuser.lwr --data more.csv -o pred.csv
    """
    from .. import api

    w = _weights(weights)
    to_stdout = _to_stdout(output, as_json)
    res = api.reuse(market, list(ids or []), data=data, method=method, train=train,
                    target=target, weights=w, voting=voting, proba=proba,
                    out=None if to_stdout else output, save_model=save_model, model=model,
                    trust=trust, cv=cv, seed=seed, from_search=from_search, top=top,
                    missing=missing)
    for w in res.warnings:
        warn(w)
    if to_stdout:
        print_csv(res.predictions)
    if as_json:
        print_json(res.to_dict(), "reuse")
        return
    info(_summary(res, to_stdout))


def _to_stdout(output: Path, as_json: bool) -> bool:
    """Whether the predictions go to stdout (``-o -``), which leaves no room for --json."""
    from ..errors import UsageError

    if str(output) == "-" and as_json:
        raise UsageError("-o - writes the CSV to stdout, --json a summary",
                         "write the predictions to a file to use --json")
    return str(output) == "-"


def _summary(res, to_stdout: bool) -> str:
    """One line on what the reuser did: weights, cross-validated losses, fallback, scores."""
    msg = f"{res.method}: {res.n_rows} predictions from {len(res.ids)} learnware(s)"
    if not to_stdout:
        msg += f" -> {res.output}"
    weights_ = res.details.get("weights")
    if weights_:
        msg += "; weights " + ", ".join(f"{k} {v:.2f}" for k, v in weights_.items())
    cvl = res.details.get("cv_losses", {})
    if "blend" in cvl:
        if res.task == "regression":
            msg += (f"; cross-validated RMSE: your model alone {cvl['user_model'] ** 0.5:.4g}, "
                    f"blend {cvl['blend'] ** 0.5:.4g}")
        else:
            msg += (f"; cross-validated Brier score: your model alone {cvl['user_model']:.4g}, "
                    f"blend {cvl['blend']:.4g}")
    if res.details.get("fallback"):
        if cvl.get("blend", float("inf")) < cvl.get("user_model", float("-inf")):
            msg += ("; the blend's cross-validated gain rests on the few rows where your model "
                    "errs most: user model alone")
        else:
            msg += "; the learnwares did not help in cross-validation: user model alone"
    if res.scores:
        msg += "; " + ", ".join(f"{k} {v:.4g}" for k, v in res.scores.items())
        own = res.details.get("user_model_scores")
        if own:
            msg += " (your model alone: " + ", ".join(f"{k} {v:.4g}" for k, v in own.items()) + ")"
    if res.saved_model:
        msg += f"; reuser saved to {res.saved_model}"
    return msg
