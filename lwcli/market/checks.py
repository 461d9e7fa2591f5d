"""Quality assurance on submit, and the market's self-check (``lw market verify``).

QA loads the model *in a contained child process* (:mod:`lwcli.market.contained`) with a time
limit, feeds it probe inputs drawn from
its own RKME and the RKME's reduced points, and checks the outputs' shape and finiteness. It
also measures how well the model's outputs at the reduced points agree with the output part of
the specification: a specification that belongs to the model agrees closely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LwError, ManifestError, MarketError, ModelCheckError, SpecError
from .layout import ID_RE, RECORD_NAME
from .manifest import Manifest
from .package import MANIFEST_NAME, SPEC_NAME, Package, content_id
from .store import Market, record_checksum, sha256

N_PROBES = 64
LOW_AGREEMENT = 0.5


def check_consistency(manifest: Manifest, spec) -> None:
    """The specification must describe the manifest's inputs and outputs, and the market must
    be able to serve the learnware (at pack and at submit)."""
    if manifest.task == "regression" and len(manifest.outputs) > 1:
        raise ManifestError(
            f"learnware.toml declares {len(manifest.outputs)} regression outputs "
            f"{list(manifest.outputs)[:4]}; lw serves single-output models only (labelled "
            "search, anchor-eval and scored reuse take one target column)",
            "package one learnware per output, each with output.dimension = 1")
    if spec.kind != "joint":
        raise SpecError("the package's specification embeds inputs only; a learnware's spec must "
                        "embed (x, y_hat)", "build it with lw spec DATA --model MODEL --meta ...")
    if tuple(spec.features) != tuple(manifest.features):
        raise SpecError(f"the specification's features {list(spec.features)[:6]}... do not match "
                        f"input.features {list(manifest.features)[:6]}... (names and order)",
                        "rebuild the spec from data with exactly the declared feature columns")
    if spec.task != manifest.task:
        raise SpecError(f"the specification is for task {spec.task!r}, the manifest declares "
                        f"{manifest.task!r}", "rebuild the spec with --meta learnware.toml")
    if tuple(spec.outputs) != tuple(manifest.outputs):
        raise SpecError(f"the specification's outputs {list(spec.outputs)} do not match the "
                        f"manifest's {list(manifest.outputs)}",
                        "rebuild the spec with --meta learnware.toml")


def run_model_in_child(model_bytes: bytes, fmt: str, trust: bool, X: np.ndarray, task: str,
                       outputs, features, timeout: float,
                       tmp_dir: Path | None = None) -> np.ndarray:
    """Outputs of the model on ``X`` (columns in ``features`` order; island encoding),
    computed in a contained child process (:mod:`lwcli.market.contained`: its own process
    group, killed on timeout and on every exit path, stderr read bounded, job folder in the
    system temp dir) that also checks the model's input names and, for classes, its
    probability column order (:func:`lwcli.market.models.check_class_order`).

    ``tmp_dir`` is ignored (kept for callers): nothing is written in the market."""
    from .contained import Item, run_contained

    (res,) = run_contained([Item(model_bytes, fmt, features, task, outputs, X, mode="qa")],
                           trust=trust, timeout=timeout)
    if isinstance(res, LwError):
        raise res
    return res


def agreement(spec, Y_model: np.ndarray) -> tuple[float, str]:
    """How well the model's outputs at the reduced points match the spec's output part."""
    r = spec.rkme
    w = r.beta
    Y_spec = r.points[:, r.metric.n_inputs:]
    if spec.task == "classification":
        hit = np.argmax(Y_model, 1) == np.argmax(Y_spec, 1)
        return float(w @ hit), "weighted_accuracy"
    mean = w @ Y_spec
    ss_res = float(w @ ((Y_model - Y_spec) ** 2).sum(1))
    ss_tot = float(w @ ((Y_spec - mean) ** 2).sum(1))
    return (1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0), "weighted_r2"


@dataclass(frozen=True)
class QAReport:
    probes: int
    agreement: float
    agreement_metric: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"probes": self.probes, "agreement": self.agreement,
                "agreement_metric": self.agreement_metric, "warnings": list(self.warnings)}


def quality_check(pkg: Package, *, trust: bool, timeout: float | None = None,
                  tmp_dir: Path | None = None, seed: int = 0) -> QAReport:
    from ..config import qa_timeout

    man, spec = pkg.manifest, pkg.spec
    check_consistency(man, spec)
    timeout = timeout or qa_timeout()
    r = spec.rkme
    rng = np.random.default_rng(seed)
    probes = r.input_part().sample(N_PROBES, rng)
    X = np.vstack([probes, r.points[:, : r.metric.n_inputs]])
    Y = run_model_in_child(pkg.model_bytes, man.model_format, trust, X, man.task, man.outputs,
                           man.features, timeout, tmp_dir)
    if Y.shape != (len(X), len(man.outputs)):
        raise ModelCheckError(f"the model's outputs have shape {Y.shape}, expected "
                              f"{(len(X), len(man.outputs))}", "fix the model's output shape")
    if not np.all(np.isfinite(Y)):
        raise ModelCheckError("the model returned NaN or infinite outputs on probe inputs",
                              "fix the model so that it returns finite values")
    agree, metric = agreement(spec, Y[N_PROBES:])
    warnings = []
    if agree < LOW_AGREEMENT:
        warnings.append(f"the model agrees poorly with its own specification ({metric} "
                        f"{agree:.2f}); was the spec built with this model?")
    return QAReport(N_PROBES, agree, metric, tuple(warnings))


# ---------------------------------------------------------------------------- verify

@dataclass
class VerifyReport:
    problems: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, kind: str, path, message: str) -> None:
        self.problems.append({"kind": kind, "path": str(path), "message": message})

    def warn(self, kind: str, path, message: str) -> None:
        self.warnings.append({"kind": kind, "path": str(path), "message": message})

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems,
                "warnings": self.warnings}


def verify_market(market: Market, device=None) -> VerifyReport:
    from .index import current_generation, load_index, sketch_seed
    from .manifest import manifest_from_text
    from ..specfile import spec_from_bytes
    from ..engine.search import build_sketch, build_stack, island_basis

    rep = VerifyReport()
    lay = market.layout
    islands = market.islands()
    groups: dict[str, list[str]] = {}
    specs: dict[str, object] = {}
    for p in sorted(lay.learnwares.iterdir()) if lay.learnwares.is_dir() else []:
        if not (p.is_dir() and ID_RE.match(p.name)):
            rep.problem("extra", p, "unexpected entry in learnwares/")
            continue
        rep.checked += 1
        rec_path = p / RECORD_NAME
        try:
            rec = json.loads(rec_path.read_text())
            if rec.get("record_sha256") != record_checksum(rec):
                rep.problem("tampered", rec_path, "record.json checksum does not match its content")
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            rep.problem("missing" if isinstance(exc, FileNotFoundError) else "tampered", rec_path,
                        f"record.json unreadable: {exc}")
            continue
        files = rec.get("files", {})
        present = {f.name for f in p.iterdir()} - {RECORD_NAME}
        for extra in sorted(present - set(files)):
            rep.problem("extra", p / extra, "file not listed in record.json")
        contents = {}
        for name, digest in files.items():
            fp = p / name
            if not fp.is_file():
                rep.problem("missing", fp, "file listed in record.json is missing")
                continue
            data = fp.read_bytes()
            contents[name] = data
            if sha256(data) != digest:
                rep.problem("tampered", fp, "content does not match its recorded sha256")
        if len(contents) == len(files) and content_id(contents) != p.name:
            rep.problem("tampered", p, "the folder name is not the content id of its files")
        try:
            man = manifest_from_text(contents[MANIFEST_NAME].decode(), str(p / MANIFEST_NAME))
            spec = spec_from_bytes(contents[SPEC_NAME], str(p / SPEC_NAME))
        except (KeyError, UnicodeDecodeError, LwError) as exc:
            rep.problem("tampered", p, f"manifest or spec unreadable: {exc}")
            continue
        iid = man.island_id()
        if iid not in islands:
            rep.problem("inconsistent", p, f"island {iid} is not recorded in market.toml")
            continue
        if spec.rkme.metric.digest() != islands[iid].metric.digest():
            rep.problem("inconsistent", p, "spec metric differs from its island's metric")
            continue
        groups.setdefault(iid, []).append(p.name)
        specs[p.name] = spec
    if lay.tmp.is_dir():
        for t in lay.tmp.iterdir():
            rep.warn("stale-temp", t, "left by an interrupted write; safe to delete")
    _verify_anchors(market, groups, rep)
    # index
    name = current_generation(market)
    if name is None:
        if rep.checked:
            rep.problem("index", lay.index, "no index; run lw market refresh")
        return rep
    try:
        idx = load_index(market)
    except MarketError as exc:
        rep.problem("index", lay.index, str(exc))
        return rep
    if idx is None:
        rep.problem("index", lay.index_generation(name), "CURRENT names a missing generation")
        return rep
    for p in lay.index.iterdir():
        if p.name not in ("CURRENT", name):
            rep.warn("extra", p, "unused index entry; lw market refresh removes it")
    try:
        cat_groups = {k: idx.ids(k).tolist() for k in idx.islands()}
        rows = {k: [s["id"] for s in idx.iter_summaries(k)] for k in idx.islands()}
    except (OSError, ValueError, LwError) as exc:
        rep.problem("index", idx.path, f"unreadable: {exc}")
        return rep
    if {k: sorted(v) for k, v in groups.items()} != cat_groups or rows != cat_groups:
        rep.problem("index", idx.path, "the index's learnwares differ from learnwares/; "
                    "run lw market refresh")
        return rep
    for iid, ids in cat_groups.items():
        try:
            st, sk = idx.stack(iid), idx.sketch(iid)
            ref = build_stack([specs[i].rkme for i in ids], islands[iid].metric, device)
            ref_sk = build_sketch(ref, sk.basis, device)
            same = (st.points.shape == ref.points.shape
                    and np.allclose(st.points, ref.points, rtol=1e-6, atol=1e-6)
                    and np.allclose(st.beta, ref.beta, rtol=1e-6, atol=1e-7)
                    and np.allclose(st.self_xy, ref.self_xy, rtol=1e-4, atol=1e-6)
                    and np.allclose(st.self_x, ref.self_x, rtol=1e-4, atol=1e-6)
                    and sk.basis == island_basis(islands[iid].metric, sketch_seed(iid))
                    and np.allclose(sk.xy, ref_sk.xy, atol=1e-5)
                    and np.allclose(sk.x, ref_sk.x, atol=1e-5)
                    and np.allclose(sk.norms, ref_sk.norms, rtol=1e-4, atol=1e-6))
        except (OSError, ValueError, LwError) as exc:
            rep.problem("index", idx.path / f"{iid}.*.npy", f"unreadable: {exc}")
            continue
        if not same:
            rep.problem("index", idx.path / f"{iid}.*.npy",
                        "stacked specifications or sketches differ from the learnwares' specs")
    return rep


def _verify_anchors(market: Market, groups: dict[str, list[str]], rep: VerifyReport) -> None:
    """Anchors are derived: problems when unreadable or inconsistent, a warning when stale."""
    from .anchors import ANCHORS_JSON
    from .store import current_generation_in

    lay = market.layout
    name = current_generation_in(lay.anchors)
    if name is None:
        return
    path = lay.anchors_generation(name)
    fix = "rebuild them with lw market refresh --force"
    try:
        doc = json.loads((path / ANCHORS_JSON).read_text())
        islands = doc["islands"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        rep.problem("anchors", path / ANCHORS_JSON, f"unreadable ({exc}); {fix}")
        return
    for iid, d in islands.items():
        try:
            members, anchors = list(d["members"]), list(d["anchors"])
            outs = np.load(path / f"{iid}.outputs.npy", mmap_mode="r")
            dists = [np.load(path / f"{iid}.{k}.npy") for k in d["distances"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            rep.problem("anchors", path / f"{iid}.*.npy", f"unreadable ({exc}); {fix}")
            continue
        unknown = sorted(set(members) - set(groups.get(iid, [])))
        if unknown or not set(anchors) <= set(members):
            rep.problem("anchors", path / ANCHORS_JSON,
                        f"island {iid}: anchors name learnwares that are not on it; {fix}")
            continue
        if outs.shape[0] != len(members) or any(D.shape != (len(members), len(anchors))
                                                or not np.all(np.isfinite(D)) for D in dists):
            rep.problem("anchors", path / f"{iid}.*.npy",
                        f"island {iid}: stored arrays do not match its members; {fix}")
            continue
        if sorted(members) != sorted(groups.get(iid, [])):
            rep.warn("stale-anchors", path, f"island {iid}: learnwares joined since the anchors "
                     "were chosen (or need --trust); lw market refresh updates them")


__all__ = ["quality_check", "verify_market", "QAReport", "VerifyReport", "check_consistency",
           "run_model_in_child"]
