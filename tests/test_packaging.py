"""Packaging (issue 11): the wheel holds every file of ``gca/``; the core install imports the
solvers and losses without the extras; the declared extras cover every third-party import; the
pinned reproduction environment (requirements.txt) satisfies the declared ranges.

Everything is found at test time (walking ``gca/``, reading ``pyproject.toml``), so a new module
or package is covered without editing this file.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gca"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: The modules a core install (``pip install gca``, no extras) must import.
CORE_MODULES = ("gca.ot", "gca.losses", "gca.methods", "gca.checks")
#: Directories of the repository whose ``.py`` files are local modules (never dependencies).
_LOCAL_DIRS = ("gca", "tests", "benchmarks", "book")


def _norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(spec: str) -> tuple[str, set[str]]:
    """``(normalised name, extras)`` of a requirement string such as ``"gca[train,book]"``."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", spec)
    assert m, f"cannot parse the requirement {spec!r} of pyproject.toml"
    return _norm(m.group(1)), {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}


def _declared(*groups: str) -> set[str]:
    """Normalised distribution names of the core (``"core"``) and of the named extras, with the
    project's own extras (``gca[train]``) resolved."""
    own, extras = _norm(PROJECT["name"]), PROJECT.get("optional-dependencies", {})
    names, todo, seen = set(), list(groups), set()
    while todo:
        group = todo.pop()
        if group in seen:
            continue
        seen.add(group)
        assert group == "core" or group in extras, f"pyproject.toml declares no extra {group!r}"
        for spec in PROJECT["dependencies"] if group == "core" else extras[group]:
            name, sub = _requirement(spec)
            if name == own:
                todo.extend(sub)
            else:
                names.add(name)
    return names


def _package_files() -> list[Path]:
    """Every file under gca/ that belongs in the wheel (no caches)."""
    return sorted(p.relative_to(ROOT) for p in PACKAGE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))


def _local_module_names() -> set[str]:
    names = set(_LOCAL_DIRS)
    for d in _LOCAL_DIRS:
        for p in (ROOT / d).rglob("*.py"):
            names.add(p.stem)
            names.update(part for part in p.relative_to(ROOT).parts[:-1])
    return names


