"""One function per use case. The CLI is a thin layer over these; Python users call them too.

Each function validates its inputs, resolves the device once, calls the pure engine and
returns a frozen result. Failures raise :class:`lwcli.errors.LwError` subclasses and leave the
market exactly as it was.
"""

from __future__ import annotations


import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from .errors import (DataError, MarketError, MetricMismatchError, NotFoundError, SpecError,
                     UsageError)
from .specfile import Spec


# ------------------------------------------------------------------------------ spec

def _resolve_island_for_features(market, features: Sequence[str], island: str | None,
                                 task: str | None):
    """Find the one island whose input space matches ``features`` (any column order)."""
    isl = market.islands()
    if island:
        return market.island(island)
    fs = set(features)
    matches = [i for i in isl.values() if set(i.key["features"]) == fs]
    if task:
        matches = [i for i in matches if i.key["task"] == task]
    if not matches:
        for i in isl.values():    # the label column left among the features?
            extra = fs - set(i.key["features"])
            if set(i.key["features"]) <= fs and len(extra) == 1:
                (col,) = extra
                raise NotFoundError(
                    f"no island of this market takes the {len(fs)} input columns; island "
                    f"{i.id} takes all of them but {col!r}",
                    f"if {col!r} is your label column, pass --target {col}")
        known = "; ".join(f"{i.id}: {len(i.key['features'])} features" for i in isl.values())
        raise NotFoundError(
            f"no island of this market takes the {len(fs)} input columns {sorted(fs)[:6]}"
            f"{'...' if len(fs) > 6 else ''}", f"islands: {known or 'none'}; check column names")
    if len(matches) > 1:
        raise UsageError(f"{len(matches)} islands take these columns: "
                         f"{', '.join(i.id for i in matches)}", "pick one with --island or --task")
    return matches[0]


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
) -> Spec:
    """Fit an RKME specification of ``data``.

    - with ``model`` (a developer): embeds ``(x, model(x))``; task and outputs come from
      ``meta`` (learnware.toml), which is then required;
    - with ``target`` only (a user with labels): embeds ``(x, y)``, a label-aware requirement;
    - with neither (a user without labels): embeds ``x``.
    With ``market``, the island's kernel metric is used (and must be, for the spec to be
    comparable); without it a metric is fitted from the data. ``clamp_k`` lowers ``k`` to the
    row count instead of failing (search does this for small user samples).
    """
    from .device import resolve_device
    from .engine.kernels import fit_metric
    from .engine.rkme import fit_rkme
    from .io import read_table
    from .labels import encode_outputs, label_str
    from .market.manifest import read_manifest

    if model is not None and target is not None:
        raise UsageError("--model and --target both given",
                         "a developer passes --model (outputs come from it); a user passes --target")
    man = read_manifest(meta) if meta is not None else None
    if model is not None and man is None:
        raise UsageError("--model needs --meta learnware.toml",
                         "pass the manifest so lw knows the task, features and outputs")
    isl = None
    features = list(man.features) if man else None
    table = read_table(data, target=target, features=features, min_rows=1)
    if market is not None:
        from .market.store import Market

        mk = Market.open(market)
        if island is not None:
            isl = mk.island(island)
            if man is not None and man.island_id() != isl.id:
                raise UsageError(f"--meta places the model on island {man.island_id()}, not "
                                 f"{island}", "drop --island or fix the manifest")
        elif man is not None:
            isl = mk.islands().get(man.island_id())  # None: this spec will found a new island
        else:
            isl = _resolve_island_for_features(mk, table.features, island, task)
        if isl is not None and man is None:  # reorder the columns to the island's order
            table = table.select(isl.key["features"])
    if clamp_k:
        k = min(k, table.n_rows)
    if k > table.n_rows:
        raise DataError(f"--k {k} reduced points asked for, but {table.path} has {table.n_rows} rows",
                        f"use --k {table.n_rows} or fewer, or pass more rows")
    dev = resolve_device(device)
    task = outputs = source = None
    Y = None
    if model is not None:
        from .market.manifest import MODEL_EXTENSIONS
        from .market.models import load_learnware_model, model_outputs

        mp = Path(model)
        if not mp.is_file():
            raise NotFoundError(f"model file {mp} does not exist", "check the path")
        fmt = model_format or man.model_format
        if fmt not in MODEL_EXTENSIONS:
            raise UsageError(f"unknown model format {fmt!r}", "use skops, onnx, pickle or joblib")
        mdl = load_learnware_model(mp.read_bytes(), fmt, man.features, trust=trust)
        task, outputs, source = man.task, tuple(man.outputs), "model"
        Y = model_outputs(mdl, table.X, task, outputs)
    elif target is not None:
        if isl is not None:
            task, outputs = isl.key["task"], tuple(isl.key["outputs"])
        elif man is not None:
            task, outputs = man.task, tuple(man.outputs)
        else:
            y = table.y
            # numbers are classes when they are few integers that repeat: 20 integral
            # PM2.5 readings with 19 distinct values are a regression target
            numeric = y.dtype.kind in "iuf"
            distinct = len(np.unique(y))
            task = "classification" if not numeric or (
                distinct <= 20 and 2 * distinct <= len(y) and np.allclose(y, np.round(y))) \
                else "regression"
            outputs = (tuple(sorted({label_str(v) for v in y})) if task == "classification"
                       else (target,))
        Y = encode_outputs(table.y, task, outputs, f"target column {target!r}")
        source = "target"
    if isl is not None:
        metric = isl.metric if Y is not None else isl.metric.input_metric()
    else:
        metric = fit_metric(table.X, Y, task=task, seed=seed)
    Z = table.X if Y is None else np.hstack([table.X, Y])
    rkme = fit_rkme(Z, metric, k=k, seed=seed, device=dev)
    return Spec(rkme=rkme, features=tuple(table.features), task=task,
                outputs=tuple(outputs) if outputs else (), output_source=source,
                island=isl.id if isl is not None else None)


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
                progress=None, **options) -> BatchSpecResult:
    """:func:`build_spec` for many data files (folders give their ``.csv``, ``.parquet`` and
    ``.npy`` files), writing ``<out_dir>/<stem>.rkme.json`` each; ``options`` are
    :func:`build_spec`'s keywords, the same for every file. A spec that is up to date (same
    data, same options, file untouched: see :mod:`lwcli.specbatch`) is skipped unless
    ``force``. A file that fails is reported in ``failed`` and the others go on.
    ``progress(done, total, path, status)`` is called after each file."""
    import inspect

    from .errors import LwError
    from .market.store import sha256_file
    from .specbatch import SpecFolder, expand_inputs, output_names, params_digest
    from .specfile import FORMAT, VERSION

    defaults = {n: p.default for n, p in inspect.signature(build_spec).parameters.items()
                if n != "data"}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UsageError(f"unknown spec options {unknown}", f"use some of {sorted(defaults)}")
    opts = {**defaults, **options}
    folder = SpecFolder(out_dir)
    inputs = expand_inputs(data)
    names = output_names(inputs)
    market = opts["market"]
    params = {**{n: v for n, v in opts.items() if n not in ("model", "meta", "market",
                                                            "device", "trust")},
              "format": [FORMAT, VERSION],
              "model_sha256": sha256_file(Path(opts["model"])) if opts["model"] else None,
              "meta_sha256": sha256_file(Path(opts["meta"])) if opts["meta"] else None,
              "market": str(Path(market).resolve()) if market is not None else None}
    digest = params_digest(params)
    islands = None
    if market is not None:
        from .market.store import Market

        islands = Market.open(market).islands()

    def metric_ok(island_id, metric_digest) -> bool:
        if islands is None or island_id is None:
            return islands is None and island_id is None
        isl = islands.get(island_id)
        return isl is not None and isl.metric.digest() == metric_digest

    written, skipped, failed = [], [], []
    for i, (path, name) in enumerate(zip(inputs, names), 1):
        status = "skipped"
        if not force and folder.is_current(name, path, digest, metric_ok):
            skipped.append({"data": str(path), "output": str(folder.root / name)})
        else:
            try:
                sp = build_spec(path, **opts)
                out = folder.record(name, path, digest, sp)
                written.append({"data": str(path), "output": str(out), "kind": sp.kind,
                                "k": sp.rkme.k, "n_rows": sp.rkme.n_rows,
                                "approx_error": sp.rkme.approx_error, "island": sp.island})
                status = "written"
            except LwError as exc:
                failed.append({"data": str(path), "error": str(exc),
                               "exit_code": exc.exit_code})
                status = "failed"
        if progress is not None:
            progress(i, len(inputs), path, status)
    return BatchSpecResult(str(folder.root), written, skipped, failed)


