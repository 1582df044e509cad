"""Fixtures: the guests built from the repository's guests/ (as the Rust tests use them) and
pools with two workers."""

import subprocess
from pathlib import Path

import pytest

import wasmpool

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "guests" / "target" / "wasm32-wasip1" / "release"


def guest(name: str) -> Path:
    path = GUESTS / f"{name}.wasm"
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: build the guests with "
            "`cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1`"
        )
    return path


@pytest.fixture
def pool():
    with wasmpool.Pool(2, timeout=10.0) as p:
        yield p


@pytest.fixture
def math(pool):
    return pool.load(guest("math"))


@pytest.fixture
def hostile(pool):
    return pool.load(guest("hostile"))


@pytest.fixture
def wordcount(pool):
    return pool.load(guest("wordcount"))


@pytest.fixture(scope="session")
def transform_wasm(tmp_path_factory) -> Path:
    """guests/c/transform.c as a WASI command (scripts/wasi-cc, as the Rust tests build it)."""
    out = tmp_path_factory.mktemp("c") / "transform.wasm"
    subprocess.run(
        [str(ROOT / "scripts" / "wasi-cc"), str(out), str(ROOT / "guests" / "c" / "transform.c")],
        check=True,
    )
    return out
