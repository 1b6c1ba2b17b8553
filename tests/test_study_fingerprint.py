"""Code fingerprints (gca.study.fingerprint): what counts as a change of the code a result ran, and
what does not (docstrings, formatting, moving or renaming a function or its module)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gca.study import fingerprint as fpm
from gca.study.cache import check_result

ROOT = Path(__file__).resolve().parent.parent

MODULE_SRC = '''
"""A module."""
SCALE = 2


def used(x):
    """Doc."""
    return helper(x) * SCALE


def helper(x):
    return x + 1


def unused(x):
    return x - 1


class Thing:
    field = 3

    def method(self):
        return self.field
'''


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


# ------------------------------------------------------------------------------------------------
# The hash of one function
# ------------------------------------------------------------------------------------------------
def test_hashes_ignore_docstrings_comments_and_formatting(tmp_path):
    p = tmp_path / "m.py"
    _write(p, MODULE_SRC)
    before = fpm.entry_hashes(p)
    assert set(before) == {"used", "helper", "unused", "Thing.method"}
    _write(p, MODULE_SRC.replace('"""Doc."""', '"""Another doc, longer."""').replace(
        "return helper(x) * SCALE", "return helper(x)  *  SCALE  # a comment"))
    assert fpm.entry_hashes(p) == before


def test_hashes_do_not_depend_on_the_name_or_the_module(tmp_path):
    p, q = tmp_path / "m.py", tmp_path / "other.py"
    _write(p, MODULE_SRC)
    _write(q, MODULE_SRC.replace("def used(x)", "def renamed(x)"))
    a, b = fpm.entry_hashes(p, "pkg.m"), fpm.entry_hashes(q, "elsewhere.other")
    assert a["used"] == b["renamed"] and a["helper"] == b["helper"]
    # a recursive function that calls itself by its own name keeps its hash when renamed
    _write(p, "def f(n):\n    return 1 if n < 1 else f(n - 1)\n")
    _write(q, "def g(n):\n    return 1 if n < 1 else g(n - 1)\n")
    assert fpm.entry_hashes(p)["f"] == fpm.entry_hashes(q)["g"]


def test_hashes_localise_changes_and_cover_the_constants_read(tmp_path):
    p = tmp_path / "m.py"
    _write(p, MODULE_SRC)
    before = fpm.entry_hashes(p)
    _write(p, MODULE_SRC.replace("return x + 1", "return x + 2"))
    after = fpm.entry_hashes(p)
    assert after["helper"] != before["helper"]
    assert {k: v for k, v in after.items() if k != "helper"} == {k: v for k, v in before.items() if k != "helper"}
    _write(p, MODULE_SRC.replace("SCALE = 2", "SCALE = 3"))
    after = fpm.entry_hashes(p)
    assert after["used"] != before["used"]  # it reads SCALE
    assert after["helper"] == before["helper"] and after["unused"] == before["unused"]  # they do not
    _write(p, MODULE_SRC.replace("field = 3", "field = 4"))
    assert fpm.entry_hashes(p)["Thing.method"] != before["Thing.method"]  # a method covers its class's fields
    # a constant computed from another constant: the change reaches the reader transitively
    _write(p, MODULE_SRC.replace("SCALE = 2", "BASE = 1\nSCALE = BASE + 1"))
    one = fpm.entry_hashes(p)["used"]
    _write(p, MODULE_SRC.replace("SCALE = 2", "BASE = 2\nSCALE = BASE + 1"))
    assert fpm.entry_hashes(p)["used"] != one


IMPORT_TIME = '''
def build():
    return {"a": 1}


def later(x):
    return x


TABLE = build()
REGISTRY = {"later": later}


def reads_table():
    return TABLE["a"]


def reads_registry(name):
    return REGISTRY[name]
'''


def test_a_function_called_at_import_time_counts_a_function_only_referenced_does_not(tmp_path):
    p = tmp_path / "m.py"
    _write(p, IMPORT_TIME)
    before = fpm.entry_hashes(p)
    _write(p, IMPORT_TIME.replace('return {"a": 1}', 'return {"a": 2}'))
    after = fpm.entry_hashes(p)
    assert after["reads_table"] != before["reads_table"]  # TABLE's value was computed by build()
    assert after["reads_registry"] == before["reads_registry"]
    _write(p, IMPORT_TIME.replace("    return x\n", "    return -x\n"))
    after = fpm.entry_hashes(p)
    # later() runs only when called (then it is recorded itself): its edit leaves the reader alone
    assert after["reads_registry"] == before["reads_registry"] and after["later"] != before["later"]


# ------------------------------------------------------------------------------------------------
# Which modules count: one declaration, by dotted name, recursive
# ------------------------------------------------------------------------------------------------
def test_tracking_is_declared_by_dotted_name_and_recursive():
    assert fpm.is_tracked("gca.ot") and fpm.is_tracked("gca.losses.core") and fpm.is_tracked("gca.study.run")
    assert not fpm.is_tracked("gca.config") and not fpm.is_tracked("gca.provenance")
    # a name is never matched as a bare file name: a study module called config is tracked
    assert fpm.is_tracked("gca.study.config") and fpm.is_tracked("gca.data.config")
    assert fpm.is_tracked("gca.configuration")  # "gca.config" covers gca.config and gca.config.*, nothing else
    assert not fpm.is_tracked("torch.nn") and not fpm.is_tracked("gcax")
    with pytest.raises(TypeError):
        fpm.is_tracked("")


def test_every_declared_module_exists_and_every_module_is_classified():
    files = fpm._package_files()
    for name in fpm.UNTRACKED:
        assert name in files, f"UNTRACKED names {name}, which is not a module of gca (renamed?)"
    tracked = fpm.tracked_modules()
    assert {"gca.ot", "gca.train", "gca.eval", "gca.study.run"} <= set(tracked)
    for name in files:  # no module drops out silently: untracked only where declared
        assert name in tracked or any(name == u or name.startswith(u + ".") for u in fpm.UNTRACKED), name


def test_code_tracker_records_tracked_functions_only():
    from gca import provenance
    from gca.losses.targets import positive_index

    with fpm.CodeTracker() as tracker:
        provenance.config_hash({"a": 1})
        positive_index(3, "joint")
    fp = tracker.fingerprint()
    assert fp["format"] == fpm.FORMAT and fp["torch"] == fpm.torch_version()
    names = set(fp["functions"].values())
    assert "gca.losses.targets:positive_index" in names
    assert not any(n.startswith("gca.provenance:") for n in names)
    assert fpm.fingerprint_changes(fp) == []
    assert set(fp["functions"]) <= set(fpm.code_index())
    # what cannot be compared says why
    assert fpm.fingerprint_changes({**fp, "torch": "0.0"})[0].startswith("torch 0.0 ->")
    assert fpm.fingerprint_changes({}) == ["no code fingerprint recorded"]
    old = {"files": {"gca/ot.py": "0" * 16}, "functions": {"gca/ot.py::sinkhorn": "0" * 16}, "torch": "x"}
    assert "old format" in fpm.fingerprint_changes(old)[0]
    changed = {**fp, "functions": {**fp["functions"], "0" * 16: "gca.plans:gone"}}
    assert fpm.fingerprint_changes(changed) == ["gca.plans:gone changed or removed"]


def test_source_version_covers_nested_modules():
    files = fpm._package_files()
    assert any(name.count(".") >= 2 for name in files)  # e.g. gca.study.run: the walk is recursive
    assert len(fpm.source_version()) == 16


# ------------------------------------------------------------------------------------------------
# A cached result survives moving code and goes stale when the code it ran changes
# (a scratch copy of the package, imported by fresh interpreters)
# ------------------------------------------------------------------------------------------------
PROBE = '''
"""A function of a tracked module."""
SCALE = 3
OFFSET = SCALE + 1


def probe(x):
    """Doc."""
    return helper(x) * OFFSET


def helper(x):
    return x + 1
'''

MOVED_CONSTS = '''
"""Constants, moved here."""
SCALE = 3
'''

MOVED = '''
"""The same functions, moved to another module of a new subpackage and renamed."""
from gca.zz_pkg.consts import SCALE

OFFSET = SCALE + 1


def helper(x):
    # a comment, another order, another docstring
    return x + 1


def probe_renamed(x):
    """Renamed."""
    return helper(x) * OFFSET


def unrelated(y):
    return y
'''

RECORD = """
import json, sys
from importlib import import_module
from gca.study.cache import config_key, save_result
from gca.study.fingerprint import CodeTracker
fn = getattr(import_module(sys.argv[1]), sys.argv[2])
with CodeTracker() as tracker:
    assert fn(1) == 8
