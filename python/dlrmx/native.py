"""libdlrmx, the native kernels, loaded with ctypes through their C ABI (csrc/dlrmx.h).

The library is built without torch and without Python, so one build runs under any torch and any
Python 3: the torch ops around it are defined in Python (dlrmx.native_ops). torch is imported
first so that the library's libgomp.so.1 is the one torch already loaded (one OpenMP thread pool
for both). `call(fn, ...)` runs a C function and raises its error as the Python exception of the
same kind (TypeError, ValueError, IndexError, ...), with the library's message.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch  # first: its libgomp.so.1 serves the library too

if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 4):
    raise ImportError(f"dlrmx needs torch >= 2.4 (torch.library's register_fake), found "
                      f"torch {torch.__version__}")

ABI_VERSION = 2  # csrc/dlrmx.h DLRMX_ABI_VERSION
MIN_TORCH = "2.4"  # pyproject.toml: torch.library's register_fake and get_ctx
LIBRARY = "libdlrmx.so"

REBUILD = ("rebuild dlrmx: `pip install --force-reinstall <dlrmx source>` "
           "(or `bash ci/setup.sh` in a checkout)")

_ERRORS = {1: TypeError, 2: ValueError, 3: IndexError, 4: RuntimeError, 5: MemoryError}


class Status(ctypes.Structure):
    _fields_ = [("message", ctypes.c_char * 1024)]


def library_path() -> Path:
    """Where libdlrmx.so is: beside this file (wheels, sdists) or in an editable install's
    build tree (the package's other path entries)."""
    import dlrmx

    for entry in dlrmx.__path__:
        path = Path(entry) / LIBRARY
        if path.exists():
            return path
    raise ImportError(f"dlrmx's native library {LIBRARY} is missing from {list(dlrmx.__path__)}: "
                      + REBUILD)


def _load() -> ctypes.CDLL:
    path = library_path()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise ImportError(f"dlrmx's native library {path} did not load: {e}; " + REBUILD) from e
    lib.dlrmx_abi_version.restype = ctypes.c_int32
    found = lib.dlrmx_abi_version()
    if found != ABI_VERSION:
        raise ImportError(f"dlrmx's native library {path} has C ABI version {found}, but this "
                          f"Python package expects {ABI_VERSION}: " + REBUILD)
    return lib


lib = _load()
_local = threading.local()  # one Status per thread: calls release the GIL


def status() -> Status:
    try:
        return _local.status
    except AttributeError:
        _local.status = Status()
        return _local.status


def call(fn, *args) -> None:
    """fn(*args, status), raising the library's error (if any) as a Python exception."""
    st = status()
    code = fn(*args, st)
    if code:
        raise _ERRORS.get(code, RuntimeError)(st.message.decode(errors="replace"))


def declare(name: str, *argtypes) -> object:
    """The C function `name` with its argument types (a trailing Status* added) and int result."""
    fn = getattr(lib, name)
    fn.argtypes = [*argtypes, ctypes.POINTER(Status)]
    fn.restype = ctypes.c_int
    return fn


_isa_names = declare("dlrmx_isa_names", ctypes.c_int32, ctypes.c_char_p, ctypes.c_int64)
_set_isa = declare("dlrmx_set_isa", ctypes.c_char_p)
lib.dlrmx_advise_huge_pages.argtypes = [ctypes.c_void_p, ctypes.c_int64]
lib.dlrmx_advise_huge_pages.restype = ctypes.c_int


def isa_names(which: int) -> list[str]:
    """0: compiled in; 1: supported by this CPU; 2: the active level (a one-item list)."""
    buf = ctypes.create_string_buffer(256)
    call(_isa_names, which, buf, len(buf))
    return buf.value.decode().split(",")


def set_isa(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"ISA level must be a str, got {type(name).__name__}")
    call(_set_isa, name.encode())


def advise_huge_pages(t: torch.Tensor) -> bool:
    """Back a (not yet touched) tensor's memory with transparent huge pages where possible."""
    if not (t.is_cpu and t.layout is torch.strided and t.is_contiguous()):
        raise TypeError("advise_huge_pages needs a contiguous CPU tensor")
    return bool(lib.dlrmx_advise_huge_pages(t.data_ptr(), t.numel() * t.element_size()))

