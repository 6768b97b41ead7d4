"""The README works as written: its Python examples run, and every dotted
``pyresv`` name it mentions exists (a module, or an attribute of one)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
if not README.exists():  # pragma: no cover - tests run from an sdist without the README
    pytest.skip("README.md is not next to the tests", allow_module_level=True)
TEXT = README.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
_FILES = (".py", ".toml", ".csv", ".png", ".pyx", ".pxd", ".pyi")
NAMES = sorted(n for n in set(re.findall(r"\bpyresv(?:\.[A-Za-z_]\w*)+", TEXT)) if not n.endswith(_FILES))


def resolve(dotted: str) -> object:
    """Import the longest importable prefix of ``dotted``, then getattr the rest."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_readme_has_examples_and_names() -> None:
    assert len(BLOCKS) >= 2 and len(NAMES) >= 5


@pytest.mark.parametrize("name", NAMES)
def test_every_dotted_name_exists(name: str) -> None:
    resolve(name)


def test_resolve_can_fail() -> None:
    with pytest.raises(AttributeError):
        resolve("pyresv.sim.engine.no_such_thing")
    with pytest.raises(ModuleNotFoundError):
        resolve("nosuchpackage.x")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs(index: int, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