def write_spec(spec: Spec, out: str | Path) -> Path:
    from .market.store import write_output

    return write_output(out, spec.to_bytes())


# ------------------------------------------------------------------------------ pack

@dataclass(frozen=True)
class PackResult:
    path: str
    id: str
    size: int
    model_format: str


def pack(model: str | Path, spec: str | Path, meta: str | Path, out: str | Path, *,
         trust: bool = False) -> PackResult:
    """Bundle model + specification + learnware.toml into one ``.lw`` package."""
    from dataclasses import replace

    from .market.checks import check_consistency
    from .market.manifest import MODEL_EXTENSIONS, read_manifest
    from .market.models import canonical_skops, load_learnware_model
    from .market.package import build_package, unpack_bytes
    from .market.store import write_output
    from .errors import MissingExtraError, UntrustedModelError
    from .specfile import read_spec

    man = read_manifest(meta)
    sp = read_spec(spec)
    check_consistency(man, sp)
    # The package's content decides its id: the spec names the island its manifest places it
    # on, whether it was fitted before that island existed (null) or after (its id), so that
    # the same model, data and manifest always give the same learnware.
    sp = replace(sp, island=man.island_id())
    mp = Path(model)
    if not mp.is_file():
        raise NotFoundError(f"model file {mp} does not exist", "check the path")
    data = mp.read_bytes()
    if man.trust_required and not trust:
        raise UntrustedModelError(
            f"model format {man.model_format!r} runs arbitrary code when loaded",
            "pass --trust to package it anyway (users will need --trust too), or use skops/ONNX")
    if man.model_format == "skops":
        data = canonical_skops(data)  # same model, same bytes, same id
    try:   # refuses untrusted types, and inputs the model names otherwise than the manifest
        load_learnware_model(data, man.model_format, man.features, trust=trust)
    except MissingExtraError:
        pass   # no onnxruntime here: the market checks the model at submit
    expected_ext = MODEL_EXTENSIONS[man.model_format]
    model_file = man.model_file if man.model_file.endswith(expected_ext) else f"model{expected_ext}"
    man = replace(man, model_file=model_file, package={
        "format_version": 1, "created_with": f"lw {__version__}",
        "trust_required": man.trust_required, "packed_with_trust": bool(trust)})
    blob = build_package(man, sp, data)
    pkg = unpack_bytes(blob, str(out))  # what we wrote must read back
    out = write_output(out, blob)
    return PackResult(str(out), pkg.learnware_id, len(blob), man.model_format)


