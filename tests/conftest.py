"""Shared fixtures: real temporary markets (one session market, `world`, to copy), a learnware
factory, lw in process (`run_cli`), through its real entry point (`run_lw`), and as a real
process forked warm (`spawn_lw` / `fork_lw`, for the tests that kill lw or inject faults)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lwcli import api
from lwcli.market.manifest import manifest_from_dict

ROOT = Path(__file__).resolve().parents[1]
LW = Path(sys.executable).parent / "lw"


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch):
    """No test sees the developer's LW_* settings."""
    for k in list(os.environ):
        if k.startswith("LW_"):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LW_DEVICE", "cpu")


@pytest.fixture
def market(tmp_path) -> Path:
    root = tmp_path / "market"
    api.market_init(root)
    return root


def run_lw(*args, check: int | None = 0, env: dict | None = None, timeout: float = 300):
    """Run the installed `lw` console script; return the CompletedProcess."""
    e = dict(os.environ, LW_DEVICE="cpu", PYTHONWARNINGS="ignore")
    e.update(env or {})
    proc = subprocess.run([str(LW), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, stdin=subprocess.DEVNULL)
    return _checked(proc, check)


class Launched:
    """An lw command forked by the warm launcher (``tests/launcher.py``), with the part of
    :class:`subprocess.Popen` the tests use: ``pid`` (also its process group), ``returncode``,
    ``wait`` and ``communicate`` (both raise :class:`subprocess.TimeoutExpired`)."""

    def __init__(self, launcher: "_Launcher", pid: int, args: list, out: Path, err: Path):
        self.launcher, self.pid, self.args, self.out, self.err = launcher, pid, args, out, err
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.launcher.read(timeout, self.args)["status"]
            self.launcher.busy = False
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        texts = [p.read_text(errors="replace") for p in (self.out, self.err)]
        for p in (self.out, self.err):
            p.unlink(missing_ok=True)
        return texts[0], texts[1]


class _Launcher:
    """One warm launcher process; serves commands whose import environment equals its own."""

    def __init__(self, env: dict) -> None:
        import atexit
        import tempfile

        self.env, self.busy, self.buf = env, False, b""
        self.dir = Path(tempfile.mkdtemp(prefix="lw-launched-"))
        atexit.register(shutil.rmtree, self.dir, ignore_errors=True)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "launcher.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     cwd=ROOT)

    def read(self, timeout: float | None, args) -> dict:
        import select
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if end is None else max(0.0, end - time.monotonic())
            if not select.select([self.proc.stdout], [], [], left)[0]:
                raise subprocess.TimeoutExpired(["lw", *args], timeout)
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("the test launcher of lw processes died")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def spawn(self, args: list, env: dict, cwd: Path) -> Launched:
        assert not self.busy, "one launched lw at a time"
        n = len(list(self.dir.iterdir()))
        out, err = self.dir / f"{n}.out", self.dir / f"{n}.err"
        self.proc.stdin.write((json.dumps({"argv": args, "env": env, "cwd": str(cwd),
                                           "out": str(out), "err": str(err)}) + "\n").encode())
        self.proc.stdin.flush()
        self.busy = True
        return Launched(self, self.read(120, args)["pid"], args, out, err)


_launchers: dict = {}


def spawn_lw(*args, env: dict | None = None) -> Launched:
    """Start ``lw ARGS`` as a real process of its own, forked from a warm launcher (see
    ``tests/launcher.py``): in its own session, with this process's environment plus
    ``LW_DEVICE=cpu``, ``PYTHONWARNINGS=ignore`` and ``env``."""
    from lwcli.market.forkserver import import_environment

    e = dict(os.environ, LW_DEVICE="cpu", PYTHONWARNINGS="ignore")
    e.update(env or {})
    key = json.dumps(import_environment(e), sort_keys=True)
    launcher = _launchers.get(key)
    if launcher is None or launcher.proc.poll() is not None:
        launcher = _launchers[key] = _Launcher(e)
    return launcher.spawn([str(a) for a in args], e, Path.cwd())


def fork_lw(*args, check: int | None = 0, env: dict | None = None, timeout: float = 300):
    """:func:`spawn_lw` and wait: a CompletedProcess like :func:`run_lw`."""
    proc = spawn_lw(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return _checked(subprocess.CompletedProcess(["lw", *map(str, args)], proc.returncode, out,
                                                err), check)


def _checked(proc: subprocess.CompletedProcess, check: int | None):
    """``proc``, or an AssertionError with its output when its exit status is not ``check``."""
    if check is not None and proc.returncode != check:
        raise AssertionError(f"lw {' '.join(map(str, proc.args[1:]))} exited {proc.returncode}, "
                             f"expected {check}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def run_cli(*args, check: int | None = 0, env: dict | None = None, input: str | None = None):
    """Run ``lw`` in this process (typer's CliRunner on :data:`lwcli.cli.main.app`); return a
    CompletedProcess like :func:`run_lw`. The same error boundary maps exceptions to exit codes,
    so exit codes, stdout and stderr are the command's own; only what needs a real process (the
    entry point's exit 141, signals, crashes, imports) must go through :func:`run_lw`. ``env``
    is set for the call only; Python warnings are ignored as ``PYTHONWARNINGS=ignore`` does."""
    import warnings

    from typer.testing import CliRunner

    from lwcli.cli.main import app

    argv = [str(a) for a in args]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(app, argv, env={"LW_DEVICE": "cpu", **(env or {})}, input=input)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"lw {' '.join(argv)} raised outside its error boundary") \
            from res.exception
    return _checked(subprocess.CompletedProcess(["lw", *argv], res.exit_code, res.stdout,
                                                res.stderr), check)


def market_tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``, folders included: a file's sha256, "dir" for a folder, the
    writers' ``.lock`` by presence only. Equal before and after means byte for byte unchanged."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = ("dir" if p.is_dir() else "lock" if p.name == ".lock"
                    else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file under a market with its hash: to assert that nothing changed."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".lock":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


FEATURES = ["f0", "f1", "f2", "f3"]


def domain_data(domain: int, n: int, seed: int, d: int = 4):
    """Clearly different input distributions and functions per domain."""
    rng = np.random.default_rng(seed)
    centre = np.random.default_rng(100 + domain).normal(size=d) * 4.0
    w = np.random.default_rng(200 + domain).normal(size=d)
    X = rng.normal(size=(n, d)) + centre
    y = X @ w + 0.1 * rng.normal(size=n)
    return X, y


def regression_meta(name: str, fmt: str = "skops", features=FEATURES, tags=("synthetic",)):
    ext = {"skops": "model.skops", "onnx": "model.onnx", "pickle": "model.pkl",
           "joblib": "model.joblib"}[fmt]
    return manifest_from_dict({
        "name": name, "version": "1.0.0", "description": f"test learnware {name}",
        "license": "MIT", "tags": list(tags), "data_type": "table", "task": "regression",
        "objective": "rmse", "input": {"features": list(features)},
        "output": {"dimension": 1, "names": ["y"]},
        "model": {"format": fmt, "file": ext}})


@dataclass
class Built:
    dir: Path
    package: Path
    model: Path
    meta: Path
    spec: Path
    train: Path


def build_learnware(workdir: Path, name: str, X, y, *, market: Path | None = None,
                    fmt: str = "skops", k: int = 30, model=None, trust: bool = False,
                    tags=("synthetic",)) -> Built:
    """Train, specify and pack one learnware through the public API."""
    from sklearn.linear_model import Ridge

    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    features = [f"f{i}" for i in range(X.shape[1])]
    pd.DataFrame(X, columns=features).to_csv(d / "train.csv", index=False)
    model = model if model is not None else Ridge(alpha=0.1).fit(X, y)
    meta = regression_meta(name, fmt, features, tags)
    (d / "learnware.toml").write_text(meta.to_toml())
    mpath = d / meta.model_file
    if fmt == "skops":
        import skops.io as sio

        sio.dump(model, mpath)
    elif fmt == "onnx":
        from skl2onnx import to_onnx

        mpath.write_bytes(to_onnx(model, X[:1].astype(np.float32)).SerializeToString())
    elif fmt == "pickle":
        import pickle

        mpath.write_bytes(pickle.dumps(model))
    sp = api.build_spec(d / "train.csv", model=mpath, meta=d / "learnware.toml", market=market,
                        k=k, seed=0, trust=trust)
    api.write_spec(sp, d / "rkme.json")
    api.pack(mpath, d / "rkme.json", d / "learnware.toml", d / "pkg.lw", trust=trust)
    return Built(d, d / "pkg.lw", mpath, d / "learnware.toml", d / "rkme.json", d / "train.csv")


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict:
    """One small market and the packages around it, built once per session and shared: never
    write to its paths; copy ``base`` (``shutil.copytree``, or :func:`market_copy`) to change it.

    base     market: learnware "a" (domain 0, 300 rows, k=20) submitted, refreshed (anchors)
    first    the id of "a"
    same     Built "b": domain 1, 300 rows, k=20, fitted for base's island; not submitted
    new      Built "c": domain 2 in 3 features (a new island), 300 rows, k=20; not submitted
    pkg      {"same": b's package, "new": c's package}; ids: their ids
    islands  {"same": b's manifest, "new": c's manifest}
    users    CSV files with y: "same" and "new" (120 rows of their domains), "home" (domain 0)
    work     the folder of it all
    """
    w = tmp_path_factory.mktemp("world")
    base = w / "base"
    api.market_init(base)
    X, y = domain_data(0, 300, seed=0)
    first = api.submit(build_learnware(w / "work", "a", X, y, k=20).package, base).id
    api.market_refresh(base)
    same = build_learnware(w / "work", "b", *domain_data(1, 300, seed=1), market=base, k=20)
    # a new island over features the market already measures: its spec takes their scales
    new = build_learnware(w / "work", "c", *domain_data(2, 300, seed=2, d=3), market=base, k=20)
    users = {"same": write_user(w / "u_same.csv", *domain_data(1, 120, seed=7)),
             "new": write_user(w / "u_new.csv", *domain_data(2, 120, seed=7, d=3)),
             "home": write_user(w / "user.csv", *domain_data(0, 120, seed=5))}
    built = {"same": same, "new": new}
    return {"base": base, "first": first, "same": same, "new": new, "users": users, "work": w,
            "pkg": {k: b.package for k, b in built.items()},
            "ids": {k: api.pack(b.model, b.spec, b.meta, w / f"{k}.lw").id
                    for k, b in built.items()},
            "islands": {k: b.meta for k, b in built.items()}}


def market_copy(world: dict, dest: Path) -> Path:
    """A copy of the shared market ``world["base"]`` at ``dest``, to change."""
    shutil.copytree(world["base"], dest)
    return dest


def write_user(path: Path, X, y=None, target: str = "y") -> Path:
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    if y is not None:
        df[target] = y
    df.to_csv(path, index=False)
    return path


def read_json(text: str):
    return json.loads(text)


def classification_meta(name: str, classes, features=FEATURES, tags=("synthetic",)):
    return manifest_from_dict({
        "name": name, "version": "1.0.0", "description": f"test classifier {name}",
        "license": "MIT", "tags": list(tags), "data_type": "table", "task": "classification",
        "objective": "accuracy", "input": {"features": list(features)},
        "output": {"classes": list(classes)},
        "model": {"format": "skops", "file": "model.skops"}})


def build_classifier(workdir: Path, name: str, X, y, classes, *, market: Path | None = None,
                     model=None, k: int = 30, features=None) -> Built:
    """Train, specify and pack a classification learnware declaring ``classes`` (in order),
    over ``features`` (default ``f0``, ``f1``, ...)."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    features = list(features) if features is not None else [f"f{i}" for i in range(X.shape[1])]
    pd.DataFrame(X, columns=features).to_csv(d / "train.csv", index=False)
    model = model if model is not None else LogisticRegression(max_iter=1000).fit(X, y)
    meta = classification_meta(name, classes, features)
    (d / "learnware.toml").write_text(meta.to_toml())
    sio.dump(model, d / "model.skops")
    sp = api.build_spec(d / "train.csv", model=d / "model.skops", meta=d / "learnware.toml",
                        market=market, k=k, seed=0)
    api.write_spec(sp, d / "rkme.json")
    api.pack(d / "model.skops", d / "rkme.json", d / "learnware.toml", d / "pkg.lw")
    return Built(d, d / "pkg.lw", d / "model.skops", d / "learnware.toml", d / "rkme.json",
                 d / "train.csv")


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def three_class_data(n: int, seed: int):
    """Three classes 'a', 'b', 'c' in four features (a clear, learnable rule)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = np.where(X[:, 0] > 0.4, "a", np.where(X[:, 1] > 0.0, "b", "c"))
    return X, y


# ------------------------------------------------------------------ hypothesis profiles
# `make fuzz` runs tests/test_fuzz.py with --hypothesis-profile=fuzz: fresh random examples,
# as many as fit in about ten minutes (LW_FUZZ_EXAMPLES per fuzz test; see the Makefile).
# Without it, the fuzz tests run a few fixed examples each (see test_fuzz.py).
from hypothesis import HealthCheck as _HealthCheck, settings as _settings  # noqa: E402

# The default: the same examples on every run and every machine (no example database), so a
# test's outcome never depends on what an earlier run happened to try.
_settings.register_profile("lw", derandomize=True, database=None)
_settings.load_profile("lw")
_settings.register_profile(
    "fuzz", deadline=None, derandomize=False, print_blob=True,
    max_examples=int(os.environ.get("LW_FUZZ_EXAMPLES", "400")),
    suppress_health_check=list(_HealthCheck))
