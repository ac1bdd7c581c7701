"""What this process may use of the machine."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the system has one (a container or
    ``taskset`` gives fewer than the machine has), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class _QuietTensorFlow:
    """A finder that imports TensorFlow with the process's stderr pointed at /dev/null, then hands the
    imported module to the import system: its native start-up lines (oneDNN, "Could not find cuda
    drivers", written before its logging is set up) would read like failures to a user."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        import importlib
        import importlib.util
        import sys

        sys.meta_path.remove(self)
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            module = importlib.import_module(name)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
        return importlib.util.spec_from_loader(name, _Imported(module))


class _Imported:
    """A loader whose module is already imported."""

    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


def quiet_tensorflow() -> None:
    """Silence TensorFlow's native logging before it loads (``--verbose`` leaves it alone)."""
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())
