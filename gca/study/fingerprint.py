"""Code fingerprints: which code computed a result, independent of where that code lives.

A cached result must be recomputed when the code that produced it changes, and only then: not
after an unrelated commit (a new loss, the book, tests), and not after a pure move or rename.
So a result records *what ran*, as a set of code hashes, not *where* it ran:

- While a run executes, :class:`CodeTracker` records every function of a tracked module that is
  called (``sys.settrace``, call events only, no line tracing).
- Each such function is identified by a hash (:func:`entry_hashes`): of its source parsed with
  ``ast`` and re-emitted without docstrings (comments, docstrings and formatting do not count),
  with its own name abstracted (so renaming it, or moving it to another module, changes nothing),
  plus the module-level statements it reads, transitively — constants, class fields, the code of
  functions called to compute them at import time, and, followed through imports into other
  tracked modules, the constants it imports. A method also covers its class's fields (the class
  body without its methods). Nested functions and lambdas are part of the function that defines
  them.
- A result stores ``{"format": 2, "functions": {hash: "module:qualified name"}, "torch": version}``
  (the names are for people only). It is *current* when every hash it stores is the hash of some
  function of the tracked code now (:func:`fingerprint_changes`) and torch is the same version.

Which modules are tracked is declared here once, by dotted name and recursively
(:data:`TRACKED`, :data:`UNTRACKED`): the longest entry that is the module or one of its parent
packages decides, so a new module anywhere under ``gca`` is tracked unless declared otherwise.
Untracked are modules whose code runs during a run without deciding its numbers (configuration,
which reaches a run only through its resolved configuration — the result's key —, provenance,
caching, scheduling) and reporting-only modules.

Limitations: a run that reads a constant through a path this static analysis does not follow
(``getattr`` with a computed name, a mutable global changed at run time) is not covered by it; a
function that ran only at import time is covered when a constant it computes is read.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "TRACKED",
    "UNTRACKED",
    "FORMAT",
    "is_tracked",
    "tracked_modules",
    "code_index",
    "entry_hashes",
    "CodeTracker",
    "fingerprint_changes",
    "fingerprint_problem",
    "fingerprint_id",
    "source_version",
    "torch_version",
]

#: Packages (and modules) whose code counts, recursively.
TRACKED: tuple[str, ...] = ("gca",)
#: Modules (or packages, recursively) inside :data:`TRACKED` whose code does not count, and why.
UNTRACKED: Mapping[str, str] = {
    "gca.__main__": "command line",
    "gca.cli": "command line",
    "gca.experiments": "forwards the study's command line",
    "gca.book": "builds the book from cached results",
    "gca.figures": "draws figures from cached results",
    "gca.provenance": "records who, when and where, not how a number is computed",
    "gca.config": "reaches a run only through the resolved configuration, which is the result's key",
    "gca.methods": "names methods (a method's behaviour is its tracked loss code, its name is in the key): "
                   "registering a new method must not invalidate every result",
    "gca.study.plan": "study settings reach a run only through its configuration (the key)",
    "gca.study.cache": "stores and checks results",
    "gca.study.fingerprint": "records the code (this module)",
    "gca.study.runner": "schedules runs and checks results",
    "gca.study.verify": "recomputes cached results elsewhere and compares them",
    "gca.study.paper": "the paper's numbers",
    "gca.study.paths": "where results, run directories and data live",
    "gca.study.report": "summaries and verdicts over cached results",
    "gca.study.cost": "step-time measurements for the book, not part of a run",
    "gca.study.stats": "statistics over cached results",
    "gca.study.claims": "the claims ledger over cached results",
    "gca.study.preregistration": "reads and validates the pre-registration (no run reads it)",
    "gca.study.ledger": "builds the claims ledger from cached results",
}
#: Version of the fingerprint format (1: ``{"files", "functions": {"path::name": hash}}``, before gca.study).
FORMAT = 2


def is_tracked(module: str) -> bool:
    """Whether the code of ``module`` (a dotted name) counts: the longest entry of :data:`TRACKED` or
    :data:`UNTRACKED` that is ``module`` or a package above it decides (none: not tracked)."""
    if not isinstance(module, str) or not module:
        raise TypeError(f"module must be a dotted module name, got {module!r}")
    best, tracked = -1, False
    for names, value in ((TRACKED, True), (UNTRACKED, False)):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, tracked = len(name), value
    return tracked


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def torch_version() -> str:
    """The installed torch version (part of every fingerprint)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


