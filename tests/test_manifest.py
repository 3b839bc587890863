"""The signed manifest on real files and keys: every way a registry writer could change a version's
files (a changed file, an added one, a removed one, a symbolic link, an edited manifest, another
key's signature) is refused in one line naming the version and the file; the pusher's own files
verify. And at the head of a run: a consistent tamper of a registered champion (its last layer
negated and re-saved, every TensorFlow checksum valid) scores silently unprotected, and is refused
by ChampionResolver before anything is scored."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from components import examples as example_data
from components.registry import MlflowRegistry, embedded_uri
from conftest import resolve_champion
from tests.serving_helpers import tamper_weights
from trainers import loader, manifest

WHAT = "mnist-digits version 7"


@pytest.fixture
def signed(tmp_path):
    folder = tmp_path / "signed"
    (folder / "model" / "variables").mkdir(parents=True)
    (folder / "model" / "saved_model.pb").write_bytes(os.urandom(256))
    (folder / "model" / "variables" / "data").write_bytes(os.urandom(1024))
    (folder / "identity.json").write_text("{}")
    private, public = manifest.generate_key_pair()
    manifest.sign(str(folder), private)
    return folder, private, public


def _refusal(folder, public) -> str:
    with pytest.raises(manifest.ManifestError) as refused:
        manifest.verify(str(folder), public, WHAT)
    return str(refused.value)


def test_the_pushers_files_verify(signed):
    folder, _, public = signed
    files = manifest.verify(str(folder), public, WHAT)
    assert set(files) == {"model/saved_model.pb", "model/variables/data", "identity.json"}


@pytest.mark.parametrize("change, expected", [
    (lambda f: (f / "model/variables/data").write_bytes(b"negated"), r"file model/variables/data was changed since"),
    (lambda f: (f / "model/extra.py").write_text("import os"), r"file model/extra\.py is not one of the signed files"),
    (lambda f: (f / "identity.json").unlink(), r"file identity\.json is signed but missing"),
    (lambda f: os.symlink("/etc/passwd", f / "model/link"), r"a symbolic link among the model's files"),
], ids=["changed", "added", "removed", "symlink"])
def test_a_changed_folder_is_refused_naming_the_file(signed, change, expected):
    folder, _, public = signed
    change(folder)
    assert re.search(expected, _refusal(folder, public))


def test_an_edited_manifest_or_another_keys_signature_is_refused(signed):
    folder, _, public = signed
    signature = folder.parent / manifest.SIGNATURE_FILE
    record = json.loads(signature.read_text())
    # A registry writer changes a file and rewrites its digest in the manifest: the signature no longer fits.
    (folder / "model/variables/data").write_bytes(b"negated")
    record["manifest"]["files"]["model/variables/data"] = manifest.file_sha256(str(folder / "model/variables/data"))
    signature.write_text(json.dumps(record))
    assert "its manifest's signature does not verify with the key" in _refusal(folder, public)
    # ... or re-signs everything with a key of their own.
    other, _ = manifest.generate_key_pair()
    manifest.sign(str(folder), other)
    assert "its manifest's signature does not verify" in _refusal(folder, public)
    signature.unlink()
    assert f"{WHAT}: no signed manifest" in _refusal(folder, public)


def test_a_consistently_tampered_champion_is_refused_before_it_is_scored(small_models, small_examples, tmp_path):
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, "mnist-tamper")
    version = registry.register(str(small_models["keras_model"] / "Format-Serving"), "keras", tags={}, metrics={})
    registry.promote(version.version)
    run = registry.client.get_run(version.run_id)
    export = run.info.artifact_uri.removeprefix("file://") + "/signed/model/artifacts/model_dir"
    images, labels = example_data.load_split(small_examples, "test")
    before = float((loader.predict_in_batches(loader.load_predictor(export)[0], images).argmax(1) == labels).mean())
    tamper_weights(export, shift=-50.0)  # class 0 almost never wins: a valid SavedModel, other answers
    after = loader.predict_in_batches(loader.load_predictor(export)[0], images)  # unprotected: loads, scores
    assert np.isfinite(after).all() and float((after.argmax(1) == labels).mean()) < before
    with pytest.raises(manifest.ManifestError, match=rf"^mnist-tamper version {version.version}: file "
                                                     r"model/artifacts/model_dir/.* was changed since it was signed"):
        resolve_champion(uri, "mnist-tamper", tmp_path / "resolved")
