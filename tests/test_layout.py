"""The module layout the architecture promises: errors.py is a leaf, and the predictors
(what serving and export will import) never import the training loop."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "seqlab"


def test_errors_is_a_leaf():
    tree = ast.parse((SRC / "errors.py").read_text(encoding="utf-8"))
    imported = [getattr(node, "module", None) or node.names[0].name
                for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert not [m for m in imported if m and m.startswith("seqlab")], imported


def test_predictors_do_not_import_training():
    code = ("import sys, seqlab.translate, seqlab.problems.classify, seqlab.problems.lm, "
            "seqlab.problems.tag, seqlab.problems.forecast; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('seqlab'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert {"seqlab.problems.lm", "seqlab.problems.tag",
            "seqlab.problems.forecast"} <= set(loaded)
    assert not {"seqlab.train", "seqlab.rundir", "seqlab.schedules"} & set(loaded), loaded
