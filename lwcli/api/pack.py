"""Use case: bundle model, specification and manifest into one package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import NotFoundError


@dataclass(frozen=True)
class PackResult:
    """The package written: its path, learnware id, size in bytes and model format."""

    path: str
    id: str
    size: int
    model_format: str

    def to_dict(self) -> dict:
        return {"path": self.path, "id": self.id, "size": self.size,
                "model_format": self.model_format}


def pack(model: str | Path, spec: str | Path, meta: str | Path, out: str | Path, *,
         trust: bool = False) -> PackResult:
    """Bundle model + specification + learnware.toml into one ``.lw`` package."""
    import contextlib
    from dataclasses import replace

    from ..market.checks import check_consistency
    from ..market.manifest import MODEL_EXTENSIONS, read_manifest
    from ..market.models import canonical_skops, load_learnware_model
    from ..market.package import FORMAT_VERSION, build_package, unpack_bytes
    from ..market.store import write_output
    from ..errors import MissingExtraError, UntrustedModelError
    from ..specfile import read_spec

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
    # refuses untrusted types, and inputs the model names otherwise than the manifest; without
    # onnxruntime here (MissingExtraError) the market checks the model at submit
    with contextlib.suppress(MissingExtraError):
        load_learnware_model(data, man.model_format, man.features, trust=trust)
    expected_ext = MODEL_EXTENSIONS[man.model_format]
    model_file = man.model_file if man.model_file.endswith(expected_ext) else f"model{expected_ext}"
    man = replace(man, model_file=model_file, package={
        "format_version": FORMAT_VERSION, "created_with": f"lw {__version__}",
        "trust_required": man.trust_required, "packed_with_trust": bool(trust)})
    blob = build_package(man, sp, data)
    pkg = unpack_bytes(blob, str(out))  # what we wrote must read back
    out = write_output(out, blob)
    return PackResult(str(out), pkg.learnware_id, len(blob), man.model_format)