# --------------------------------------------------------------------------------------------
# Source files: which modules exist, parsed once per version of the file
# --------------------------------------------------------------------------------------------
def _package_files() -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (path, is_package)}`` of every module under the top-level packages of
    :data:`TRACKED` (wherever Python imports them from), tracked or not."""
    out: dict[str, tuple[Path, bool]] = {}
    for top in sorted({name.split(".")[0] for name in TRACKED}):
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("").parts
            if any(p.startswith(".") or p == "__pycache__" for p in rel):
                continue
            is_pkg = rel[-1] == "__init__"
            parts = (top, *rel[:-1]) if is_pkg else (top, *rel)
            out[".".join(parts)] = (path, is_pkg)
    return out


def tracked_modules() -> dict[str, Path]:
    """``{dotted name: path}`` of every tracked module (:func:`is_tracked`), found recursively."""
    return {name: path for name, (path, _) in _package_files().items() if is_tracked(name)}


def source_version() -> str:
    """Hash of the raw bytes of every module of the tracked packages (tracked or not, recursively):
    changes with any edit of the code (the runner retries a failed run after it changes)."""
    h = hashlib.sha256()
    for name, (path, _) in sorted(_package_files().items()):
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass
class _Module:
    """One parsed module: its top-level bindings and its functions (``"f"``, ``"Class.method"``)."""

    name: str
    is_package: bool
    entries: dict[str, ast.AST] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    bindings: dict[str, list[tuple[str, ast.AST, Any]]] = field(default_factory=dict)
    _fields: dict[str, ast.ClassDef] = field(default_factory=dict)

    def fields(self, cls: str) -> ast.ClassDef:
        """Class ``cls`` without its methods (its fields), built once."""
        if cls not in self._fields:
            self._fields[cls] = _class_fields(self.classes[cls])
        return self._fields[cls]

    def bind(self, name: str, kind: str, node: ast.AST, extra: Any = None) -> None:
        self.bindings.setdefault(name, []).append((kind, node, extra))


def _target_names(target: ast.AST) -> Iterator[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id


def _collect(mod: _Module, stmts, top: ast.AST | None) -> None:
    """Bindings of ``stmts``; a constant bound inside a top-level ``if``/``try``/``with`` is bound
    to that whole statement (its condition counts too)."""
    for stmt in stmts:
        outer = top if top is not None else stmt
        if isinstance(stmt, _DEFS):
            mod.entries[stmt.name] = stmt
            mod.bind(stmt.name, "def", stmt)
        elif isinstance(stmt, ast.ClassDef):
            mod.classes[stmt.name] = stmt
            mod.bind(stmt.name, "class", stmt)
            for item in stmt.body:
                if isinstance(item, _DEFS):
                    mod.entries[f"{stmt.name}.{item.name}"] = item
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                bound = alias.asname or alias.name.split(".")[0]
                mod.bind(bound, "import", stmt, alias)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                for name in _target_names(t):
                    mod.bind(name, "const", outer)
        elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for block in ("body", "orelse", "finalbody"):
                _collect(mod, getattr(stmt, block, []), outer)
            for handler in getattr(stmt, "handlers", []):
                _collect(mod, handler.body, outer)


_PARSED: dict[tuple[str, str], tuple[tuple[int, int], _Module]] = {}


def _parse(path: Path, name: str, is_package: bool) -> _Module:
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _PARSED.get((str(path), name))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    tree = _strip_docstrings(ast.parse(Path(path).read_text(), filename=str(path)))
    mod = _Module(name, is_package)
    _collect(mod, tree.body, None)
    _PARSED[(str(path), name)] = (stamp, mod)
    return mod


def _unparse_abstract(node: ast.AST) -> str:
    """Source of a ``def``/``class`` named ``_`` wherever it names itself (a rename changes nothing).
    The parsed tree is renamed in place and restored (cheaper than a deep copy)."""
    own = node.name
    renamed = [sub for sub in ast.walk(node) if isinstance(sub, ast.Name) and sub.id == own]
    node.name = "_"
    for sub in renamed:
        sub.id = "_"
    try:
        return ast.unparse(node)
    finally:
        node.name = own
        for sub in renamed:
            sub.id = own


def _class_fields(cls: ast.ClassDef) -> ast.ClassDef:
    """The class without its methods: bases, decorators, fields and class constants."""
    skeleton = copy.copy(cls)
    skeleton.body = [item for item in cls.body if not isinstance(item, _DEFS)] or [ast.Pass()]
    return skeleton


_NAMES: dict[int, tuple[Any, list[tuple[str, str | None]], frozenset]] = {}


def _names(node: ast.AST) -> tuple[list[tuple[str, str | None]], frozenset]:
    """``(reads, calls)`` of ``node``: ``(name, None)`` for every name read, ``(name, attribute)`` for
    ``name.attribute``; ``calls``: those of them that are called (or used as decorators). Memoised per
    node (the node is kept alive with its entry, so its id is not reused)."""
    hit = _NAMES.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1], hit[2]

    def ref(expr):
        if isinstance(expr, ast.Name):
            return expr.id, None
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            return expr.value.id, expr.attr
        return None

    reads, calls = [], set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            reads.append((sub.id, None))
        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            reads.append((sub.value.id, sub.attr))
        if isinstance(sub, ast.Call):
            calls.add(ref(sub.func))
        elif isinstance(sub, (*_DEFS, ast.ClassDef)):
            calls.update(ref(d.func if isinstance(d, ast.Call) else d) for d in sub.decorator_list)
    reads = list(dict.fromkeys(reads))
    calls.discard(None)
    _NAMES[id(node)] = (node, reads, frozenset(calls))
    return reads, frozenset(calls)


def _absolute(mod: _Module, stmt: ast.ImportFrom) -> str:
    if not stmt.level:
        return stmt.module or ""
    base = mod.name.split(".")
    if not mod.is_package:
        base = base[:-1]
    base = base[: len(base) - (stmt.level - 1)] if stmt.level > 1 else base
    return ".".join(base + ([stmt.module] if stmt.module else []))


# --------------------------------------------------------------------------------------------
# The index of the tracked code: every function's hash
# --------------------------------------------------------------------------------------------
class _Index:
    """Every tracked module's functions with their hashes, for one version of the sources."""

    def __init__(self, files: Mapping[str, tuple[Path, bool]]):
        self.files = dict(files)
        self._modules: dict[str, _Module] = {}
        self._hashes: dict[tuple[str, str], str] = {}

    def module(self, name: str) -> _Module | None:
        """The parsed tracked module ``name`` (``None``: not a tracked module here)."""
        if name not in self._modules:
            if name not in self.files or not is_tracked(name):
                return None
            path, is_pkg = self.files[name]
            self._modules[name] = _parse(path, name, is_pkg)
        return self._modules[name]

    def entry_hash(self, mod: _Module, entry: str) -> str:
        key = (mod.name, entry)
        if key not in self._hashes:
            node = mod.entries[entry]
            parts: dict[str, Any] = {"def": _unparse_abstract(node)}
            roots = [node]
            if "." in entry:
                skeleton = mod.fields(entry.split(".")[0])
                parts["class"] = _unparse_abstract(skeleton)
                roots.append(skeleton)
            parts["reads"] = sorted(self._reads(mod, roots))
            self._hashes[key] = _h(json.dumps(parts, sort_keys=True))
        return self._hashes[key]

    def _reads(self, mod: _Module, roots) -> set[str]:
        """Source of the module-level statements the nodes ``roots`` of ``mod`` read, transitively."""
        out: set[str] = set()
        seen: set[tuple[str, int]] = set()
        stack: list[tuple[_Module, ast.AST, bool]] = [(mod, r, False) for r in roots]
        while stack:
            m, node, at_import = stack.pop()
            reads, calls = _names(node)
            for name, attr in reads:  # a function counts where it is called at import time
                self._follow(m, name, attr, at_import and (name, attr) in calls, out, seen, stack, depth=0)
        return out

    def _follow(self, m: _Module, name: str, attr: str | None, called: bool, out, seen, stack, depth: int):
        """Add what reading ``name`` (or ``name.attr``) in module ``m`` depends on; ``called``: it is
        called at import time (a constant's value, a decorator), so a function's code counts too."""
        if depth > 8:
            return
        for kind, node, extra in m.bindings.get(name, ()):
            if kind == "def" and not called:  # a function that runs later is recorded when it runs
                continue
            key = (m.name, id(node), (attr, called) if kind == "import" else None)
            if key in seen:
                continue
            seen.add(key)
            if kind == "const":
                out.add(ast.unparse(node))
                stack.append((m, node, True))
            elif kind == "class":
                skeleton = m.fields(node.name)
                out.add(ast.unparse(skeleton))
                stack.append((m, skeleton, True))
            elif kind == "def":  # called while the module is imported, before any tracking
                out.add(_unparse_abstract(node))
                stack.append((m, node, True))
            elif kind == "import":
                self._follow_import(m, node, extra, attr, called, out, seen, stack, depth)

    def _follow_import(self, m: _Module, stmt, alias, attr, called, out, seen, stack, depth):
        if isinstance(stmt, ast.Import):
            # ``import a.b as m`` / ``import a`` bind a module; ``import a.b`` binds ``a`` (not followed)
            target = alias.name if alias.asname or "." not in alias.name else None
            imported = None
        else:
            base = _absolute(m, stmt)
            target, imported = (f"{base}.{alias.name}", None) if f"{base}.{alias.name}" in self.files \
                else (base, alias.name)
        if target is None:  # ``import a.b`` binds ``a``: attribute chains are not followed
            return
        try:
            source = self.module(target)
        except SyntaxError:  # the imported module does not parse: its functions count as changed anyway
            return
        if source is None:  # an untracked or third-party module
            return
        if imported is None:  # a module alias: ``alias.attr`` reads ``attr`` of that module
            if attr is not None:
                self._follow(source, attr, None, called, out, seen, stack, depth + 1)
        else:
            self._follow(source, imported, attr, called, out, seen, stack, depth + 1)

    def entry_of(self, mod: _Module, qualname: str) -> str | None:
        """The entry of ``mod`` holding the code object ``qualname`` (``None``: module-level code)."""
        parts = qualname.split(".<locals>")[0].split(".")
        for k in range(len(parts), 0, -1):
            cand = ".".join(parts[:k])
            if cand in mod.entries:
                return cand
        return None

    def all_hashes(self) -> dict[str, str]:
        """``{hash: "module:entry"}`` of every function of every tracked module."""
        out: dict[str, str] = {}
        for name in sorted(self.files):
            try:
                mod = self.module(name)
            except SyntaxError:  # a module that does not parse has no functions: what ran there changed
                continue
            if mod is None:
                continue
            for entry in sorted(mod.entries):
                out.setdefault(self.entry_hash(mod, entry), f"{name}:{entry}")
        return out


