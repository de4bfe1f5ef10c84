"""Shared test helpers: where the published-format fixtures live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# ../shared/compat beside the checkout (DESIGN section 6), or S2S_COMPAT_DIR.
COMPAT = Path(os.environ.get("S2S_COMPAT_DIR", Path(__file__).resolve().parents[2] / "shared" / "compat"))


def compat_file(name: str) -> Path:
    """A fixture file of ../shared/compat. Missing: a failure under CI (CI always has shared/), else a skip."""
    path = COMPAT / name
    if not path.is_file():
        message = f"{path} not found (set S2S_COMPAT_DIR to the folder holding the published-format fixtures)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
