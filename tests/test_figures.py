"""gca.figures: files, provenance sidecars, stable identifiers, the figure index."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from gca.figures import (  # noqa: E402
    figure_index_markdown,
    read_sidecars,
    save_figure,
    write_figure_index,
)
from gca.provenance import file_checksum  # noqa: E402

NB = "notebooks/02_sinkhorn_vs_pot.ipynb"


@pytest.fixture
def fig():
    f, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [2, 0, 1])
    yield f
    plt.close(f)


def test_sidecar_records_provenance(fig, tmp_path):
    params = {"profile": "smoke", "seed": 3, "sizes": [8, 16]}
    rec = save_figure(fig, "demo-error-vs-epsilon", notebook=NB, parameters=params, seed=3,
                      data_checksum="abc123", title="Demo", caption="A caption.", directory=tmp_path,
                      profile="smoke")
    assert rec.label == "fig-demo-error-vs-epsilon"
    assert set(rec.files) == {"png", "svg"}
    assert (tmp_path / "demo-error-vs-epsilon.png").stat().st_size > 0
    side = json.loads((tmp_path / "demo-error-vs-epsilon.json").read_text())
    assert side == rec.provenance
    assert side["figure_id"] == "demo-error-vs-epsilon"
    assert side["notebook"] == NB and side["parameters"] == params and side["seed"] == 3
    assert side["data_checksum"] == "abc123" and side["profile"] == "smoke"
    assert side["title"] == "Demo" and side["caption"] == "A caption."
    for key in ("git_commit", "git_dirty", "gca_version", "packages", "python", "device", "time"):
        assert key in side, key
    assert side["packages"]["torch"] == __import__("torch").__version__
    assert side["packages"]["matplotlib"] == matplotlib.__version__
    for fmt, info in side["files"].items():
        assert info["sha256"] == file_checksum(tmp_path / info["name"]), fmt


def test_png_is_deterministic(fig, tmp_path):
    a = save_figure(fig, "same", notebook=NB, parameters={}, seed=0, directory=tmp_path / "a", formats=())
    b = save_figure(fig, "same", notebook=NB, parameters={}, seed=0, directory=tmp_path / "b", formats=())
    assert a.provenance["files"]["png"]["sha256"] == b.provenance["files"]["png"]["sha256"]
    assert set(a.files) == {"png"}


@pytest.mark.parametrize("bad", ["Upper", "two--hyphens", "-lead", "under_score", "", "a b", 3])
def test_rejects_unstable_identifiers(fig, tmp_path, bad):
    with pytest.raises(ValueError, match="figure_id"):
        save_figure(fig, bad, notebook=NB, parameters={}, seed=0, directory=tmp_path)


def test_rejects_bad_arguments(fig, tmp_path):
    with pytest.raises(ValueError, match="notebook"):
        save_figure(fig, "x", notebook="02.py", parameters={}, seed=0, directory=tmp_path)
    with pytest.raises(TypeError, match="JSON"):
        save_figure(fig, "x", notebook=NB, parameters={"a": object()}, seed=0, directory=tmp_path)
    with pytest.raises(TypeError, match="JSON"):
        save_figure(fig, "x", notebook=NB, parameters={"a": float("nan")}, seed=0, directory=tmp_path)
    with pytest.raises(TypeError, match="seed"):
        save_figure(fig, "x", notebook=NB, parameters={}, seed=1.5, directory=tmp_path)
    with pytest.raises(ValueError, match="formats"):
        save_figure(fig, "x", notebook=NB, parameters={}, seed=0, formats=("jpg",), directory=tmp_path)
    with pytest.raises(TypeError, match="Figure"):
        save_figure([1, 2], "x", notebook=NB, parameters={}, seed=0, directory=tmp_path)


def test_identifier_unique_across_notebooks(fig, tmp_path):
    save_figure(fig, "shared-id", notebook=NB, parameters={}, seed=0, directory=tmp_path)
    save_figure(fig, "shared-id", notebook=NB, parameters={}, seed=1, directory=tmp_path)  # rerun: fine
    with pytest.raises(ValueError, match="already used"):
        save_figure(fig, "shared-id", notebook="notebooks/other.ipynb", parameters={}, seed=0, directory=tmp_path)


def test_default_directory_from_environment(fig, tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_FIGURE_DIR", str(tmp_path / "env"))
    rec = save_figure(fig, "from-env", notebook=NB, parameters={}, seed=0)
    assert rec.sidecar == tmp_path / "env" / "from-env.json"


def test_read_sidecars_detects_changed_or_missing_images(fig, tmp_path):
    save_figure(fig, "b-fig", notebook=NB, parameters={}, seed=0, directory=tmp_path)
    save_figure(fig, "a-fig", notebook="notebooks/01_x.ipynb", parameters={}, seed=0, directory=tmp_path)
    records = read_sidecars(tmp_path)
    assert [r["figure_id"] for r in records] == ["a-fig", "b-fig"]  # by notebook, then id
    (tmp_path / "b-fig.png").write_bytes(b"not the figure")
    with pytest.raises(ValueError, match="changed"):
        read_sidecars(tmp_path)
    (tmp_path / "b-fig.png").unlink()
    with pytest.raises(ValueError, match="missing"):
        read_sidecars(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        read_sidecars(tmp_path / "nowhere")


def test_figure_index_lists_provenance_and_citation(fig, tmp_path):
    rec = save_figure(fig, "index-demo", notebook=NB, parameters={"profile": "smoke", "seed": 0}, seed=0,
                      title="Index demo", caption="What it shows.", data_checksum="d0d0", directory=tmp_path)
    text = figure_index_markdown(read_sidecars(tmp_path), image_prefix="../build/figures")
    assert "## `index-demo`: Index demo" in text
    assert "```{image} ../build/figures/index-demo.png" in text
    assert "{numref}`Fig. {number} <fig-index-demo>`" in text and "{doc}`/build/notebooks/02_sinkhorn_vs_pot`" in text
    assert rec.provenance["git_commit"][:12] in text
    assert "`profile='smoke'`" in text and "d0d0" in text and "What it shows." in text
    assert "{download}`provenance JSON <../build/figures/index-demo.json>`" in text
    assert "Cite as" in text
    out = tmp_path / "idx" / "figure_index.md"
    assert len(write_figure_index(tmp_path, out, image_prefix="x")) == 1 and out.read_text().startswith("## ")
    assert "No figure" in figure_index_markdown([], image_prefix="x")
    unlabelled = figure_index_markdown(read_sidecars(tmp_path), image_prefix="x", labels={"fig-other"})
    assert "{numref}" not in unlabelled and "**Shown in:** {doc}`/build/notebooks/02_sinkhorn_vs_pot`" in unlabelled
    assert write_figure_index(tmp_path, out, image_prefix="x", notebooks=["notebooks/other.ipynb"]) == []
    assert "No figure" in out.read_text()


def test_svg_is_byte_reproducible_across_processes(tmp_path):
    # matplotlib salts SVG element ids randomly per process unless svg.hashsalt is fixed
    import subprocess
    import sys

    script = (
        "import sys, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
        "from gca.figures import save_figure\n"
        "f, ax = plt.subplots(figsize=(3, 2)); ax.plot([0, 1, 2], [2, 0, 1]); ax.set_title('t')\n"
        f"save_figure(f, 'same', notebook={NB!r}, parameters={{}}, seed=0, directory=sys.argv[1], formats=('svg',))\n"
    )
    for d in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / d)], check=True, timeout=120)
    for ext in ("svg", "png"):
        assert (tmp_path / "a" / f"same.{ext}").read_bytes() == (tmp_path / "b" / f"same.{ext}").read_bytes(), ext


def test_injected_parameters_cell_is_hidden(tmp_path):
    import nbformat

    from gca.book import hide_injected_parameters

    nb = nbformat.v4.new_notebook()
    own = nbformat.v4.new_code_cell("profile = 'default'")
    own.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("# Parameters\nprofile = 'smoke'")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [own, injected, nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert hide_injected_parameters(path) == 1 and hide_injected_parameters(path) == 0
    tags = [c.metadata.get("tags", []) for c in nbformat.read(str(path), as_version=4).cells]
    assert tags == [["parameters"], ["injected-parameters", "remove-cell"], []]


@pytest.fixture
def restore_environ():
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _redraw(figure_id, notebook, tmp_path, capsys):
    from gca import book
    from gca.cli import main

    reports = book.execute_notebooks("smoke", notebooks=[notebook])
    assert reports[0]["status"] == "ok", reports
    assert main(["figure", "--list"]) == 0
    assert figure_id in capsys.readouterr().out
    assert main(["figure", figure_id, "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["identical"] and set(result["files"]) == {"png", "svg"}
    return result


def test_gca_figure_redraws_a_derivation_figure_byte_identical(tmp_path, capsys, restore_environ):
    result = _redraw("sinkhorn-float32-stability", "notebooks/02_sinkhorn_vs_pot.ipynb", tmp_path, capsys)
    assert result["seconds"] < 60


@pytest.mark.slow
def test_gca_figure_redraws_an_experiment_figure_from_cached_results(tmp_path, capsys, restore_environ):
    # notebook 07 at the smoke profile computes its four runs once; the redraw reads them (cached mode)
    result = _redraw("gca-ince-ablations", "notebooks/07_ablations.ipynb", tmp_path, capsys)
    assert result["seconds"] < 60
    from gca.book import list_figures

    rec = next(r for r in list_figures() if r["figure_id"] == "gca-ince-ablations")
    assert rec["inputs"] and all(len(i["sha256"]) == 64 and i["git_commit"] for i in rec["inputs"])


def test_gca_figure_unknown_id_is_one_line(capsys):
    from gca.cli import main

    status = main(["figure", "no-such-figure"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "no-such-figure" in err or "build the book first" in err


def test_sidecar_lists_input_files_with_their_commits(fig, tmp_path):
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"provenance": {"git_commit": "abc", "git_dirty": False}, "metrics": {}}))
    rec = save_figure(fig, "with-inputs", notebook=NB, parameters={}, seed=0, directory=tmp_path / "f",
                      formats=(), inputs=[result])
    (entry,) = rec.provenance["inputs"]
    assert entry["sha256"] == file_checksum(result) and entry["git_commit"] == "abc" and entry["git_dirty"] is False
    with pytest.raises(ValueError, match="not a file"):
        save_figure(fig, "with-inputs", notebook=NB, parameters={}, seed=0, directory=tmp_path / "f",
                    formats=(), inputs=[tmp_path / "missing.json"])