_CURRENT: dict[str, Any] = {"stamps": None, "index": None, "hashes": None}


def _current() -> _Index:
    files = _package_files()
    stamps = tuple((n, p.stat().st_mtime_ns, p.stat().st_size) for n, (p, _) in sorted(files.items()))
    if _CURRENT["stamps"] != stamps:
        _NAMES.clear()  # the memo keeps the trees of the previous version alive
        _CURRENT.update(stamps=stamps, index=_Index(files), hashes=None)
    return _CURRENT["index"]


def code_index() -> dict[str, str]:
    """``{hash: "module:qualified name"}`` of every function of the tracked code on disk now (re-read
    when a file changes, so a long-lived process sees edits)."""
    index = _current()
    if _CURRENT["hashes"] is None or _CURRENT["index"] is not index:
        _CURRENT["hashes"] = index.all_hashes()
    return dict(_CURRENT["hashes"])


def entry_hashes(path: str | os.PathLike, module: str = "module") -> dict[str, str]:
    """``{"f" or "Class.method": hash}`` of one source file, read as module ``module`` (constants it
    imports from tracked modules are followed as in the index)."""
    index = _Index({**_package_files(), module: (Path(path), Path(path).name == "__init__.py")})
    mod = _parse(Path(path), module, Path(path).name == "__init__.py")
    index._modules[module] = mod
    return {entry: index.entry_hash(mod, entry) for entry in mod.entries}


