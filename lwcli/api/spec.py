"""Use cases: fit a specification of a data file (or many), write one to disk."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, LwError, NotFoundError, UsageError
from ..specfile import Spec


def _resolve_island_for_features(market, features: Sequence[str], island: str | None,
                                 task: str | None, unusable: dict | None = None):
    """The island a table with the usable columns ``features`` is matched on, and notes
    (:func:`lwcli.market.world.island_for_columns`)."""
    from ..market.world import island_for_columns

    return island_for_columns(market.islands(), features, island=island, task=task,
                              unusable=unusable)


def label_hints(ignored: Sequence[str], outputs: Sequence[str], task: str | None,
                target: str | None, why: str) -> tuple[str, ...]:
    """A note when an ignored column carries the name of a regression output: the user's
    label column, probably, left out for want of ``--target``."""
    if target is not None or task != "regression":
        return ()
    return tuple(f"column {c!r} is named like the output: if it holds your labels, pass "
                 f"--target {c} {why}" for c in ignored if c in outputs)


def build_spec(
    data: str | Path,
    *,
    target: str | None = None,
    model: str | Path | None = None,
    model_format: str | None = None,
    trust: bool = False,
    meta: str | Path | None = None,
    k: int = 100,
    seed: int = 0,
    device: str | None = None,
    market: str | Path | None = None,
    island: str | None = None,
    task: str | None = None,
    clamp_k: bool = False,
    missing: str = "drop",
) -> Spec:
    """Fit an RKME specification of ``data``.

    - with ``model`` (a developer): embeds ``(x, model(x))``; task and outputs come from
      ``meta`` (learnware.toml), which is then required;
    - with ``target`` only (a user with labels): embeds ``(x, y)``, a label-aware requirement;
    - with neither (a user without labels): embeds ``x``.
    With ``market``, the island's kernel metric is used (and must be, for the spec to be
    comparable); a developer whose learnware founds a new island gets the market's scale for
    every feature the market already measures (:mod:`lwcli.market.world`: one scale per
    feature), the rest fitted from the data; without a market a metric is fitted from the
    data. Columns are taken by name (the
    manifest's features, the island's, or every numeric column that is no row number); the
    rest are left and listed in ``spec.intake`` (:class:`lwcli.intake.Intake`), with what
    ``missing`` (``drop``, ``impute`` from the file's complete rows, or ``error``) did to the
    rows. ``clamp_k`` lowers ``k`` to the
    row count instead of failing (search does this for small user samples). ``k`` reduced
    points summarise the rows (the RKME of seed sec. 3.3, eq. 1). A user's task, when no
    island or manifest declares it, is inferred from the labels (``engine.task.infer_task``).

    Raises :class:`UsageError` for options that do not go together, :class:`NotFoundError`
    for a missing model file or no island taking the columns, :class:`DataError` for ``k``
    above the row count and labels that do not fit the task.
    """
    man = _developer_manifest(model, target, meta)
    table, isl = _spec_table(data, target, man, market, island, task, missing, seed)
    return _fit_spec(table, isl, man, target=target, model=model, model_format=model_format,
                     trust=trust, k=k, seed=seed, device=device, clamp_k=clamp_k, market=market)


def requirement_for_island(src, isl, target: str | None, *, k: int = 100, seed: int = 0,
                           device: str | None = None, missing: str = "drop",
                           notes: Sequence[str] = (), bridge: Sequence = ()) -> Spec:
    """A user's requirement for island ``isl`` from the table ``src``
    (:class:`lwcli.intake.Source`, read once for every island a search reaches): the
    island's features taken by name, ``missing`` applied, fitted with the island's metric
    (``k`` lowered to the rows left). ``notes`` join the intake's hints.

    ``bridge``: the island is reached through a link (:func:`lwcli.market.world.bridged`);
    the features the table lacks (and its gaps) are estimated from these references, the
    island's specifications (:func:`lwcli.engine.conditional.conditional_mean`)."""
    if bridge:
        table = _bridged_table(src, isl, missing, bridge)
    else:
        table = _take(src, list(isl.key["features"]), f"island {isl.id}", isl, target,
                      missing, seed, notes)
    return _fit_spec(table, isl, None, target=target, k=k, seed=seed, device=device,
                     clamp_k=True)


def _bridged_table(src, isl, missing: str, refs):
    """The island's features, those the table lacks estimated from ``refs``."""
    from ..engine.conditional import conditional_mean

    table = src.take(list(isl.key["features"]), missing=missing, min_rows=1,
                     what=f"island {isl.id}", absent="estimate")
    X, cells, rows = conditional_mean(table.X, table.features, refs)
    intake = replace(table.intake, rows_imputed=rows, cells_imputed=cells,
                     imputed_from=f"the specifications of {len(refs)} learnwares on island "
                                  f"{isl.id}")
    return replace(table, X=X, intake=intake)


def _fit_spec(table, isl, man, *, target, k, seed, device, clamp_k, model=None,
              model_format=None, trust=False, market=None) -> Spec:
    """The RKME of ``table`` (with the model's outputs, or the labels, or neither), under
    the island's metric or a fitted one (the market's scales where known)."""
    from ..device import resolve_device
    from ..engine.kernel import fit_metric
    from ..engine.rkme import fit_rkme

    k = _reduced_points(k, table, clamp_k)
    dev = resolve_device(device)
    task = outputs = source = Y = None
    if model is not None:
        task, outputs, Y = _model_outputs(model, model_format, man, table, trust)
        source = "model"
    elif target is not None:
        task, outputs, Y = _target_outputs(table, target, isl, man)
        source = "target"
    if isl is not None:
        metric = isl.metric if Y is not None else isl.metric.input_metric()
    else:       # no market, or this spec founds an island: the market's scales where known
        fixed, fixed_out = _founding_scales(market, table.features, outputs, task)
        metric = fit_metric(table.X, Y, task=task, seed=seed, fixed=fixed,
                            fixed_outputs=fixed_out)
    Z = table.X if Y is None else np.hstack([table.X, Y])
    rkme = fit_rkme(Z, metric, k=k, seed=seed, device=dev)
    return Spec(rkme=rkme, features=tuple(table.features), task=task,
                outputs=tuple(outputs) if outputs else (), output_source=source,
                island=isl.id if isl is not None else None, intake=table.intake)


def _spec_table(data, target, man, market, island, task, missing: str, seed: int):
    """The table a spec is fitted on (its columns by name: the manifest's, the island's, or
    every usable one) and the island (``None``: no market, or the manifest's island does not
    exist yet)."""
    from ..intake import check_policy, open_source

    check_policy(missing)
    src = open_source(data, target)
    isl, notes = (_spec_island(market, src, man, island, task) if market is not None
                  else (None, []))
    if man is not None:
        features, what = list(man.features), f"the model of {man.name}"
    elif isl is not None:
        features, what = list(isl.key["features"]), f"island {isl.id}"
    else:
        features, what = None, ""
    return _take(src, features, what, isl, target, missing, seed, notes), isl


def _take(src, features, what: str, isl, target, missing: str, seed: int, notes):
    """``src`` cut to ``features`` under ``missing`` (imputed from its own complete rows with
    ``impute``), with the notes and label hints in its intake."""
    table = src.take(features, missing=missing, min_rows=1, what=what)
    hints = label_hints(table.intake.ignored_columns(),
                        isl.key["outputs"] if isl is not None else (),
                        isl.key["task"] if isl is not None else None, target,
                        "for a label-aware (x, y) match")
    table = replace(table, intake=replace(table.intake, hints=(*notes, *hints)))
    return impute_from_own_rows(table, seed) if missing == "impute" else table


def impute_from_own_rows(table, seed: int = 0):
    """``table`` with its missing inputs estimated from its own complete rows (at most 2,000,
    seeded): the kernel conditional mean (:mod:`lwcli.engine.conditional`) under a metric
    fitted to them. :class:`DataError` with fewer than 3 complete rows."""
    from ..engine.conditional import Reference, conditional_mean
    from ..engine.kernel import fit_metric

    if not table.n_missing:
        return table
    complete = ~np.isnan(table.X).any(axis=1)
    if complete.sum() < 3:
        raise DataError(f"{table.path}: {int(complete.sum())} of {table.n_rows} rows are "
                        "complete, too few to impute the others from",
                        "pass --missing drop, or fill the gaps")
    ref = table.X[complete]
    if len(ref) > 2000:
        ref = ref[np.random.default_rng(seed).choice(len(ref), 2000, replace=False)]
    m = fit_metric(ref, seed=seed)
    X, cells, rows = conditional_mean(table.X, table.features, [Reference(
        tuple(table.features), ref, np.full(len(ref), 1.0 / len(ref)), np.asarray(m.scales),
        m.gamma)])
    intake = replace(table.intake, rows_imputed=rows, cells_imputed=cells,
                     imputed_from=f"the file's {int(complete.sum())} complete rows")
    return replace(table, X=X, intake=intake)


def _founding_scales(market, features, outputs, task):
    """The market's scales for the features (and regression outputs) it already measures
    (:func:`lwcli.market.world.founding_scales`); none without a market."""
    if market is None:
        return {}, {}
    from ..market.store import Market
    from ..market.world import founding_scales

    return founding_scales(Market.open(market).islands(), features, outputs or (), task)


def _reduced_points(k: int, table, clamp_k: bool) -> int:
    """``k``, lowered to the row count with ``clamp_k``; :class:`DataError` above it."""
    if clamp_k:
        k = min(k, table.n_rows)
    if k > table.n_rows:
        raise DataError(f"--k {k} reduced points asked for, but {table.path} has {table.n_rows} rows",
                        f"use --k {table.n_rows} or fewer, or pass more rows")
    return k


def _developer_manifest(model, target, meta):
    """The manifest ``meta`` (``None`` without one), which ``model`` needs; a spec embeds
    a model's outputs or the user's labels, not both."""
    from ..market.manifest import read_manifest

    if model is not None and target is not None:
        raise UsageError("--model and --target both given",
                         "a developer passes --model (outputs come from it); a user passes --target")
    man = read_manifest(meta) if meta is not None else None
    if model is not None and man is None:
        raise UsageError("--model needs --meta learnware.toml",
                         "pass the manifest so lw knows the task, features and outputs")
    return man


def _spec_island(market, src, man, island: str | None, task: str | None):
    """The island a spec is fitted for (``None``: the manifest's island does not exist yet,
    this spec will found it) and notes about the choice. The market also says which of the
    table's all-zero columns are data (:func:`lwcli.market.index.keep_ordinary_zeros`)."""
    from ..market.index import keep_ordinary_zeros
    from ..market.store import Market

    mk = Market.open(market)
    keep_ordinary_zeros(mk, src)
    if island is not None:
        isl = mk.island(island)
        if man is not None and man.island_id() != isl.id:
            raise UsageError(f"--meta places the model on island {man.island_id()}, not "
                             f"{island}", "drop --island or fix the manifest")
        return isl, []
    if man is not None:
        return mk.islands().get(man.island_id()), []
    return _resolve_island_for_features(mk, src.available(), None, task, src.unusable())


def _model_outputs(model, model_format, man, table, trust: bool):
    """A developer's spec: task and outputs from the manifest, the model's outputs on the
    table's rows (values, or class probabilities in the manifest's class order)."""
    from ..market.manifest import MODEL_EXTENSIONS
    from ..market.models import load_learnware_model, model_outputs

    mp = Path(model)
    if not mp.is_file():
        raise NotFoundError(f"model file {mp} does not exist", "check the path")
    fmt = model_format or man.model_format
    if fmt not in MODEL_EXTENSIONS:
        raise UsageError(f"unknown model format {fmt!r}", "use skops, onnx, pickle or joblib")
    mdl = load_learnware_model(mp.read_bytes(), fmt, man.features, trust=trust)
    outputs = tuple(man.outputs)
    return man.task, outputs, model_outputs(mdl, table.X, man.task, outputs)


def _target_outputs(table, target: str, isl, man):
    """A user's label-aware spec: task and outputs from the island, else the manifest, else
    inferred from the labels (:func:`lwcli.engine.task.infer_task`); the labels encoded."""
    from ..engine.task import infer_task
    from ..labels import encode_outputs, label_str

    if isl is not None:
        task, outputs = isl.key["task"], tuple(isl.key["outputs"])
    elif man is not None:
        task, outputs = man.task, tuple(man.outputs)
    else:
        task = infer_task(table.y)
        outputs = (tuple(sorted({label_str(v) for v in table.y})) if task == "classification"
                   else (target,))
    return task, outputs, encode_outputs(table.y, task, outputs, f"target column {target!r}")


@dataclass(frozen=True)
class BatchSpecResult:
    out_dir: str
    written: list[dict]
    skipped: list[dict]
    failed: list[dict]          # {"data", "error", "exit_code"}

    def to_dict(self) -> dict:
        return {"out_dir": self.out_dir, "written": self.written, "skipped": self.skipped,
                "failed": self.failed}


def build_specs(data: Sequence[str | Path], out_dir: str | Path, *, force: bool = False,
                progress=None, jobs: int | None = None, scheduler=None,
                **options) -> BatchSpecResult:
    """:func:`build_spec` for many data files (folders give their ``.csv``, ``.parquet`` and
    ``.npy`` files), writing ``<out_dir>/<stem>.rkme.json`` each; ``options`` are
    :func:`build_spec`'s keywords, the same for every file. A spec that is up to date (same
    data, same options, file untouched: see :mod:`lwcli.specbatch`) is skipped unless
    ``force``. A file that fails is reported in ``failed`` and the others go on.

    The fits run through :func:`lwcli.executor.open_executor` (``jobs`` local processes, or
    the Dask cluster at ``scheduler``; default ``LW_JOBS``/``LW_SCHEDULER``, else here); the
    specs are the same bytes whichever ran them, and each is written here as it arrives.
    ``progress(done, total, path, status)`` is called after each file."""
    from ..executor import open_executor
    from ..specbatch import SpecFolder, expand_inputs, output_names

    opts = _batch_options(options)
    ex = open_executor(jobs, scheduler, deferred=True)     # bad flags first: exit 2
    folder = SpecFolder(out_dir)
    inputs = expand_inputs(data)
    names = output_names(inputs)
    digest = _options_digest(opts)
    metric_ok = _metric_check(opts["market"])
    written, skipped, failed = [], [], []
    tick = _ticker(progress, len(inputs))

    todo = []
    for path, name in zip(inputs, names):
        if not force and folder.is_current(name, path, digest, metric_ok):
            skipped.append({"data": str(path), "output": str(folder.root / name)})
            tick(path, "skipped")
        else:
            todo.append((path, name))

    def finished(i: int, sp) -> None:
        path, name = todo[i]
        if not isinstance(sp, LwError):
            try:
                out = folder.record(name, path, digest, sp)
            except LwError as exc:           # the folder's lock, a full disk: this file fails
                sp = exc
        if isinstance(sp, LwError):
            failed.append({"data": str(path), "error": str(sp), "exit_code": sp.exit_code})
            tick(path, "failed")
            return
        written.append({"data": str(path), "output": str(out), "kind": sp.kind,
                        "k": sp.rkme.k, "n_rows": sp.rkme.n_rows,
                        "approx_error": sp.rkme.approx_error, "island": sp.island,
                        **_intake_dict(sp.intake),
                        "warnings": sp.intake.notes() if sp.intake else []})
        tick(path, "written")

    with ex:
        if todo:             # absolute paths: a worker elsewhere has another working folder
            ex.run(_spec_piece, [(Path(path).resolve(), _absolute(opts)) for path, _ in todo],
                   finished)
    order = {str(p): n for n, p in enumerate(inputs)}
    for rows in (written, failed):
        rows.sort(key=lambda r: order[r["data"]])
    return BatchSpecResult(str(folder.root), written, skipped, failed)


def _ticker(progress, total: int):
    """``tick(path, status)``: calls ``progress(done, total, path, status)`` (if any)."""
    done = 0

    def tick(path: Path, status: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, path, status)

    return tick


def _batch_options(options: dict) -> dict:
    """:func:`build_spec`'s keywords with its defaults filled in; an unknown one is a
    :class:`UsageError`."""
    defaults = {n: p.default for n, p in inspect.signature(build_spec).parameters.items()
                if n != "data"}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UsageError(f"unknown spec options {unknown}", f"use some of {sorted(defaults)}")
    return {**defaults, **options}


def _metric_check(market):
    """``metric_ok(island, metric_digest)``: whether a spec recorded with that island and
    metric is still current for ``market`` (its island has that metric; no market: none)."""
    islands = None
    if market is not None:
        from ..market.store import Market

        islands = Market.open(market).islands()

    def metric_ok(island_id, metric_digest) -> bool:
        if islands is None or island_id is None:
            return islands is None and island_id is None
        isl = islands.get(island_id)
        return isl is not None and isl.metric.digest() == metric_digest

    return metric_ok


def _absolute(opts: dict) -> dict:
    """``opts`` with its paths (model, manifest, a local market) made absolute."""
    from ..market.remote import is_remote

    out = dict(opts)
    for key in ("model", "meta", "market"):
        v = out.get(key)
        if v is not None and not (key == "market" and is_remote(v)):
            out[key] = str(Path(v).resolve())
    return out


def _spec_piece(job: tuple) -> Spec:
    """One file of a batch, in whatever process the executor chose: its spec."""
    path, opts = job
    return build_spec(path, **opts)


@dataclass(frozen=True)
class SpecWritten:
    """A specification written to ``output``, and its summary: kind (``"joint"`` or
    ``"input"``), ``k`` reduced points from ``n_rows`` rows, approximation error (the RKHS
    distance between the data's and the reduced set's kernel means), metric digest, island."""

    output: str
    kind: str
    k: int
    n_rows: int
    approx_error: float
    metric_digest: str
    island: str | None
    intake: object = None         # :class:`lwcli.intake.Intake` of the data (None: unknown)

    def __fspath__(self) -> str:
        return self.output

    def to_dict(self) -> dict:
        return {"output": self.output, "kind": self.kind, "k": self.k, "n_rows": self.n_rows,
                "approx_error": self.approx_error, "metric_digest": self.metric_digest,
                "island": self.island, **_intake_dict(self.intake)}


def _intake_dict(intake) -> dict:
    return intake.to_dict() if intake is not None else {}


def _options_digest(opts: dict) -> str:
    """What decides a batch's specs, as a digest: the options but the paths, the files'
    contents (model, manifest), the spec format, and the market's absolute path."""
    from ..market.store import sha256_file
    from ..specbatch import params_digest
    from ..specfile import FORMAT, VERSION

    market = opts["market"]
    return params_digest({
        **{n: v for n, v in opts.items() if n not in ("model", "meta", "market", "device",
                                                      "trust")},
        "format": [FORMAT, VERSION],
        "model_sha256": sha256_file(Path(opts["model"])) if opts["model"] else None,
        "meta_sha256": sha256_file(Path(opts["meta"])) if opts["meta"] else None,
        "market": _market_key(market)})


def _market_key(market) -> str | None:
    """The market as a batch's state records it: an absolute path, or the URL."""
    from ..market.remote import is_remote

    if market is None:
        return None
    return str(market).rstrip("/") if is_remote(market) else str(Path(market).resolve())


def write_spec(spec: Spec, out: str | Path) -> SpecWritten:
    """Write ``spec`` to ``out`` (atomically; ``-`` is stdout) and summarise it. A path-like
    result: ``Path(write_spec(...))`` is the file written."""
    from ..market.store import write_output

    path = write_output(out, spec.to_bytes())
    r = spec.rkme
    return SpecWritten(str(path), spec.kind, r.k, r.n_rows, r.approx_error, r.metric.digest(),
                       spec.island, spec.intake)