# ------------------------------------------------------------------------------ submit

@dataclass(frozen=True)
class SubmitResult:
    id: str
    island: str
    status: str                 # "added" | "exists"
    island_created: bool = False
    qa: dict = field(default_factory=dict)


def submit(package: str | Path, market: str | Path, *, trust: bool = False,
           timeout: float | None = None, device: str | None = None) -> SubmitResult:
    """Check a package and store it in the market. Idempotent: same package, same id.

    All or nothing, also across a crash: an intent record is written (under the writers'
    lock) before anything changes, and removed once the learnware is stored and indexed. A
    failure undoes what was done (the market is left byte for byte as it was); a submit that
    died is completed or undone by the next lw process that writes (or opens a writable
    market), or by the same submit again."""
    from .device import resolve_device
    from .faults import crash_point, point
    from .market.checks import quality_check
    from .market.index import add_to_index, load_index
    from .market.package import read_package
    from .market.store import Island, Market, utcnow

    def indexed(mk) -> bool:
        try:
            idx = load_index(mk)
            return idx is not None and idx.row_of(lw_id) is not None
        except MarketError:
            return False

    mk = Market.open(market)
    pkg = read_package(package)
    lw_id = pkg.learnware_id
    iid = pkg.manifest.island_id()
    if mk.has(lw_id) and indexed(mk):
        if lw_id in mk.recovered.get("completed", ()):   # this submit died; opening finished it
            return SubmitResult(lw_id, iid, "added", qa=dict(mk.record(lw_id).get("qa", {})))
        return SubmitResult(lw_id, iid, "exists")
    metric = pkg.spec.rkme.metric
    stored = mk.has(lw_id)              # by a submit that died before indexing it
    qa = None
    if not stored:
        existing = mk.islands().get(iid)
        if existing is not None and existing.metric.digest() != metric.digest():
            raise MetricMismatchError(
                f"the package's specification was fitted with kernel metric {metric.digest()}, "
                f"but island {iid} uses {existing.metric.digest()}",
                f"rebuild the spec with lw spec ... --market {mk.root} and pack again")
        # the model runs in a child with its scratch files outside the market
        qa = quality_check(pkg, trust=trust, timeout=timeout)
    dev = resolve_device(device)
    with mk.writing(device=dev):        # recovers what a dead writer left, first
        point("submit:locked", mk.root)
        if mk.has(lw_id):               # completed by recovery, or stored meanwhile
            if not indexed(mk):
                add_to_index(mk, lw_id, dev)
            rec = mk.record(lw_id)
            return SubmitResult(lw_id, iid, "added" if stored else "exists",
                                qa=dict(rec.get("qa", {})) if stored else {})
        current = mk.islands().get(iid)
        if current is not None and current.metric.digest() != metric.digest():
            raise MetricMismatchError(
                f"island {iid} was created meanwhile with kernel metric {current.metric.digest()}",
                f"rebuild the spec with lw spec ... --market {mk.root} and pack again")
        created = current is None
        if qa is None:                  # it was stored, and is gone again: check it after all
            qa = quality_check(pkg, trust=trust, timeout=timeout)
        before = mk.layout.market_toml.read_bytes() if created else None
        mk.write_intent(lw_id, iid, created)
        try:
            point("submit:intent", mk.layout.intent(lw_id))
            if created:
                mk._add_island(Island(iid, pkg.manifest.island_key(), metric, utcnow(), lw_id))
                point("submit:island", mk.layout.market_toml)
            record = {"id": lw_id, "island": iid, "submitted_at": utcnow(),
                      "lw_version": __version__, "trusted_load": bool(trust), "qa": qa.to_dict()}
            added = mk.commit_learnware(lw_id, pkg.files, record)
            point("submit:committed", mk.layout.learnware(lw_id))
            add_to_index(mk, lw_id, dev)
            crash_point("submit:indexed")
        except BaseException:
            try:                        # leave the market as it was; else the next writer will
                mk.undo_submit(lw_id, iid, created, before)
            except Exception:           # noqa: BLE001 - the intent stays for recovery
                pass
            raise
        mk.clear_intent(lw_id)
    return SubmitResult(lw_id, iid, "added" if added else "exists", created, qa.to_dict())


