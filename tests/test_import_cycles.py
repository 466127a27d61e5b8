"""``make lint``'s cycle check (tools/import_cycles.py) finds a planted circle, one hidden in a function too."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "tools" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_planted_cycle_fails_the_check_and_names_its_chain(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "planted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from planted import b\n")
    (pkg / "b.py").write_text("def late():\n    from planted import c  # hidden in a function\n")
    (pkg / "c.py").write_text("import planted.a\n")
    (pkg / "d.py").write_text("import planted.a\n")  # imports into the circle, not part of it
    monkeypatch.syspath_prepend(str(tmp_path))
    tool = _tool()
    found = tool.cycles("planted")
    assert len(found) == 1 and set(found[0]) == {"planted.a", "planted.b", "planted.c"}
    assert found[0][0] == found[0][-1]
    assert tool.main(["planted"]) == 1
    assert "import cycle: planted.a -> planted.b -> planted.c -> planted.a" in capsys.readouterr().out
    sys.modules.pop("planted", None)


def test_tunelab_has_no_import_cycle():
    assert _tool().cycles("tunelab") == []
