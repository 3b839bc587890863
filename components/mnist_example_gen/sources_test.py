"""Fetching and verifying the four files: local folder, cache, http; bad files are refused by name."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import threading

import pytest

from components.mnist_example_gen import sources


def _assert_verified(paths):
    assert set(paths) == set(sources.MNIST_FILES)
    for key, path in paths.items():
        assert sources.file_digest(path, "sha256") == sources.MNIST_FILES[key].sha256


def test_folder_of_gz_files_then_cache(mnist_dir, tmp_path):
    cache = tmp_path / "cache"
    _assert_verified(sources.resolve_mnist(str(mnist_dir), str(cache)))
    assert sources.cached_files(str(cache)) is not None
    _assert_verified(sources.resolve_mnist("", str(cache)))  # no source: the cache is used
    assert not [f for f in os.listdir(cache) if f.endswith(".partial")]


def test_http_source(mnist_dir, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mnist_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _assert_verified(sources.resolve_mnist(url, str(tmp_path / "cache")))
    finally:
        server.shutdown()


def test_checksum_mismatch_names_the_file_and_caches_nothing(corrupt_source, tmp_path):
    bad = gzip.compress(b"\x00\x00\x08\x01" + bytes(100))
    folder = corrupt_source("train-labels-idx1-ubyte", b"")
    (folder / "train-labels-idx1-ubyte").unlink()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(bad)
    cache = tmp_path / "cache"
    with pytest.raises(sources.ChecksumError, match=r"train-labels-idx1-ubyte\.gz: md5 checksum mismatch"):
        sources.resolve_mnist(str(folder), str(cache))
    assert not (cache / "train-labels-idx1-ubyte").exists()
    assert not [f for f in os.listdir(cache) if f.endswith(".partial")]


def test_uncompressed_file_with_wrong_content(corrupt_source, tmp_path):
    folder = corrupt_source("t10k-labels-idx1-ubyte", b"\x00\x00\x08\x01" + bytes(10))
    with pytest.raises(sources.ChecksumError, match=r"t10k-labels-idx1-ubyte: sha256 \(uncompressed\)"):
        sources.resolve_mnist(str(folder), str(tmp_path / "cache"))


@pytest.mark.parametrize("content", [
    b"this is not gzip at all",
    gzip.compress(os.urandom(5000))[:2000],  # a truncated gzip stream
], ids=["not-gzip", "truncated-gzip"])
def test_unreadable_gzip_without_verification(corrupt_source, tmp_path, content):
    folder = corrupt_source("t10k-images-idx3-ubyte", b"")
    (folder / "t10k-images-idx3-ubyte").unlink()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(content)
    with pytest.raises(sources.SourceError, match=r"t10k-images-idx3-ubyte\.gz: not a readable gzip file"):
        sources.resolve_mnist(str(folder), str(tmp_path / "cache"), verify=False)


def test_missing_file_and_missing_folder(corrupt_source, tmp_path):
    folder = corrupt_source("train-images-idx3-ubyte", b"")
    (folder / "train-images-idx3-ubyte").unlink()
    with pytest.raises(sources.SourceError, match="has neither train-images-idx3-ubyte.gz nor"):
        sources.resolve_mnist(str(folder), str(tmp_path / "cache"))
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.resolve_mnist(str(tmp_path / "nowhere"), str(tmp_path / "cache"))