# ------------------------------------------------------------------------------ search

@dataclass(frozen=True)
class SearchResult:
    island: str
    mode: str                              # "xy" (label-aware) or "x" (inputs only)
    single: list[dict]
    mixture: dict
    requirement: dict
    warnings: list[str] = field(default_factory=list)
    anchors: dict | None = None            # mode "anchors": the report's anchors and metric
    assessment: dict | None = None         # mode "anchors": is there hope in this market?
    ranked_by: str = "rkme"                # "rkme", "requirement-loss" or "anchors"
    searched: dict | None = None           # how: learnwares, "exact" or "sketch", exact MMDs

    def to_dict(self) -> dict:
        out = {"island": self.island, "mode": self.mode, "ranked_by": self.ranked_by,
               "single": self.single, "mixture": self.mixture,
               "requirement": self.requirement, "warnings": self.warnings}
        if self.searched is not None:
            out["searched"] = self.searched
        if self.anchors is not None:
            out["anchors"] = self.anchors
            out["assessment"] = self.assessment
        return out


def search(
    market: str | Path,
    *,
    data: str | Path | None = None,
    target: str | None = None,
    spec: str | Path | Spec | None = None,
    tags: Sequence[str] = (),
    top: int = 10,
    island: str | None = None,
    task: str | None = None,
    k: int = 100,
    seed: int = 0,
    device: str | None = None,
    max_members: int = 5,
    anchor_report: str | Path | dict | None = None,
    rerank: int = 20,
    trust: bool = False,
    exact: bool | None = None,
) -> SearchResult:
    """Rank an island's learnwares against a requirement, and find the best mixture.

    The requirement is built locally from ``data`` (label-aware with ``target``) or read from
    ``spec``. Scores are absolute: ``1 - MMD/sqrt(2)``. A label-aware requirement also
    re-ranks the ``rerank`` best RKME matches by each model's loss on the requirement's
    reduced points (``requirement_loss``: RMSE for values, the Brier score for classes), which
    tells a strong model from a weak one trained on similar data; ``rerank=0`` ranks by RKHS
    distance alone. Pickled models take part in that only with ``trust``. The mixture is
    always the RKME one (seed eq. 3). With ``anchor_report`` instead (what
    :func:`anchor_eval` returned, or the path it wrote), every learnware of the island is
    ranked by its predicted performance from the anchors' scores alone (mode ``"anchors"``;
    no mixture).

    Islands of more than ``SKETCH_MIN_LEARNWARES`` learnwares are searched through their
    sketch index: the nearest sketches are shortlisted and only they get an exact MMD.
    ``exact=True`` always scans every learnware; ``exact=False`` uses the sketch at any size.
    """
    from .device import resolve_device
    from .engine.search import (MIXTURE_CANDIDATES, SKETCH_CANDIDATES, SKETCH_MIN_LEARNWARES,
                                Ranking, mixture_search, rank_single, requirement_notes)
    from .market.index import island_view
    from .market.store import Market
    from .specfile import read_spec

    if sum(x is not None for x in (data, spec, anchor_report)) != 1:
        raise UsageError("give exactly one of --data, --spec and --anchor-report",
                         "see lw search --help")
    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}", "pass a positive number")
    if rerank < 0:
        raise UsageError(f"--rerank must be >= 0, got {rerank}",
                         "pass 0 to rank by RKHS distance alone")
    if anchor_report is not None:
        if target is not None:
            raise UsageError("--target goes with --data", "drop --target with --anchor-report")
        return _anchor_search(market, anchor_report, tags=tags, top=top)
    if target is not None and data is None:
        raise UsageError("--target goes with --data", "drop --target when using --spec")
    mk = Market.open(market)
    dev = resolve_device(device)
    if spec is not None:
        req = spec if isinstance(spec, Spec) else read_spec(spec)
        isl = _resolve_island_for_features(mk, req.features, island, task)
        if tuple(req.features) != tuple(isl.key["features"]):
            raise SpecError(f"the requirement's features are in another order than island "
                            f"{isl.id}'s", "rebuild it with lw spec --market")
        if req.kind == "joint" and tuple(req.outputs) != tuple(isl.key["outputs"]):
            raise SpecError(f"the requirement's outputs {list(req.outputs)} differ from island "
                            f"{isl.id}'s {isl.key['outputs']}", "rebuild it with lw spec --market")
    else:
        req = build_spec(data, target=target, k=k, seed=seed, device=device, market=market,
                         island=island, task=task, clamp_k=True)
        isl = mk.island(req.island)
    view = island_view(mk, isl.id, dev)
    if view is None:
        raise NotFoundError(f"island {isl.id} has no learnwares", "submit some first")
    ids, stack = view.ids, view.stack
    notes = [*requirement_notes(req.rkme.n_rows, req.kind == "joint"), *view.notes]
    allowed = None
    if tags:
        allowed = view.tag_mask(tags)
        if not allowed.any():
            raise NotFoundError(f"no learnware on island {isl.id} carries all tags {list(tags)}",
                                "drop or change --tag")
    use_sketch = exact is False or (exact is None and stack.n > SKETCH_MIN_LEARNWARES)
    keep = max(top, rerank, MIXTURE_CANDIDATES)
    ranking = rank_single(stack, req.rkme, dev, sketch=view.sketch if use_sketch else None,
                          keep=keep, allowed=allowed)
    order = [int(j) for j in ranking.order]
    scores = Ranking.score(ranking.mmd2)
    ranked_by, loss_of = "rkme", {}
    if ranking.mode == "xy" and rerank > 0:
        order, loss_of, skipped = _rerank_by_requirement(mk, isl, ids, order, req.rkme, rerank,
                                                         trust)
        ranked_by = "requirement-loss"
        notes = [*notes, *skipped]
    shown = order[:top]
    single = []
    for j, summ in zip(shown, view.summaries(shown)):
        row = {"id": str(ids[j]), "name": summ["name"], "mmd2": float(ranking.mmd2[j]),
               "score": float(scores[j])}
        if j in loss_of:
            row["requirement_loss"] = loss_of[j]
        single.append(row)
    mix = mixture_search(stack, req.rkme, ranking, max_members=max_members, device=dev)
    members = [int(m) for m in mix.members]
    mixture = {"ids": [str(ids[m]) for m in members],
               "names": [r["name"] for r in view.summaries(members)],
               "weights": [float(w) for w in mix.weights], "mmd2": float(mix.mmd2),
               "score": float(Ranking.score(mix.mmd2)), "noise_floor": float(mix.noise_floor)}
    eligible = stack.n if allowed is None else int(allowed.sum())
    searched = {"learnwares": stack.n, "eligible": eligible,
                "method": "sketch" if use_sketch else "exact",
                "exact_mmd": ranking.shortlist if use_sketch else eligible,
                "sketch_candidates": SKETCH_CANDIDATES if use_sketch else None}
    requirement = {"kind": req.kind, "n_rows": req.rkme.n_rows, "k": req.rkme.k,
                   "metric_digest": req.rkme.metric.digest(), "approx_error": req.rkme.approx_error}
    if ranked_by == "requirement-loss":
        requirement["loss_metric"] = "brier" if isl.key["task"] == "classification" else "rmse"
    return SearchResult(isl.id, ranking.mode, single, mixture, requirement, notes,
                        ranked_by=ranked_by, searched=searched)


