"""Checks the pipeline image from the inside; run it in the built image:

    docker run --rm IMAGE python /pipeline/infra/image_check.py

Exits 1 with one line per problem (`PROBLEM: ...`), else prints a short summary. Checks:
  * every installed distribution has exactly the version of requirements.lock or
    infra/requirements-tf-cuda.lock, every locked one (whose markers apply) is installed, nothing
    else is (pip, setuptools, wheel aside), `pip check` is clean, and no two distributions install
    the same file with different contents (e.g. CUDA 12 and CUDA 13 wheels under site-packages/nvidia:
    nvidia-nccl-cu12 would overwrite torch's libnccl.so.2); differing C headers (include/) are listed;
  * it runs as a non-root user, with the code and the KFP entrypoint importable
    (tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor, and `system` from infra/kfp_types);
  * each framework finds the CUDA libraries it was built for: PyTorch's torch.version.cuda (13.x) and
    cuDNN 9 against the nvidia CUDA 13 wheels; TensorFlow's tf.sysconfig.get_build_info() (CUDA 12.3,
    cuDNN 8) against the cu12 wheels, in the directories its own RUNPATH names
    (site-packages/nvidia/*/lib); every one of those libraries is dlopen()ed (no driver needed for that).
No GPU is needed. On a GPU node it also reads the driver's CUDA version: the CUDA 13 wheels need an
NVIDIA driver >= 580 (TensorFlow's CUDA 12.3 needs >= 525).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata as md
import json
import os
import platform
import pwd
import re
import struct
import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path

# TensorFlow 2.16 logs harmless "Unable to register cuDNN factory" errors at import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=FutureWarning)  # google-api-core on Python 3.10

try:
    from packaging.markers import Marker
    from packaging.version import Version
except ImportError:  # pragma: no cover - pip always vendors it
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.version import Version

MIN_DRIVER_CUDA13 = 580  # NVIDIA driver branch that CUDA 13.0 needs (CUDA 12.x: 525)
MIN_DRIVER_CUDA12 = 525
HERE = Path(__file__).resolve().parent
LOCKS = [HERE / "requirements.lock", HERE / "requirements-tf-cuda.lock"]
UNLOCKED_OK = {"pip", "setuptools", "wheel"}
SITE = Path(md.distribution("tensorflow").locate_file("")).resolve()

# (soname, distribution that must provide it, loaded by the framework itself), dlopen order:
# dependencies first. The framework's own libraries must find the "direct" ones through their
# RUNPATH; the others are needed by those libraries (found through the libraries' own RUNPATH, e.g.
# cuSPARSE -> nvJitLink) or loaded lazily (cuDNN -> NVRTC), so they must only be present and load.
TORCH_CUDA_LIBS = [
    ("libcudart.so.13", "nvidia-cuda-runtime", True), ("libnvJitLink.so.13", "nvidia-nvjitlink", True),
    ("libcublasLt.so.13", "nvidia-cublas", True), ("libcublas.so.13", "nvidia-cublas", True),
    ("libcufft.so.12", "nvidia-cufft", True), ("libcurand.so.10", "nvidia-curand", True),
    ("libcusparse.so.12", "nvidia-cusparse", True), ("libcusolver.so.12", "nvidia-cusolver", True),
    ("libcudnn.so.9", "nvidia-cudnn-cu13", True), ("libnccl.so.2", "nvidia-nccl-cu13", True),
    ("libcusparseLt.so.0", "nvidia-cusparselt-cu13", True), ("libnvrtc.so.13", "nvidia-cuda-nvrtc", True),
    ("libcupti.so.13", "nvidia-cuda-cupti", True),
]
TF_CUDA_LIBS = [
    ("libcudart.so.12", "nvidia-cuda-runtime-cu12", True), ("libnvJitLink.so.12", "nvidia-nvjitlink-cu12", False),
    ("libcublasLt.so.12", "nvidia-cublas-cu12", True), ("libcublas.so.12", "nvidia-cublas-cu12", True),
    ("libcufft.so.11", "nvidia-cufft-cu12", True), ("libcurand.so.10", "nvidia-curand-cu12", False),
    ("libcusparse.so.12", "nvidia-cusparse-cu12", True), ("libcusolver.so.11", "nvidia-cusolver-cu12", True),
    ("libcudnn.so.8", "nvidia-cudnn-cu12", True), ("libnvrtc.so.12", "nvidia-cuda-nvrtc-cu12", False),
    ("libcupti.so.12", "nvidia-cuda-cupti-cu12", True),
    # NCCL: the one libnccl.so.2 of requirements.lock's nvidia-nccl-cu13 (2.30), used by both
    # frameworks; nvidia-nccl-cu12 would overwrite it (see infra/requirements-tf-cuda.in).
    ("libnccl.so.2", "nvidia-nccl-cu13", True),
]
CUDA_SONAME = re.compile(r"^lib(cu|nv|nccl)")  # NVIDIA's libraries, not libc & co.
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1"}  # come with the driver, not with the image

problems: list[str] = []
info: dict[str, object] = {}


def problem(message: str) -> None:
    problems.append(message)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    """name -> version of every lock entry whose environment marker holds here."""
    pins: dict[str, str] = {}
    for lock in LOCKS:
        if not lock.exists():
            problem(f"{lock} is missing from the image")
            continue
        text = re.sub(r"\\\n\s*", " ", lock.read_text())
        for line in text.splitlines():
            m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^-][^#]*?))?\s*(?:--hash|#|$)", line)
            if not m:
                continue
            name, version, marker = canonical(m.group(1)), m.group(2), m.group(3)
            if marker and not Marker(marker.strip()).evaluate():
                continue
            if name in pins and pins[name] != version:
                problem(f"{name} is locked twice: {pins[name]} and {version}")
            pins[name] = version
    return pins


def _names(lock: Path) -> set[str]:
    if not lock.exists():
        return set()
    return {canonical(n) for n in re.findall(r"^([A-Za-z0-9_.\-]+)==", lock.read_text(), re.M)}


def check_distributions() -> dict[str, md.Distribution]:
    pins = locked()
    installed: dict[str, md.Distribution] = {}
    for dist in md.distributions():
        name = canonical(dist.metadata["Name"])
        if name in installed:
            problem(f"{name} is installed twice ({installed[name].version} and {dist.version})")
        installed[name] = dist
    for name, dist in sorted(installed.items()):
        if name in UNLOCKED_OK:
            continue
        if name not in pins:
            problem(f"{name}=={dist.version} is installed but in no lock")
        elif Version(dist.version) != Version(pins[name]):
            problem(f"{name}=={dist.version} is installed, the lock says {pins[name]}")
    for name in sorted(set(pins) - set(installed)):
        problem(f"{name}=={pins[name]} is locked but not installed")
    info["distributions"] = (f"{len(installed)} installed, {len(pins)} locked "
                             f"({', '.join(f'{p.name} {sum(1 for n in pins if n in _names(p))}' for p in LOCKS)})")

    pip_check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if pip_check.returncode:
        for line in (pip_check.stdout + pip_check.stderr).strip().splitlines():
            problem(f"pip check: {line}")

    # The same file from two distributions: the second install overwrote the first's.
    owners: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, dist in installed.items():
        for f in dist.files or []:
            if f.suffix != ".pyc":
                owners[str(f)].append((name, f.hash.value if f.hash else ""))
    shared = {path: who for path, who in owners.items() if len(who) > 1}
    headers = []
    for path, who in sorted(shared.items()):
        if len({h for _, h in who}) > 1:
            if "/include/" in path:  # C headers: used to compile against, never loaded at run time
                headers.append(f"{path} ({', '.join(n for n, _ in who)})")
            else:
                problem(f"{path} is installed by {', '.join(n for n, _ in who)} with different contents")
    same = len(shared) - len(headers)
    info["files of several distributions"] = (f"{same} identical (e.g. nvidia/__init__.py), {len(headers)} "
                                              f"differing headers, last install wins: {'; '.join(headers) or '-'}")
    return installed


def check_user_and_code() -> None:
    uid = os.geteuid()
    info["user"] = f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    if uid == 0:
        problem("runs as root")
    if not os.access("/tmp/mnist-cache", os.W_OK):
        problem("/tmp/mnist-cache is not writable")
    for module in ("tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor", "system",
                   "components.bakeoff_evaluator.kfp_artifacts"):
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            problem(f"import {module}: {type(e).__name__}: {e}")
    info["code revision"] = os.environ.get("CODE_REVISION", "(unset)")


def elf_dynamic(path: Path) -> tuple[list[str], list[str]]:
    """(DT_NEEDED sonames, DT_RUNPATH or else DT_RPATH entries) of an ELF64 little-endian object."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return [], []
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        loads, dynamic = [], None
        for i in range(phnum):
            p_type, _, offset, vaddr, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
            if p_type == 1:  # PT_LOAD
                loads.append((vaddr, offset, filesz))
            elif p_type == 2:  # PT_DYNAMIC
                dynamic = (offset, filesz)
        if dynamic is None:
            return [], []
        f.seek(dynamic[0])
        data = f.read(dynamic[1])
        entries = []
        for i in range(0, len(data) - 15, 16):
            tag, value = struct.unpack_from("<qQ", data, i)
            if tag == 0:
                break
            entries.append((tag, value))
        strtab = next((v for t, v in entries if t == 5), None)  # DT_STRTAB (an address)
        base = next((off - va + strtab for va, off, size in loads
                     if strtab is not None and va <= strtab < va + size), None)
        if base is None:
            return [], []

        def string(offset: int) -> str:
            f.seek(base + offset)
            return f.read(4096).split(b"\0", 1)[0].decode(errors="replace")

        needed = [string(v) for t, v in entries if t == 1]
        runpath = [string(v) for t, v in entries if t == 29] or [string(v) for t, v in entries if t == 15]
        return needed, [d for entry in runpath for d in entry.split(":") if d]


