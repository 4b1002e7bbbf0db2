"""The light install: importing the SDK pulls in neither ccxt, aiohttp nor numpy."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_load_optional_dependencies() -> None:
    code = (
        "import sys, marketbus.consumers, marketbus.consumers.sync;"
        "print(sorted(m for m in ('ccxt', 'aiohttp', 'numpy', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