def _rerank_by_requirement(mk, isl, ids, order, rkme, shortlist: int, trust: bool):
    """Run the shortlisted models on the requirement's reduced points; new order, the loss of
    each evaluated index (RMSE or Brier), and notes about the ones that could not run.

    The models run contained (:func:`lwcli.market.contained.run_contained`, one child for the
    whole shortlist): a model that crashes, hangs or misbehaves is reported as not evaluated
    and keeps its RKME place; lw's own process never runs a stored model here."""
    from .settings import qa_timeout
    from .engine.search import requirement_sample, rerank
    from .errors import LwError, MissingExtraError, ModelCheckError, UntrustedModelError
    from .labels import align_columns
    from .market.contained import Item, run_contained

    task, features = isl.key["task"], tuple(isl.key["features"])
    outputs = list(isl.key["outputs"])
    untrusted, failed = [], []

    X, _, _ = requirement_sample(rkme)
    k = max(0, int(shortlist))
    items, where, done = [], {}, {}
    for j in [int(j) for j in np.asarray(order, dtype=np.int64)[:k]]:
        lw_id = str(ids[j])
        try:
            man = mk.manifest(lw_id)
            cols = [features.index(f) for f in man.features]
            items.append(Item(mk.model_bytes(lw_id), man.model_format, man.features, task,
                              man.outputs, X[:, cols],
                              mode="proba" if task == "classification" else "values",
                              id=lw_id, name=man.name, class_values=man.class_values))
            where[j] = (len(items) - 1, list(man.outputs))
        except (ModelCheckError, MissingExtraError) as exc:
            done[j] = exc
        except ValueError as exc:       # a feature the island does not have
            done[j] = ModelCheckError(f"its features do not match the island's ({exc})", None)
    results = run_contained(items, trust=trust, timeout=qa_timeout()) if items else []
    for j, (i, lw_outputs) in where.items():
        res = results[i]
        if not isinstance(res, BaseException) and task == "classification":
            try:
                res = align_columns(res, lw_outputs, outputs)
            except LwError as exc:
                res = exc
        done[j] = res

    def outputs_of(j: int, X: np.ndarray):
        res = done.get(j)
        if isinstance(res, UntrustedModelError):
            untrusted.append(str(ids[j]))
        elif isinstance(res, LwError):
            failed.append(f"{ids[j]}: {res.message}")
        elif res is not None:
            return res
        return None

    rr = rerank(np.asarray(order, dtype=np.int64), rkme, outputs_of, shortlist)
    loss_of = {int(j): (float(np.sqrt(v)) if task == "regression" else float(v))
               for j, v in zip(rr.order, rr.losses) if np.isfinite(v)}
    notes = []
    if untrusted:
        notes.append(f"{len(untrusted)} shortlisted learnware(s) have pickled models and were "
                     f"ranked by RKHS distance only ({', '.join(untrusted[:3])}"
                     f"{', ...' if len(untrusted) > 3 else ''}); pass --trust to evaluate them")
    notes += [f"not evaluated on the requirement: {f}" for f in failed]
    return [int(j) for j in rr.order], loss_of, notes


