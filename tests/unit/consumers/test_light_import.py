"""The light install: importing the SDK pulls in neither ccxt, aiohttp nor numpy."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_does_not_load_optional_dependencies() -> None:
    code = (
        "import sys, marketbus.consumers, marketbus.consumers.sync;"
        "print(sorted(m for m in ('ccxt', 'aiohttp', 'numpy', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


LIGHT_INSTALL = """
import importlib, json, pkgutil, sys
sys.modules["ccxt"] = None  # what `import ccxt` finds on the light install: nothing
sys.modules["ccxt.pro"] = None
imported = []
for package in ("marketbus.shared", "marketbus.consumers"):
    module = importlib.import_module(package)
    imported.append(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
producer = sorted(m for m in sys.modules if m.split(".")[:2] == ["marketbus", "producer"])
print(json.dumps({"imported": imported, "producer": producer}))
"""


def test_every_shared_and_consumer_module_imports_without_ccxt_or_the_producer() -> None:
    out = subprocess.run(
        [sys.executable, "-c", LIGHT_INSTALL], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["producer"] == []
    assert {
        "marketbus.shared.config",
        "marketbus.shared.connection",
        "marketbus.shared.cluster",
        "marketbus.shared.urls",
        "marketbus.consumers.cluster",
        "marketbus.consumers.subscriber",
        "marketbus.consumers.transport",
    } <= set(report["imported"])
