"""Build the C++ CPU kernels in csrc/ at first use and cache the shared libraries.

A library is compiled once per source hash into the user's cache (`$MINDFORMERS_HF_KERNEL_CACHE`, else
`$XDG_CACHE_HOME/mindformers_hf/kernels`, else `~/.cache/mindformers_hf/kernels`). The file name carries a
hash of the sources, the compiler flags, the compiler's version and this CPU's instruction-set flags
(`-march=native`), so an edited kernel or another machine never loads a stale build. Each build writes a
temporary file and renames it into place, so concurrent processes never see a half-written library.

If no C++ compiler is found or a build fails, `library()` returns None after one warning, and the
registry falls back to the reference implementation.
"""
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading

from ..utils import logger, warn_once

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
HEADERS = ("common.h",)
# -ffast-math lets gcc vectorise expf through glibc's libmvec (the kernels avoid infinities for it);
# -fopenmp-simd honours `#pragma omp simd` without the OpenMP runtime (see csrc/common.h parallel_for).
FLAGS = ("-std=c++17", "-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-pthread", "-fPIC")
# Linked in a second step without -ffast-math: gcc (before 13) links crtfastmath.o into a -ffast-math shared
# library, whose constructor turns on flush-to-zero for the whole process once the library is loaded (the
# user's numpy included: subnormals became 0).
LINK_FLAGS = ("-shared", "-pthread")

_lock = threading.Lock()
_built = {}  # source name -> library path, or None after a failure (no retry within a process)


def cache_dir():
    explicit = os.environ.get("MINDFORMERS_HF_KERNEL_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mindformers_hf", "kernels")


def compiler():
    """The C++ compiler: $CXX, else g++, else c++; None if none is on PATH."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.machine()


def _build_key(name, cxx):
    digest = hashlib.sha256()
    for file_name in (name + ".cc",) + HEADERS:
        with open(os.path.join(CSRC, file_name), "rb") as f:
            digest.update(f.read())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    for part in (" ".join(FLAGS + LINK_FLAGS), version, _cpu_flags()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def library(name):
    """Path of the shared library built from csrc/<name>.cc, building it if needed; None if it cannot be built."""
    with _lock:
        if name in _built:
            return _built[name]
        _built[name] = path = _build(name)
        return path


def _build(name):
    cxx = compiler()
    if cxx is None:
        warn_once("No C++ compiler (g++/c++ or $CXX) found: the CPU fused kernels are unavailable and the plain "
                  "MindSpore reference ops are used instead (slower, same results).")
        return None
    try:
        key = _build_key(name, cxx)
        folder = cache_dir()
        path = os.path.join(folder, f"{name}-{key}.so")
        if os.path.isfile(path):
            return path
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=folder)
        os.close(fd)
        try:
            logger.info(f"Compiling the CPU kernel {name!r} into {folder} (once per source version)")
            obj = tmp[:-len(".so")] + ".o"
            for cmd in ([cxx, *FLAGS, "-I", CSRC, "-c", "-o", obj, os.path.join(CSRC, name + ".cc")],
                        [cxx, *LINK_FLAGS, "-o", tmp, obj]):
                result = subprocess.run(cmd, capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()[-2000:]}")
            os.replace(tmp, path)
        finally:
            for leftover in (tmp, tmp[:-len(".so")] + ".o"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        return path
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        warn_once(f"Building the CPU kernel {name!r} failed, so the reference op is used instead: {e}")
        return None


class CustomKernel:
    """A MindSpore `ops.Custom` AOT primitive for one function of a csrc/ library.

    `out_shape` / `out_dtype` are MindSpore's infer functions (input shapes / dtypes -> output ones);
    `bprop(*inputs, out, dout)` returns one gradient per input. The primitive (`.op`) is created by
    `available()`, which builds the library and creates every kernel of it. Implementations call `.op`, a
    plain attribute, because `ms.jit` traces through their code and cannot trace a lazy build.
    """

    _by_source = {}

    def __init__(self, source, func, out_shape, out_dtype, bprop=None):
        self.source, self.func = source, func
        self.out_shape, self.out_dtype, self.bprop = out_shape, out_dtype, bprop
        self.op = None
        CustomKernel._by_source.setdefault(source, []).append(self)

    def available(self):
        path = library(self.source)
        if path is None:
            return False
        if self.op is None:
            from mindspore import ops

            try:
                for kernel in CustomKernel._by_source[self.source]:
                    if kernel.op is None:
                        kernel.op = ops.Custom(f"{path}:{kernel.func}", out_shape=kernel.out_shape,
                                               out_dtype=kernel.out_dtype, func_type="aot", bprop=kernel.bprop)
            except (TypeError, ValueError, RuntimeError) as e:  # e.g. MS_CUSTOM_AOT_WHITE_LIST excludes the cache
                warn_once(f"MindSpore refused the CPU kernel library {path}, so the reference op is used: {e}")
                _built[self.source] = None
                return False
        return True