# ------------------------------------------------------------------------------ anchors

def _anchor_metric(task: str, objective: str) -> tuple[str, str]:
    """(score used for ranking, distance that bounds it) for an island."""
    if task == "classification":
        return "accuracy", "disagreement"
    return ("mae", "mae") if objective == "mae" else ("rmse", "rms")


def _as_loss(values, metric: str):
    v = np.asarray(values, dtype=np.float64)
    return 1.0 - v if metric == "accuracy" else v


HOPELESS_SKILL = 0.1    # the best anchor beats a constant prediction by less than 10%
INCONSISTENT_SHARE = 0.25   # warn when the bounds cross for more than this share of learnwares
MIN_ANCHOR_ROWS = 5


def anchor_eval(market: str | Path, data: str | Path, target: str, *, island: str | None = None,
                task: str | None = None, trust: bool = False,
                out: str | Path | None = None) -> dict:
    """Score the island's anchor learnwares on the user's labelled rows, locally.

    Returns (and with ``out`` writes) a report of scores only: every metric per anchor, the
    same metrics for the best constant prediction, and the row count. Give it to
    ``search(anchor_report=...)``.
    """
    from .anchorreport import make_report
    from .engine.metrics import baseline_scores, classification_scores, regression_scores
    from .io import read_table
    from .labels import label_str
    from .market.anchors import load_anchor_set
    from .market.store import Market, write_output

    if not target:
        raise UsageError("anchor-eval needs --target: the label column of your data",
                         "pass --target COL")
    if out is not None and not Path(out).parent.exists():
        raise NotFoundError(f"output folder {Path(out).parent} does not exist", "create it first")
    mk = Market.open(market)
    table = read_table(data, target=target, min_rows=MIN_ANCHOR_ROWS)
    isl = _resolve_island_for_features(mk, table.features, island, task)
    table = table.select(isl.key["features"])
    aset = load_anchor_set(mk, isl.id)
    outputs = tuple(isl.key["outputs"])
    if aset.task == "classification":
        y = np.asarray([label_str(v) for v in table.y], dtype=object)
        unknown = sorted(set(y) - set(outputs))
        if unknown:
            raise DataError(f"target column {target!r} has labels {unknown[:5]} that are not "
                            f"among the island's classes {list(outputs)}",
                            "use data whose labels are the island's classes")
    else:
        if len(outputs) != 1:
            raise DataError(f"island {isl.id} has {len(outputs)} outputs; --target gives one",
                            "anchor-eval supports single-output regression islands")
        y = table.y.astype(np.float64)
    scores = []
    for lw in load_learnwares(mk, aset.anchors, trust=trust, with_specs=False):
        if aset.task == "classification":
            proba = lw.predict_proba(table.X)
            pred = np.asarray(outputs, dtype=object)[np.argmax(proba, axis=1)]
            sc = classification_scores(y, pred, proba, outputs)
        else:
            sc = regression_scores(y, lw.predict_values(table.X))
        scores.append({"id": lw.id, "name": lw.name, "scores": sc})
    report = make_report(island=isl.id, anchor_set=aset.anchor_set, task=aset.task,
                         objective=aset.objective, n_rows=table.n_rows, scores=scores,
                         baseline=baseline_scores(y, aset.task))
    if out is not None:
        write_output(out, (json.dumps(report, indent=1) + "\n").encode())
    return report


