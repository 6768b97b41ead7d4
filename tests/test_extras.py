"""The base install runs without Dask and matplotlib; a command that needs an
extra says which one (exit 2) before it runs anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pyresv._extras import EXTRAS, MissingExtra, require
from pyresv.tools.cli import main


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    # sys.modules[name] = None makes both find_spec and import fail, as on a base install.
    for m in modules:
        for loaded in [k for k in sys.modules if k == m or k.startswith(m + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, m, None)


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    require("sweep", "x")  # installed here: no error
    _hide(monkeypatch, "tqdm")
    with pytest.raises(MissingExtra, match=r"^pyresv sweep needs the 'sweep' extra \(tqdm is not installed\): "
                                            r"pip install 'pyresv\[sweep\]'$") as info:
        require("sweep", "pyresv sweep")
    assert info.value.extra == "sweep" and info.value.name == "tqdm"


def test_every_extra_is_declared_in_pyproject() -> None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("pyproject.toml is not next to the tests (installed from an sdist)")
    import tomllib

    declared = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared)
    assert "dask" not in " ".join(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


@pytest.mark.parametrize(
    ("argv", "hidden", "extra"),
    [
        (["sweep", "--set", "controller.seed=1,2", "--workers", "0", "--out", "{tmp}/s.csv"], "distributed", "sweep"),
        (["size", "--workers", "2"], "distributed", "sweep"),
        (["simulate", "--out", "{tmp}/run"], "matplotlib", "plots"),
        (["demo", "--out", "{tmp}/demo"], "matplotlib", "plots"),
        (["report", "{tmp}/s.csv", "--out", "{tmp}/rep"], "matplotlib", "plots"),
    ],
)
def test_a_missing_extra_is_exit_2_before_any_work(
    argv: list[str], hidden: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _hide(monkeypatch, hidden)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    assert f"pip install 'pyresv[{extra}]'" in captured.err
    assert "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_base_commands_need_no_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _hide(monkeypatch, "distributed", "dask", "matplotlib", "tqdm")
    assert main(["simulate", "--json"]) == 0
    assert '"completed_ops"' in capsys.readouterr().out
