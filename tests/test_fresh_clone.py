"""A user's fresh clone has no ../shared: the tests get real MNIST through the project's own
verified source chain, once, into the cache. CI has ../shared and never downloads, so this test
plays the part of the mirrors with a local HTTP server serving ../shared's files, and runs tests
that need MNIST in a pytest of their own with ../shared out of sight."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from components.mnist_example_gen import sources
from conftest import mnist_file
from pipelines.config import REPO_ROOT

# Tests that read MNIST through the session fixtures (mnist_dir, mnist_cache), and quickly.
NEEDS_MNIST = ["components/bakeoff_evaluator/corruptions_test.py",
               "components/mnist_example_gen/sources_test.py::test_folder_of_gz_files_then_cache"]


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    served: list[str]  # the paths answered with 200

    def log_request(self, code: int = 0, size: int | str = "-") -> None:
        if int(code) == 200:
            self.served.append(self.path)


@contextlib.contextmanager
def serving(folder: Path):
    """`folder` over HTTP on 127.0.0.1, as a mirror; yields (URL, paths served)."""
    served: list[str] = []
    handler = type("Handler", (RecordingHandler,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def mirror(mnist_dir):
    """This session's MNIST files (../shared's in CI) as a mirror; yields (URL, paths served)."""
    with serving(mnist_dir) as found:
        yield found


def _pytest_without_shared(tmp_path: Path, mirror_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNIST_TEST_DATA": str(tmp_path / "no-shared-here"),
           "MNIST_TEST_CACHE": str(tmp_path / "cache"), "MNIST_TEST_MIRRORS": mirror_url,
           "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NEEDS_MNIST],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_without_shared_the_tests_fetch_verified_mnist_once_into_the_cache(tmp_path, mirror):
    url, served = mirror
    first = _pytest_without_shared(tmp_path, url)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert " passed" in first.stdout and "skipped" not in first.stdout and "error" not in first.stdout
    # Each file came from the mirror once, and the cache holds it verified (uncompressed, known sha256).
    assert sorted(path.lstrip("/").removesuffix(".gz") for path in served) == sorted(
        spec.name for spec in sources.MNIST_FILES.values())
    assert sources.cached_files(str(tmp_path / "cache")) is not None

    served.clear()
    second = _pytest_without_shared(tmp_path, url)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert served == []  # once: the second session reads the cache


def test_a_mirror_serving_a_wrong_file_is_refused_by_name(tmp_path, mirror, mnist_dir):
    """The chain verifies what a mirror serves: a file with the wrong content never reaches the
    cache, and the next mirror is tried."""
    url, _ = mirror
    bad = tmp_path / "bad-mirror"
    bad.mkdir()
    for spec in sources.MNIST_FILES.values():
        good = mnist_file(mnist_dir, spec.name)
        (bad / good.name).write_bytes(good.read_bytes())
    (bad / "t10k-labels-idx1-ubyte.gz").unlink(missing_ok=True)
    (bad / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(10))
    cache = tmp_path / "cache"
    with serving(bad) as (bad_url, _):
        with pytest.raises(sources.SourceError, match=r"t10k-labels-idx1-ubyte: sha256 \(uncompressed\) checksum"):
            sources._fetch_from_mirrors(str(cache), [bad_url])
        assert not (cache / "t10k-labels-idx1-ubyte").exists()
        sources._fetch_from_mirrors(str(cache), [bad_url, url])
    assert sources.cached_files(str(cache)) is not None