def _imports(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (module level, in functions, guarded)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def _third_party(names: set[str]) -> set[str]:
    local = _local_module_names()
    return {n for n in names if n not in sys.stdlib_module_names and n not in local and n != "__future__"}


def _distribution_of(module: str, table: dict[str, list[str]]) -> str:
    """The distribution that provides top-level ``module`` here (else its own name)."""
    dists = table.get(module)
    return _norm(dists[0]) if dists else _norm(module)


# ------------------------------------------------------------------------------------------------
# The wheel
# ------------------------------------------------------------------------------------------------
def test_wheel_contains_every_file_of_the_package(tmp_path):
    """Build the wheel offline from a copy of the sources and find every file of gca/ in it."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "gca", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / PROJECT["readme"], src)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.as_posix() for p in _package_files()}
    assert any(n.endswith(".py") for n in expected) and "gca/__init__.py" in expected
    missing = sorted(expected - names)
    assert not missing, (f"the wheel lacks {missing}: a package directory without __init__.py, or a data file "
                         "not declared in [tool.setuptools.package-data] of pyproject.toml")
    stray = sorted({n.split("/")[0] for n in names} - {"gca", f"gca-{PROJECT['version']}.dist-info"})
    assert not stray, f"the wheel holds top-level entries besides gca/: {stray}"


# ------------------------------------------------------------------------------------------------
# Dependencies: ranges, not pins; the core is enough for the solvers and the losses
# ------------------------------------------------------------------------------------------------
def test_declared_dependencies_are_ranges_that_the_pinned_environment_satisfies():
    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    own = _norm(PROJECT["name"])
    specs = [("dependencies", s) for s in PROJECT["dependencies"]]
    specs += [(f"[{group}]", s) for group, group_specs in PROJECT["optional-dependencies"].items() for s in group_specs]
    core = {_requirement(s)[0] for s in PROJECT["dependencies"]}
    assert {"torch", "numpy"} <= core, f"the core dependencies must include torch and numpy, got {sorted(core)}"
    for where, spec in specs:
        req = Requirement(spec)
        if _norm(req.name) == own:
            continue
        assert not any(s.operator in ("==", "===") for s in req.specifier), (
            f"pyproject.toml {where}: {spec!r} pins an exact version; a library declares compatible ranges "
            "(exact pins belong in requirements.txt / environment.yml)")
        assert _norm(req.name) in pins, f"pyproject.toml {where}: {req.name} is not pinned in requirements.txt"
        assert req.specifier.contains(pins[_norm(req.name)], prereleases=True), (
            f"pyproject.toml {where}: the pinned {req.name}=={pins[_norm(req.name)]} of requirements.txt is outside "
            f"the declared range {spec!r}")
        if where == "dependencies":
            assert any(s.operator in (">=", "~=") for s in req.specifier), f"core dependency {spec!r} needs a lower bound"


_CORE_SCRIPT = textwrap.dedent('''
    import importlib, importlib.abc, json, pkgutil, sys
    allowed = set(json.loads(sys.argv[1]))
    refused = []

    class RefuseExtras(importlib.abc.MetaPathFinder):
        """Refuse every top-level module outside the core dependencies and the standard library."""

        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in allowed or top in sys.stdlib_module_names:
                return None
            refused.append(name)
            raise ModuleNotFoundError(f"{name} is not a core dependency (refused by the test)", name=name)

    sys.meta_path.insert(0, RefuseExtras())
    present = [m for m in json.loads(sys.argv[2]) if importlib.util.find_spec(m) is not None]
    for name in list(present):
        mod = importlib.import_module(name)
        for info in pkgutil.walk_packages(getattr(mod, "__path__", []), prefix=name + "."):
            importlib.import_module(info.name)
            present.append(info.name)

    # Use them: lazily imported modules must be core dependencies as well.
    import torch
    from gca.ot import sinkhorn, sinkhorn_unbalanced
    from gca.losses import make_loss
    from gca.methods import method_names

    g = torch.Generator().manual_seed(0)
    cost = torch.rand(6, 5, generator=g, dtype=torch.float64)
    sinkhorn(cost, epsilon=0.5)
    sinkhorn_unbalanced(cost, epsilon=0.5, rho=1.0)
    built = []
    for name in method_names("alignment"):
        try:
            loss = make_loss(name)
        except ValueError:  # a registered method this branch's make_loss does not build (not an import issue)
            continue
        z1 = torch.randn(8, 4, generator=g, requires_grad=True)
        loss(z1, torch.randn(8, 4, generator=g)).backward()
        built.append(name)
    print(json.dumps({"imported": present, "losses": built, "refused": sorted(set(refused))}))
''')


def _allowed_modules(core: set[str]) -> set[str]:
    """Top-level modules of the core distributions and of what they require (not their extras)."""
    dists, todo = set(), list(core)
    while todo:
        name = todo.pop()
        if name in dists:
            continue
        dists.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"core dependency {name} is not installed here")
        todo.extend(_requirement(r)[0] for r in requires if not re.search(r"\bextra\s*==", r))
    table = metadata.packages_distributions()
    return {module for module, owners in table.items() if any(_norm(o) in dists for o in owners)} | {"gca"}


def test_core_install_imports_the_solvers_and_losses_without_extras():
    core = _declared("core")
    allowed = _allowed_modules(core)
    proc = subprocess.run([sys.executable, "-c", _CORE_SCRIPT, json.dumps(sorted(allowed)), json.dumps(CORE_MODULES)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, (
        f"with only the core dependencies {sorted(core)} (+ their requirements) installed, importing "
        f"{CORE_MODULES} failed; either import the module lazily where it is used by an extra, or add it to "
        f"[project] dependencies:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"gca.ot", "gca.losses", "gca.methods"} <= set(out["imported"])
    assert {"ince", "gca-uot"} <= set(out["losses"])


def test_the_refusing_importer_refuses_an_extra():
    """The check above can fail: an extra (tqdm) is refused with the core set of allowed modules."""
    allowed = _allowed_modules(_declared("core"))
    assert "tqdm" not in allowed and "torch" in allowed and "numpy" in allowed
    script = _CORE_SCRIPT.replace("present = [", "import tqdm\npresent = [", 1)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(sorted(allowed)), json.dumps(CORE_MODULES)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0 and "tqdm is not a core dependency" in proc.stderr


# ------------------------------------------------------------------------------------------------
# The extras cover every third-party import
# ------------------------------------------------------------------------------------------------
def _notebook_sources() -> dict[str, str]:
    out = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        # IPython magics and shell lines are not Python
        out[str(path.relative_to(ROOT))] = "\n".join(
            line for cell in code for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
    return out


@pytest.mark.parametrize("what, groups", [
    ("gca", ("core", *PROJECT["optional-dependencies"])),
    ("notebooks", ("core", "book")),
    ("book", ("core", "book")),  # the Sphinx extension of the book
    ("tests", ("core", "test")),
])
def test_declared_dependencies_cover_every_third_party_import(what, groups):
    if what == "notebooks":
        sources = _notebook_sources()
    else:
        sources = {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / what).rglob("*.py"))
                   if "__pycache__" not in p.parts}
    assert sources, f"no sources found under {what}/"
    table = metadata.packages_distributions()
    declared = _declared(*groups)
    missing: dict[str, list[str]] = {}
    for where, source in sources.items():
        for module in _third_party(_imports(source)):
            dist = _distribution_of(module, table)
            if dist not in declared:
                missing.setdefault(f"{module} (distribution {dist})", []).append(where)
    assert not missing, (f"imports under {what}/ not declared in pyproject.toml ({' + '.join(groups)}): "
                         + "; ".join(f"{k} in {v}" for k, v in sorted(missing.items())))


def test_import_scan_sees_function_level_and_guarded_imports():
    source = "import os\ntry:\n    import sklearn.linear_model\nexcept ImportError:\n    pass\n" \
             "def f():\n    from PIL import Image\n    from . import sibling\n    import gca.ot\n"
    assert _third_party(_imports(source)) == {"sklearn", "PIL"}
    table = metadata.packages_distributions()
    assert _distribution_of("sklearn", table) == "scikit-learn" and _distribution_of("PIL", table) == "pillow"