# --------------------------------------------------------------------------------------------
# Recording what ran
# --------------------------------------------------------------------------------------------
def _module_name(frame) -> str | None:
    g = frame.f_globals
    name = g.get("__name__")
    if name == "__main__":
        spec = g.get("__spec__")
        name = getattr(spec, "name", None)
    return name if isinstance(name, str) else None


class CodeTracker:
    """Records which functions of tracked modules run inside a ``with`` block (``sys.settrace`` on
    call events only), then turns them into a fingerprint (:meth:`CodeTracker.fingerprint`). The
    tracked sources are parsed when the block is entered: the hashes are of the code the run
    started with."""

    def __init__(self):
        self.calls: set[tuple[str, str, str]] = set()
        self._seen: dict[int, tuple[Any, Any]] = {}  # id(code) -> (code, hit): the code is kept alive
        self._previous = None
        self._index: _Index | None = None

    def _trace(self, frame, event, arg):
        co = frame.f_code
        known = self._seen.get(id(co))
        if known is None:
            hit = None
            name = _module_name(frame)
            if name is not None and co.co_filename.endswith(".py") and co.co_name != "<module>" \
                    and is_tracked(name):
                hit = (name, co.co_filename, co.co_qualname)
            known = self._seen[id(co)] = (co, hit)
        if known[1] is not None:
            self.calls.add(known[1])
        return None

    def __enter__(self) -> "CodeTracker":
        self._index = _current()
        for name in self._index.files:  # parse now: the hashes are of the code the run starts with
            try:
                self._index.module(name)
            except SyntaxError:  # its functions cannot run; a result using them is never current
                pass
        self._previous = sys.gettrace()
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(self._previous)

    def fingerprint(self) -> dict[str, Any]:
        """``{"format": 2, "functions": {hash: "module:name"}, "torch": version}`` of the recorded calls."""
        index = self._index or _current()
        functions: dict[str, str] = {}
        for name, filename, qualname in sorted(self.calls):
            mod = index.module(name)
            if mod is None:  # imported from outside the indexed packages: hashed, but never current
                if not Path(filename).is_file():
                    continue
                mod = _parse(Path(filename), name, Path(filename).name == "__init__.py")
            entry = index.entry_of(mod, qualname)
            if entry is not None:
                functions[index.entry_hash(mod, entry)] = f"{name}:{entry}"
        return {"format": FORMAT, "functions": functions, "torch": torch_version()}


