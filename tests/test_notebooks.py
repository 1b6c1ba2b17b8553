"""Execute every notebook of the book at the smoke profile (slow; CI runs them via `make smoke-book`)."""

import json
import os
from pathlib import Path

import pytest

from gca import book

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("path", book.toc_notebooks(ROOT))
def test_notebook_executes_at_smoke_profile(path, tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("GCA_FIGURE_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = tmp_path / Path(path).name
    pm.execute_notebook(str(ROOT / path), str(out), parameters={"profile": "smoke", "seed": 0},
                        kernel_name="python3", cwd=str((ROOT / path).parent), progress_bar=False)
    nb = json.loads(out.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    for sidecar in (tmp_path / "figures").glob("*.json"):
        rec = json.loads(sidecar.read_text())
        assert rec["notebook"] == path and rec["parameters"]["profile"] == "smoke" and rec["seed"] == 0
