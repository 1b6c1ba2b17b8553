"""The pinned environment: requirements.txt and environment.yml carry the same pins."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pins_from_requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert "==" in line, f"requirements.txt line {line!r} is not an exact pin (use name==version)"
        name, version = line.split("==", 1)
        pins[name.strip().lower()] = version.strip()
    return pins


def _pins_from_environment_yml() -> dict[str, str]:
    yaml = pytest.importorskip("yaml")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_section) == 1, "environment.yml must have exactly one pip: section"
    pins = {}
    for line in pip_section[0]["pip"]:
        name, version = line.split("==", 1)
        pins[name.strip().lower()] = version.strip()
    return pins


def test_requirements_and_environment_yml_agree():
    req, env = _pins_from_requirements(), _pins_from_environment_yml()
    assert req == env, (
        f"only in requirements.txt: {sorted(set(req.items()) - set(env.items()))}; "
        f"only in environment.yml: {sorted(set(env.items()) - set(req.items()))}"
    )


def test_torch_pinned_to_the_cpu_build_on_disk():
    assert _pins_from_requirements()["torch"] == "2.13.0"


def test_installed_versions_match_pins():
    from importlib import metadata

    mismatched = {}
    for name, version in _pins_from_requirements().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched[name] = (version, "not installed")
            continue
        if installed.split("+", 1)[0] != version:
            mismatched[name] = (version, installed)
    assert not mismatched, f"installed packages differ from the pins (pinned, installed): {mismatched}"