# --------------------------------------------------------------------------------------------
# Comparing a stored fingerprint with the code now
# --------------------------------------------------------------------------------------------
def fingerprint_problem(fp: Any) -> str | None:
    """Why ``fp`` cannot be compared with the code at all (``None``: it can)."""
    if not isinstance(fp, Mapping) or not fp:
        return "no code fingerprint recorded"
    if fp.get("format") != FORMAT:
        if "files" in fp:
            return ("code fingerprint in the old format (file path::function, written before gca.study): "
                    "recompute the result")
        return f"code fingerprint format {fp.get('format')!r} is not {FORMAT}: recompute the result"
    if not isinstance(fp.get("functions"), Mapping):
        return "code fingerprint without functions"
    return None


def fingerprint_changes(fp: Any) -> list[str]:
    """What changed since fingerprint ``fp`` was recorded (empty: every function that ran exists,
    unchanged, in the tracked code now — wherever it lives). Each entry names a function that
    changed or was removed, the torch version, or a fingerprint that cannot be compared."""
    problem = fingerprint_problem(fp)
    if problem is not None:
        return [problem]
    changes = []
    if fp.get("torch") != torch_version():
        changes.append(f"torch {fp.get('torch')} -> {torch_version()}")
    current = code_index()
    for h, name in sorted(fp["functions"].items(), key=lambda kv: kv[1]):
        if h not in current:
            changes.append(f"{name} changed or removed")
    return changes


def fingerprint_id(fp: Mapping[str, Any]) -> str:
    """Short hash of a fingerprint's code hashes and torch version (not of its display names, so a
    move does not change it)."""
    functions = fp.get("functions", {}) if isinstance(fp, Mapping) else {}
    return _h(json.dumps({"functions": sorted(functions), "torch": fp.get("torch")}, sort_keys=True))