config = {"probe": 1}
key = config_key(config, None)
record = {"key": key, "config": config, "spec": {}, "metrics": {}, "code": tracker.fingerprint()}
save_result(record, f"{sys.argv[3]}/probe-{key}.json")
print(json.dumps(record["code"]))
"""

CHECK = """
import json, sys
from gca.study.cache import check_result
from gca.study.fingerprint import code_index, is_tracked
print(json.dumps({"state": check_result(sys.argv[1])[1], "tracked": is_tracked(sys.argv[2]),
                  "indexed": sorted(v for v in code_index().values() if v.startswith(sys.argv[2] + ":"))}))
"""


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A copy of the gca package, importable by subprocesses (PYTHONPATH) instead of this checkout's."""
    root = tmp_path_factory.mktemp("scratch")
    shutil.copytree(ROOT / "gca", root / "gca", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _py(scratch: Path, script: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(scratch), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script, *args], cwd=scratch, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_a_cached_result_survives_a_move_and_goes_stale_when_its_code_changes(scratch):
    pkg = scratch / "gca"
    _write(pkg / "zz_probe.py", PROBE)
    results = scratch / "results"
    code = json.loads(_py(scratch, RECORD, "gca.zz_probe", "probe", str(results)))
    assert set(code["functions"].values()) == {"gca.zz_probe:probe", "gca.zz_probe:helper"}
    (path,) = results.glob("probe-*.json")
    first = json.loads(_py(scratch, CHECK, str(path), "gca.zz_probe"))
    assert first["state"] == "done" and first["tracked"]

    # move both functions to a new module of a new subpackage, rename one, move the constant it reads
    (pkg / "zz_probe.py").unlink()
    _write(pkg / "zz_pkg" / "__init__.py", "")
    _write(pkg / "zz_pkg" / "consts.py", MOVED_CONSTS)
    _write(pkg / "zz_pkg" / "renamed.py", MOVED)
    moved = json.loads(_py(scratch, CHECK, str(path), "gca.zz_pkg.renamed"))
    # (a) the new module under the tracked package is tracked, found recursively
    assert moved["tracked"] and "gca.zz_pkg.renamed:probe_renamed" in moved["indexed"]
    # (b) the result is still current
    assert moved["state"] == "done", moved

    # (c) editing the body of a function that ran makes it stale, naming the function
    _write(pkg / "zz_pkg" / "renamed.py", MOVED.replace("return helper(x) * OFFSET", "return helper(x) * OFFSET - 1"))
    state = json.loads(_py(scratch, CHECK, str(path), "gca.zz_pkg.renamed"))["state"]
    assert state == "stale: code changed: gca.zz_probe:probe changed or removed", state

    # (d) so does editing a module-level constant it reads (here through an import and another constant)
    _write(pkg / "zz_pkg" / "renamed.py", MOVED)
    assert json.loads(_py(scratch, CHECK, str(path), "gca.zz_pkg.renamed"))["state"] == "done"
    _write(pkg / "zz_pkg" / "consts.py", MOVED_CONSTS.replace("SCALE = 3", "SCALE = 4"))
    state = json.loads(_py(scratch, CHECK, str(path), "gca.zz_pkg.renamed"))["state"]
    assert state == "stale: code changed: gca.zz_probe:probe changed or removed", state


def test_results_written_before_gca_study_are_stale_with_the_reason():
    committed = sorted((ROOT / "results" / "cpu").glob("standard/*.json"))
    if not committed:
        pytest.skip("no committed CPU results in this checkout")
    record = json.loads(committed[0].read_text())
    if record.get("code", {}).get("format") == fpm.FORMAT:
        pytest.skip("the committed results are already in the current format")
    assert check_result(committed[0]) == (None, "stale: code fingerprint in the old format (file path::function, "
                                                "written before gca.study): recompute the result")
