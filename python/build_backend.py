"""The PEP 517 backend of `pip install ./python`: maturin's, after one step of its own.

The wheel carries the `wasmpool` worker binary inside the package (`wasmpool/bin/wasmpool`):
the pool re-executes it for its workers and compile processes (re-executing the current
executable would start `python`). maturin builds only this crate's extension module, so
the binary is built here first, with `cargo build --release --bin wasmpool` of the
repository this directory sits in, into the same target dir (the workspace's `target/`, or
`$CARGO_TARGET_DIR`): wasmtime and the rest are compiled once for both, and a rebuild is
incremental. Everything else is maturin's own backend.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from maturin import *  # noqa: F401,F403  (the other PEP 517 hooks, unchanged)
from maturin import build_editable as _maturin_build_editable
from maturin import build_wheel as _maturin_build_wheel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# maturin's hooks run the `maturin` command; without build isolation (`pip install
# --no-build-isolation`) it sits beside this interpreter, which need not be on PATH.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def _build_worker() -> None:
    manifest = ROOT / "Cargo.toml"
    if not manifest.is_file():
        sys.exit(
            f"wasmpool: {manifest} not found: the Python package is built from a checkout of "
            "the wasmpool repository (pip install ./python)"
        )
    cargo = os.environ.get("CARGO", "cargo")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    command = [cargo, "build", "--release", "--locked", "--bin", "wasmpool", "--manifest-path", str(manifest)]
    print("wasmpool: building the worker program:", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    built = target / "release" / "wasmpool"
    dest = HERE / "wasmpool" / "bin" / "wasmpool"
    dest.parent.mkdir(exist_ok=True)
    same = dest.is_file() and dest.stat().st_mtime >= built.stat().st_mtime
    if not same:
        tmp = dest.with_name("wasmpool.tmp")
        shutil.copy2(built, tmp)
        os.chmod(tmp, 0o755)
        # The release profile keeps line tables (over 100 MB); the wheel needs none of it.
        strip = shutil.which("strip")
        if strip:
            subprocess.run([strip, "--strip-debug", str(tmp)], check=True)
        os.replace(tmp, dest)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _build_worker()
    return _maturin_build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _build_worker()
    return _maturin_build_editable(wheel_directory, config_settings, metadata_directory)
