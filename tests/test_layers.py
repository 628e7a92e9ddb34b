"""The import layers of docs/architecture.md, enforced: ``[tool.importlinter]`` in
pyproject.toml says which package may import which, and that no modules import each other in a
cycle. A new import that breaks either fails here with import-linter's report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(config: Path, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is installed but its lint-imports command is not on PATH")
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [exe, str(config), "--no-cache", "--no-logo"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_layers_and_acyclic_contracts_are_kept():
    result = lint_imports(ROOT / "pyproject.toml", ROOT)
    report = result.stdout + result.stderr
    assert result.returncode == 0 and "Contracts: 2 kept, 0 broken." in report, report


def test_a_function_level_upward_import_breaks_the_contract(tmp_path):
    """The check is not vacuous: an import hidden in a function body is still an import, and a
    lower layer importing a higher one (here: inside a cycle) is reported with file and line."""
    package = tmp_path / "layered"
    for name in ("metrics", "train"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "metrics" / "fid.py").write_text("def f():\n    from layered.train import loop\n")
    (package / "train" / "loop.py").write_text("from layered.metrics import fid\n")
    config = tmp_path / "pyproject.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "layered"\n\n'
        '[[tool.importlinter.contracts]]\nname = "layers"\ntype = "layers"\n'
        'containers = ["layered"]\nlayers = ["train", "metrics"]\n'
    )
    result = lint_imports(config, tmp_path, pythonpath=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "layered.metrics is not allowed to import layered.train" in result.stdout
    assert "layered.metrics.fid -> layered.train.loop (l.2)" in result.stdout