def _anchor_search(market, report_path, *, tags: Sequence[str], top: int) -> SearchResult:
    from .anchorreport import read_report, report_from_dict
    from .engine.anchors import distances, rank_from_anchors
    from .engine.metrics import skill
    from .market.anchors import load_anchor_set
    from .market.index import learnware_summary, load_index
    from .market.store import Market

    rep = report_from_dict(report_path) if isinstance(report_path, dict) else \
        read_report(report_path)
    mk = Market.open(market)
    isl = mk.island(rep["island"])
    aset = load_anchor_set(mk, isl.id)
    metric, kind = _anchor_metric(aset.task, aset.objective)
    ids = [s["id"] for s in rep["scores"]]
    missing = [i for i in ids if i not in aset.members]
    if missing:
        raise MarketError(f"the report scores learnwares {missing[:3]} that are not among island "
                          f"{isl.id}'s anchored learnwares", "rerun lw anchor-eval on this market")
    if any(metric not in s["scores"] for s in rep["scores"]) or metric not in rep["baseline"]:
        raise MarketError(f"the report lacks the {metric} score this island is ranked by",
                          "rerun lw anchor-eval on this market")
    pos = np.asarray([aset.members.index(i) for i in ids])
    if ids == aset.anchors:
        D = aset.distances(kind)
    else:   # a report on another anchor choice of the same members: distances from outputs
        outs = np.asarray(aset.outputs(), dtype=np.float64)
        D = distances(outs, outs[pos], kind)
    observed = np.asarray([s["scores"][metric] for s in rep["scores"]])
    rk = rank_from_anchors(D, _as_loss(observed, metric), pos)
    try:
        idx = load_index(mk)
        summ = {i: (idx.summary(i) if idx is not None else None) or learnware_summary(mk, i)
                for i in aset.members}
    except MarketError as exc:      # a damaged index: the rows from learnwares/, said so
        idx = None
        summ = {i: learnware_summary(mk, i) for i in aset.members}
        warnings_first = [f"the index is damaged ({exc.message}); read learnwares/ directly: "
                          "repair the index with lw market refresh --force"]
    else:
        warnings_first = []
    flip = metric == "accuracy"
    val = (lambda x: float(1.0 - x)) if flip else float
    obs = dict(zip(ids, observed.tolist()))
    single = []
    for j in rk.order:
        i = aset.members[j]
        if tags and not set(tags) <= set(summ[i]["tags"]):
            continue
        lo, hi = (val(rk.upper[j]), val(rk.lower[j])) if flip else (val(rk.lower[j]),
                                                                     val(rk.upper[j]))
        single.append({"id": i, "name": summ[i]["name"], "predicted": val(rk.predicted[j]),
                       "lower": lo, "upper": hi, "confidence": float(rk.confidence[j]),
                       "anchor": i in obs, "observed": obs.get(i)})
    if not single:
        raise NotFoundError(f"no learnware on island {isl.id} carries all tags {list(tags)}",
                            "drop or change --tag")
    single = single[:top]
    skills = {i: skill(obs[i], rep["baseline"][metric], metric) for i in ids}
    best = max(skills, key=skills.get)
    hopeless = skills[best] < HOPELESS_SKILL
    assessment = {
        "hope": "low" if hopeless else "ok", "best_anchor": best,
        "best_anchor_skill": skills[best],
        "message": (f"every anchor performs poorly on your task (the best, {summ[best]['name']},"
                    f" is {100 * skills[best]:.0f}% better than a constant prediction): there "
                    "may be little hope in this market for this task") if hopeless else
                   (f"the best anchor, {summ[best]['name']}, is {100 * skills[best]:.0f}% better "
                    "than a constant prediction")}
    warnings = [*warnings_first, *([assessment["message"]] if hopeless else [])]
    if rk.inconsistent > INCONSISTENT_SHARE:
        warnings.append(f"for {100 * rk.inconsistent:.0f}% of the learnwares the anchors' scores "
                        "contradict their functional distances: your data may lie away from "
                        "the island's probe inputs; trust the ranking less")
    on_island = idx.ids(isl.id).tolist() if idx is not None else \
        [i for i in mk.ids() if mk.manifest(i).island_id() == isl.id]
    unplaced = sorted(set(on_island) - set(aset.members))
    if unplaced:
        warnings.append(f"{len(unplaced)} learnwares of this island have no anchor distances "
                        "(joined since the last refresh, or need --trust); run lw market refresh")
    anchors = {"metric": metric, "distance": kind, "anchor_set": rep["anchor_set"],
               "current_anchor_set": aset.anchor_set, "n_rows": rep["n_rows"],
               "baseline": rep["baseline"][metric], "ids": ids, "bandwidth": rk.bandwidth,
               "inconsistent": rk.inconsistent}
    requirement = {"kind": "anchor-report", "n_rows": rep["n_rows"], "metric": metric}
    return SearchResult(isl.id, "anchors", single, None, requirement, warnings, anchors,
                        assessment, ranked_by="anchors")


# ------------------------------------------------------------------------------ reuse

