"""Reading MNIST's IDX files by record ranges, with errors that name the file and the problem.

torchvision's reader (`read_sn3_pascalvincent_tensor`) loads a whole file at once; the Beam
ingest needs ranges of records read independently by workers, so headers are parsed here and
records are read with numpy at computed offsets from the uncompressed files.
"""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np

from trainers.model_format import NUM_CLASSES

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IMAGE_SIDE = 28


class IdxFormatError(ValueError):
    """An IDX file that is not what MNIST's format says it must be."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclasses.dataclass(frozen=True)
class IdxHeader:
    path: str
    count: int
    header_size: int
    record_size: int  # bytes per record
    name: str = ""  # how errors name the file: the user's own file, where the records are a copy of it

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.path)


def shown_as(path: str, origin: str = "") -> str:
    """The file as errors name it: the user's file (path or URI) first, the copy read second."""
    return f"{origin} (read from its uncompressed copy {path})" if origin and origin != path else path


def read_header(path: str, kind: str, origin: str = "") -> IdxHeader:
    """Parses and checks the header of an `images` or `labels` IDX file, and its size. `origin`:
    the user's file that `path` is a copy of, which errors name."""
    shown = shown_as(path, origin)
    expected_magic, dims = (IMAGE_MAGIC, 3) if kind == "images" else (LABEL_MAGIC, 1)
    size = os.path.getsize(path)
    header_size = 4 + 4 * dims
    if size == 0:
        raise IdxFormatError(shown, "the file is empty")
    with open(path, "rb") as f:
        header = f.read(header_size)
    if header[:2] == b"\x1f\x8b":
        raise IdxFormatError(shown, "the file is still gzip-compressed; expected raw IDX bytes")
    if len(header) < header_size:
        raise IdxFormatError(shown, f"truncated header ({size} bytes, a {kind} header needs {header_size})")
    (magic,) = struct.unpack(">I", header[:4])
    if magic != expected_magic:
        other = "labels" if kind == "images" else "images"
        hint = f" (that is the magic of an {other} file: are the files swapped?)" if magic in (
            IMAGE_MAGIC, LABEL_MAGIC) else ""
        raise IdxFormatError(
            shown, f"wrong magic number 0x{magic:08x} for an {kind} file, expected 0x{expected_magic:08x}{hint}")
    shape = struct.unpack(f">{dims}I", header[4:header_size])
    if kind == "images" and tuple(shape[1:]) != (IMAGE_SIDE, IMAGE_SIDE):
        raise IdxFormatError(shown, f"images are {shape[1]}x{shape[2]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    count = shape[0]
    record_size = IMAGE_SIDE * IMAGE_SIDE if kind == "images" else 1
    expected_size = header_size + count * record_size
    if size != expected_size:
        problem = "truncated" if size < expected_size else "has trailing bytes"
        raise IdxFormatError(
            shown, f"{problem}: the header declares {count} records ({expected_size} bytes), the file has {size} bytes")
    return IdxHeader(path=path, count=count, header_size=header_size, record_size=record_size, name=shown)


def check_pair(images: IdxHeader, labels: IdxHeader) -> None:
    if images.count != labels.count:
        raise IdxFormatError(
            labels.name, f"{labels.count} labels but {images.name} has {images.count} images")


def read_records(header: IdxHeader, start: int, stop: int) -> np.ndarray:
    """Records [start, stop) as uint8: images [n, 28, 28] or labels [n]."""
    n = stop - start
    data = np.fromfile(header.path, dtype=np.uint8, count=n * header.record_size,
                       offset=header.header_size + start * header.record_size)
    if header.record_size == 1:
        return data
    return data.reshape(n, IMAGE_SIDE, IMAGE_SIDE)


def check_labels(path: str, labels: np.ndarray, first_index: int, num_classes: int = NUM_CLASSES) -> None:
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        i = int(bad[0])
        raise IdxFormatError(
            path, f"label {int(labels[i])} at record {first_index + i} is outside 0-{num_classes - 1}"
                  f" ({bad.size} such labels in records {first_index}-{first_index + len(labels) - 1})")