def search_path(path: Path) -> list[Path]:
    """The directories the dynamic linker searches for what `path` needs or dlopen()s by soname."""
    return [Path(d.replace("$ORIGIN", str(path.parent))).resolve() for d in elf_dynamic(path)[1]]


def resolve(soname: str, dirs: list[Path]) -> Path | None:
    return next(((d / soname).resolve() for d in dirs if (d / soname).exists()), None)


def unresolved_needs(path: Path) -> list[str]:
    """NVIDIA libraries that `path` links (DT_NEEDED) but cannot find through its own RUNPATH."""
    dirs = search_path(path)
    return [n for n in elf_dynamic(path)[0]
            if CUDA_SONAME.match(n) and n not in DRIVER_LIBS and resolve(n, dirs) is None]


def find_lib(soname: str, dist: md.Distribution) -> Path | None:
    for f in dist.files or []:
        if f.name == soname:
            return Path(dist.locate_file(f)).resolve()
    return None


def dlopen_all(paths: list[Path]) -> dict[str, str]:
    """dlopen()s the libraries in order, RTLD_GLOBAL, in a fresh process (one CUDA major per process)."""
    code = (
        "import ctypes, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        ctypes.CDLL(p, mode=ctypes.RTLD_GLOBAL); out[p] = 'ok'\n"
        "    except OSError as e:\n"
        "        out[p] = str(e)\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True)
    if run.returncode:
        return {str(p): f"dlopen process failed: {run.stderr.strip()[-300:]}" for p in paths}
    return json.loads(run.stdout)


def check_libs(framework: str, package_dir: Path, libs: list[tuple[str, str, bool]],
               installed: dict[str, md.Distribution]) -> None:
    """The framework's libraries whose RUNPATH names site-packages/nvidia/*/lib find every CUDA library
    it was built for, each from the distribution that should provide it; all of them dlopen()."""
    carriers = [so for so in sorted(package_dir.rglob("*.so*"))
                if so.is_file() and any("nvidia" in d for d in elf_dynamic(so)[1])]
    dirs = list(dict.fromkeys(d for so in carriers for d in search_path(so) if "nvidia" in str(d) and d.is_dir()))
    if not carriers:
        problem(f"{framework}: none of its libraries names site-packages/nvidia/*/lib in its RUNPATH")
    info[f"{framework} loads CUDA from"] = ", ".join(
        sorted({str(d.relative_to(SITE)) for d in dirs if d.is_relative_to(SITE)}))
    for so in carriers:
        for need in unresolved_needs(so):
            problem(f"{framework}: {so.relative_to(SITE)} needs {need}, not found through its RUNPATH")
    found: list[Path] = []
    for soname, dist_name, direct in libs:
        dist = installed.get(dist_name)
        if dist is None:
            problem(f"{framework}: {dist_name} (for {soname}) is not installed")
            continue
        path = find_lib(soname, dist)
        if path is None:
            problem(f"{framework}: {dist_name} {dist.version} has no {soname}")
            continue
        found.append(path)
        if direct and resolve(soname, dirs) != path:
            problem(f"{framework}: {soname} resolves to {resolve(soname, dirs)} through its RUNPATH, "
                    f"not to {path} ({dist_name} {dist.version})")
        for need in unresolved_needs(path):
            problem(f"{framework}: {path.relative_to(SITE)} needs {need}, not found through its RUNPATH")
    bad = {p: r for p, r in dlopen_all(found).items() if r != "ok"}
    for p, reason in bad.items():
        problem(f"{framework}: dlopen {p}: {reason}")
    info[f"{framework} CUDA libraries"] = (f"{len(found)} of {len(libs)} found, "
                                          f"{len(found) - len(bad)} dlopen() without a driver")


def check_torch(installed: dict[str, md.Distribution]) -> None:
    import torch

    cuda = torch.version.cuda
    info["torch"] = f"{torch.__version__}, built for CUDA {cuda}"
    if not cuda:
        problem(f"torch {torch.__version__} is a CPU-only build")
        return
    runtime = installed.get("nvidia-cuda-runtime")
    if runtime is None or Version(runtime.version).release[:1] != Version(cuda).release[:1] \
            or Version(runtime.version).release[:2] < Version(cuda).release[:2]:
        problem(f"torch is built for CUDA {cuda}, nvidia-cuda-runtime is "
                f"{runtime.version if runtime else 'missing'}")
    check_libs("torch", Path(torch.__file__).parent, TORCH_CUDA_LIBS, installed)
    cudnn_dist = installed.get("nvidia-cudnn-cu13")
    try:
        compiled = torch._C._cudnn.getCompileVersion()  # (major, minor, patch)
        loaded = torch.backends.cudnn.version()  # e.g. 92400, from the library it loaded
        info["torch cuDNN"] = (f"built for {'.'.join(map(str, compiled))}, loads {loaded}, "
                               f"nvidia-cudnn-cu13 {cudnn_dist and cudnn_dist.version}")
        if cudnn_dist is None or Version(cudnn_dist.version).major != compiled[0] or loaded // 10000 != compiled[0]:
            problem(f"torch is built for cuDNN {compiled}, loads {loaded}, "
                    f"nvidia-cudnn-cu13 is {cudnn_dist.version if cudnn_dist else 'missing'}")
    except Exception as e:  # noqa: BLE001
        problem(f"torch cuDNN version: {type(e).__name__}: {e}")


def check_tensorflow(installed: dict[str, md.Distribution]) -> None:
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    cuda, cudnn = build.get("cuda_version"), build.get("cudnn_version")
    info["tensorflow"] = f"{tf.__version__}, built for CUDA {cuda}, cuDNN {cudnn}"
    if not build.get("is_cuda_build"):
        problem(f"tensorflow {tf.__version__} is not a CUDA build")
        return
    runtime = installed.get("nvidia-cuda-runtime-cu12")
    if runtime is None or Version(runtime.version).release[:2] != Version(cuda).release[:2]:
        problem(f"tensorflow is built for CUDA {cuda}, nvidia-cuda-runtime-cu12 is "
                f"{runtime.version if runtime else 'missing'}")
    cudnn_dist = installed.get("nvidia-cudnn-cu12")
    if cudnn_dist is None or str(Version(cudnn_dist.version).major) != str(cudnn).split(".")[0]:
        problem(f"tensorflow is built for cuDNN {cudnn}, nvidia-cudnn-cu12 is "
                f"{cudnn_dist.version if cudnn_dist else 'missing'}")
    check_libs("tensorflow", Path(tf.__file__).parent, TF_CUDA_LIBS, installed)
    ptxas = SITE / "nvidia" / "cuda_nvcc" / "bin" / "ptxas"
    if not os.access(ptxas, os.X_OK):
        problem(f"tensorflow (XLA): no executable {ptxas}")


def check_driver() -> None:
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        info["driver"] = (f"none (no GPU here; CUDA 13 wheels need driver >= {MIN_DRIVER_CUDA13}, "
                          f"CUDA 12.3 >= {MIN_DRIVER_CUDA12})")
        return
    version = ctypes.c_int()
    libcuda.cuDriverGetVersion(ctypes.byref(version))
    major, minor = version.value // 1000, version.value % 1000 // 10
    info["driver"] = f"supports CUDA {major}.{minor} (needs 13.0: driver >= {MIN_DRIVER_CUDA13})"
    if major < 13:
        problem(f"the NVIDIA driver supports CUDA {major}.{minor}: torch's CUDA 13 wheels need driver "
                f">= {MIN_DRIVER_CUDA13}")


def main() -> int:
    info["python"] = f"{platform.python_version()} ({sys.executable})"
    if sys.version_info[:2] != (3, 10):
        problem(f"python {platform.python_version()}, not 3.10")
    installed = check_distributions()
    check_user_and_code()
    for check in (check_torch, check_tensorflow):
        try:
            check(installed)
        except Exception as e:  # noqa: BLE001
            problem(f"{check.__name__}: {type(e).__name__}: {e}")
    check_driver()
    if problems:
        for p in problems:
            print(f"PROBLEM: {p}")
        print(f"image_check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    print("image_check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