def load_learnwares(market, ids: Sequence[str], *, trust: bool = False,
                    with_specs: bool = True) -> list:
    """Load learnwares from a market for reuse: models by format (pickle/joblib only with
    ``trust``), declared features and outputs, and (``with_specs``) their RKMEs."""
    from .engine.reuse import Learnware
    from .market.models import load_learnware_model
    from .market.store import Market

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

    from .engine.metrics import classification_scores, regression_scores
    from .engine.reuse import METHODS, REUSERS, make_reuser
    from .io import read_table
    from .labels import label_str, label_values, values_array
    from .market.store import Market, write_output
    from .reusefile import dump_reuser, load_reuser

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


# ------------------------------------------------------------------------------ market

def market_init(root: str | Path) -> dict:
    from .market.store import Market

    mk = Market.init(root)
    return {"market": str(mk.root), "islands": len(mk.islands()), "learnwares": len(mk.ids())}


def market_ls(market: str | Path, *, island: str | None = None,
              tags: Sequence[str] = (), notes: list[str] | None = None) -> list[dict]:
    """The learnwares' catalog rows, from the index. A damaged index is not used: the rows
    are then read from ``learnwares/`` directly (every file checked against its recorded
    sha256), and a sentence saying so, with the repair, is appended to ``notes``."""
    from .market.index import learnware_summary, load_index
    from .market.store import Market

    mk = Market.open(market)
    if island:
        mk.island(island)             # an unknown island is "not found", not an empty list
    rows = None
    try:
        idx = load_index(mk)
        if idx is not None:
            rows = list(idx.iter_summaries(island if island and idx.has_island(island) else None))
    except MarketError as exc:
        if notes is not None:
            notes.append(f"the index is damaged ({exc.message}); listed learnwares/ directly: "
                         "repair the index with lw market refresh --force")
        rows = None
    if rows is None:
        rows = [learnware_summary(mk, i) for i in mk.ids()]
    if island:
        rows = [r for r in rows if r["island"] == island]
    if tags:
        rows = [r for r in rows if set(tags) <= set(r["tags"])]
    return sorted(rows, key=lambda r: (r["island"], r["name"], r["id"]))


def market_info(market: str | Path, lw_id: str) -> dict:
    from .market.store import Market

    mk = Market.open(market)
    man = mk.manifest(lw_id)
    rec = mk.record(lw_id)
    sp = mk.spec(lw_id)
    mk.check_files(lw_id)        # the model too: info describes a learnware that can be used
    return {"id": lw_id, "island": man.island_id(), "manifest": man.to_dict(), "record": rec,
            "spec": {"k": sp.rkme.k, "n_rows": sp.rkme.n_rows,
                     "approx_error": sp.rkme.approx_error,
                     "metric_digest": sp.rkme.metric.digest(), "output_source": sp.output_source}}


def market_refresh(market: str | Path, *, device: str | None = None, force: bool = False,
                   trust: bool = False, n_anchors: int | None = None) -> dict:
    """Rebuild the derived data: the search index and each island's anchors.

    Idempotent: an unchanged market writes nothing (``changed`` is false) and takes no lock,
    so it works on a read-only market. Anchors run every learnware on the island's probe
    inputs; pickle/joblib learnwares join only with ``trust``. ``force`` rebuilds both into
    new generations and switches to them atomically (the repair for damaged derived data).
    """
    from .device import resolve_device
    from .faults import crash_point, point
    from .market.anchors import plan_anchors, publish_anchors
    from .market.index import build_index, index_state
    from .market.store import Market, current_generation_in

    if n_anchors is not None and n_anchors < 1:
        raise UsageError(f"--anchors must be >= 1, got {n_anchors}", "pass a positive number")
    mk = Market.open(market)
    dev = resolve_device(device)
    *_, fresh = index_state(mk)
    if fresh and not force and not mk.needs_recovery():
        gen, changed = current_generation_in(mk.layout.index), False      # nothing to write
    else:
        with mk.writing(device=dev):
            point("refresh:locked", mk.root)
            gen, changed = build_index(mk, dev, force=force)
            point("refresh:indexed", mk.layout.index)
    # running every model for the anchors can take a while: not under the writers' lock
    # (learnwares are immutable; the plan's name is a digest of the members it used)
    plan = plan_anchors(mk, trust=trust, n_anchors=n_anchors, force=force)
    crash_point("refresh:planned")
    if plan.changed:
        with mk.writing(device=dev):
            anchors = publish_anchors(mk, plan, force=force)
            crash_point("refresh:published")
    else:
        anchors = publish_anchors(mk, plan, force=force)    # unchanged: writes nothing
    return {"generation": gen, "changed": changed or anchors["changed"],
            "index_changed": changed, "learnwares": len(mk.ids()),
            "islands": len(mk.islands()), "anchors": anchors}


def market_verify(market: str | Path, *, device: str | None = None):
    from .device import resolve_device
    from .market.checks import verify_market
    from .market.store import Market

    mk = Market.open(market)
    return verify_market(mk, resolve_device(device))


__all__ = ["build_spec", "write_spec", "pack", "submit", "search", "reuse", "load_learnwares",
           "anchor_eval", "market_init", "market_ls", "market_info", "market_refresh",
           "market_verify"]
