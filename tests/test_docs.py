"""The documentation site builds strictly, its home page links to every page, and the generated pages are current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools" / "docs"))


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        for value in item.values():
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_site_builds_strictly_and_its_home_links_to_every_page(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    pages = _nav_pages(config["nav"])
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert sorted(pages) == sorted(on_disk), "every page is in the nav, and the nav names no missing page"
    home = (site / "index.html").read_text()
    links = set(re.findall(r'href="([^"#]*)"', home))
    for page in pages:
        if page == "index.md":
            continue
        target = page.removesuffix(".md") + "/"
        assert target in links, f"site/index.html does not link to {page}"
        assert (site / target / "index.html").is_file(), page
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in ("ModelExport", "export_checkpoint", "ExportedModel", "check_leaves", "LoadError", "ExportedModelAPI"):
        assert name in api, f"the API reference lacks {name}"


def test_command_line_reference_is_the_parsers_help():
    import cli_reference

    assert (ROOT / "docs" / "reference" / "cli.md").read_text() == cli_reference.render(), (
        "docs/reference/cli.md is stale: run .venv/bin/python tools/docs/cli_reference.py"
    )


def test_every_example_script_is_run_by_a_test():
    """An example nobody runs rots: every script in examples/ is named by a test that runs it."""
    scripts = [p for p in (ROOT / "examples").rglob("*.py") if "__main__" in p.read_text()]
    tests = " ".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert scripts
    for script in scripts:
        assert script.name in tests or script.parent.name in tests, f"no test runs {script.relative_to(ROOT)}"


def test_the_scaling_pages_serve_config_is_what_serve_build_writes_and_the_rayservice_holds_it(tmp_path):
    """docs/scaling.md's config and rayservice.yaml's serveConfigV2 (less its runtime_env) equal serve build's."""
    pytest.importorskip("ray.serve")
    folder = ROOT / "examples" / "ray_serve"
    config = tmp_path / "serve_config.yaml"
    built = subprocess.run([str(Path(sys.executable).parent / "serve"), "build", "application:application", "-o",
                            str(config)], cwd=folder, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    written = yaml.safe_load(config.read_text())
    page = (ROOT / "docs" / "scaling.md").read_text()
    block = re.search(r"<!-- serve-build -->\n```yaml\n(.*?)```\n<!-- /serve-build -->", page, re.DOTALL)
    assert block and yaml.safe_load(block.group(1)) == written, "docs/scaling.md: paste serve build's output again"
    service = yaml.safe_load((folder / "rayservice.yaml").read_text())
    held = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert held["applications"][0].pop("runtime_env")["env_vars"]["LIGHTNING_DEPLOY_MANIFEST"]
    assert written["applications"][0].pop("runtime_env") == {}
    assert held == written


def test_the_coverage_pages_changes_section_names_each_flipped_verdict_and_a_full_run_keeps_later_sections(tmp_path):
    import coverage_table

    page = tmp_path / "coverage.md"
    before = (ROOT / "docs" / "coverage.md").read_text()
    resnet = next(line for line in before.splitlines() if line.startswith("| resnet18 |"))
    flipped = resnet.replace("| ✅ |", "| ❌ broke |", 1)
    page.write_text(before.replace(resnet, flipped))
    coverage_table.write_changes(before, page)
    text = page.read_text()
    changes = text.split(coverage_table.CHANGES_MARKER)[1].split(coverage_table.PEER_MARKER)[0]
    rows = [line for line in changes.splitlines() if line.startswith("| Model coverage")]
    assert len(rows) == 1 and "resnet18" in rows[0] and rows[0].endswith("| ✅ | ❌ broke |"), changes
    assert text.count(coverage_table.PEER_MARKER) == 1 and "## detectron2 models" in text
    coverage_table.write_changes(before, page)  # a second run replaces the section instead of adding one
    assert page.read_text().count(coverage_table.CHANGES_MARKER) == 1
    coverage_table.write_table({}, [], page, total=60.0)  # the zoo's table rewritten: the peers' and detectron2's stay
    assert page.read_text().split(coverage_table.PEER_MARKER)[1] == text.split(coverage_table.PEER_MARKER)[1]


def test_the_coverage_tool_stops_when_a_file_whose_models_it_scripts_changed_since_the_run_began():
    """TorchScript reads a module's source from its file: rows scripted after an edit would compile the wrong lines."""
    import coverage_table

    at_start = coverage_table._sources()
    coverage_table._check_sources(at_start)  # nothing changed: the run goes on
    edited = next(iter(at_start))
    with pytest.raises(SystemExit, match=re.escape(str(edited)) + ".*changed while the table ran.*--resume"):
        coverage_table._check_sources({**at_start, edited: "the digest of an older version"})


def test_every_picture_a_page_shows_exists_and_every_chart_names_the_script_that_measured_it():
    """A picture is never drawn by hand: each chart's SVG says which benchmark or tool wrote the figures it draws."""
    shown = {}
    for page in (ROOT / "docs").rglob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            picture = (page.parent / target).resolve()
            assert picture.is_file(), f"{page.relative_to(ROOT)} shows {target}, which does not exist"
            shown[picture] = page
    charts = sorted((ROOT / "docs" / "charts").glob("*.svg"))
    assert len(charts) >= 8, charts  # the benchmarks' seven and the coverage matrix
    for chart in charts:
        assert chart.resolve() in shown, f"{chart.name} is on no page"
        description = re.search(r"<dc:description>(.*?)</dc:description>", chart.read_text(encoding="utf-8"), re.S)
        assert description, f"{chart.name} has no description naming its source"
        source = re.search(r"((?:benchmarks|tools/docs)/\w+\.py) wrote", description.group(1))
        assert source and (ROOT / source.group(1)).is_file(), description.group(1)
        assert "Measured" in description.group(1) or "Generated" in description.group(1), description.group(1)
    # the Mermaid diagrams render from the site itself (offline too): the script they need is served with it
    scripts = re.findall(r"^\s+- (javascripts/\S+)", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.MULTILINE)
    served = [script for script in scripts if "mermaid" in script and (ROOT / "docs" / script).is_file()]
    assert served, f"{scripts} not in docs/: scripts/setup.sh fetches Mermaid from the npm registry"


def test_the_latency_chart_draws_the_runtime_table_on_the_page():
    """Each panel's 'fastest' label is the table's eager time over its fastest float32 artifact through load()."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import charts

    _, (columns, rows), _ = charts.read_sections(ROOT / "docs" / "performance.md")["runtime"]
    svg = (ROOT / "docs" / "charts" / "runtime.svg").read_text(encoding="utf-8")
    groups = {}
    at = {column: index for index, column in enumerate(columns)}
    for row in rows:
        model, batch, runtime = row[at["model"]], row[at["batch"]], row[at["runtime"]]
        ms = charts.number(row[at["ms (fastest round)"]])
        if runtime == "eager" or (runtime.endswith("(load)") and "int8" not in runtime and "bf16" not in runtime):
            groups.setdefault((model, batch), {})[runtime] = ms
    assert len(groups) >= 6
    for times in groups.values():
        fastest = min(ms for runtime, ms in times.items() if runtime != "eager")
        assert f"fastest: {times['eager'] / fastest:.2f}x eager" in svg, (times, fastest)


def test_the_coverage_matrix_holds_every_verdict_of_the_zoo_table_and_tells_refused_from_failed():
    import coverage_table

    text = (ROOT / "docs" / "coverage.md").read_text(encoding="utf-8")
    rows, columns, states = coverage_table.matrix(text)["Model coverage"]
    lines = text.split("| model | kind |")[1].split("\n\n")[0].splitlines()[2:]
    cells = [cell.strip() for line in lines for cell in line.strip("|").split("|")]
    assert len(rows) == len(lines) and "ExecuTorch" in columns
    assert list(states.values()).count("ok") == sum(cell.startswith("✅") for cell in cells)
    assert len(states) - list(states.values()).count("ok") == sum(cell.startswith("❌") for cell in cells)
    assert states[("retinanet_resnet50_fpn, detection", "OpenVINO (method)")] == "refused"  # made, a mismatch
    assert states[("fasterrcnn_resnet50_fpn, detection", ".pt2")] == "failed"  # torch.export could not capture it
