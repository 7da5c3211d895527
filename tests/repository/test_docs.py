"""README and docs/ against the code, without a server: a newcomer's commands must exist as
written, and the tables that mirror the code must match it."""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.docs import DOCS, README_PATH, code_blocks, commands, section
from support.service import REPO

README = README_PATH.read_text()
DOCUMENTS = {path.relative_to(REPO).as_posix(): path.read_text() for path in [README_PATH, *DOCS]}
DEMO_HEADING = "### The demo model on synthetic drawings"
SETTINGS_TABLE = REPO / "docs" / "settings_table.py"
# Commands of other tools: the served and container suites run what they can of them
# (curl in tests/e2e/test_readme.py, the container and Kubernetes files in
# tests/e2e/test_container.py and tests/repository/test_deploy_manifests.py); here, the repo
# files they name must exist.
OTHER_TOOLS = {
    "curl",
    "docker",
    "podman",
    "skopeo",
    "kubectl",
    "kustomize",
    "bentoml",
    "cd",
    "until",
}
GENERATED = ("deploy/.containers/", "bench/out/")  # made by the commands themselves


def test_quickstart_is_exactly_two_commands() -> None:
    blocks = code_blocks(section(README, "Quickstart"), "bash")
    assert len(blocks) == 1
    assert blocks[0].split("\n")[:-1] == ["make serve", "make test"]


def test_readme_is_a_five_minute_read_and_links_every_doc() -> None:
    assert len(README.splitlines()) <= 250
    for doc in DOCS:
        assert f"(docs/{doc.name})" in README, f"README does not link docs/{doc.name}"


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_make_targets_named_exist(name: str) -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in set(re.findall(r"`make ([a-z-]+)", DOCUMENTS[name])):
        assert re.search(rf"^{target}:", makefile, re.M), f"{name}: Makefile has no {target}"


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    headings = re.findall(r"^#+ (.*)$", prose, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_relative_links_point_at_files_and_headings_that_exist(name: str) -> None:
    folder = (REPO / name).parent
    for target, anchor in re.findall(r"\]\(([^)#:\s]*)(?:#([^)\s]+))?\)", DOCUMENTS[name]):
        path = (folder / target) if target else REPO / name
        assert path.exists(), f"{name} links {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path.read_text()), f"{name}: no heading for {target}#{anchor}"


@functools.cache
def help_text(program: tuple[str, ...]) -> str:
    result = subprocess.run(
        [*program, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{' '.join(program)} --help failed:\n{result.stderr}"
    return result.stdout


def program_of(words: list[str]) -> tuple[str, ...]:
    """The part of a .venv/bin command that --help is asked of: a script, a module, locust -f."""
    tool = str(REPO / words[0])
    if words[0] == ".venv/bin/python":
        tool = sys.executable  # this venv's interpreter, wherever it lives
        return (tool, *words[1:3]) if words[1] == "-m" else (tool, words[1])
    if Path(words[0]).name == "locust":
        return (shutil.which("locust") or str(Path(sys.executable).parent / "locust"), *words[1:3])
    return (tool,)


@pytest.mark.parametrize(
    "command",
    [(name, c) for name, text in sorted(DOCUMENTS.items()) for c in commands(text)],
    ids=lambda nc: f"{nc[0]}: {nc[1][:60]}",
)
def test_every_documented_command_names_things_that_exist(command: tuple[str, str]) -> None:
    """`make X`: a target. Our scripts: every --option is one their --help lists. Other
    tools: the repository files they name exist."""
    name, line = command
    words = shlex.split(line)
    if words[0] == "make":
        makefile = (REPO / "Makefile").read_text()
        assert re.search(rf"^{words[1]}:", makefile, re.M), f"{name}: no target {words[1]}"
    elif words[0].startswith(".venv/bin/"):
        text = help_text(program_of(words))
        if "-f" in words:  # a locustfile's own options: its --help does not list them
            text += (REPO / words[words.index("-f") + 1]).read_text()
        for option in {w.split("=")[0] for w in words if w.startswith("--")}:
            assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", text, re.M), (
                f"{name}: `{line}` uses {option}, which `--help` does not list"
            )
    else:
        assert words[0] in OTHER_TOOLS, f"{name}: no check for `{words[0]}` commands yet"
    for word in words:
        path = word.split(":", 1)[-1] if word.startswith("oci-archive:") else word
        if path.startswith(("deploy/", "bench/")) and not path.startswith(GENERATED):
            assert (REPO / path).exists(), f"{name}: `{line}` names {path}, which is missing"


def test_curl_answers_shown_are_the_shipped_demo_models_answers_on_examples() -> None:
    """The README's example answers are what saved_model/ says about examples/ (in-process)."""
    from kitchenware.runtime.preprocessing import preprocess_bytes
    from kitchenware.runtime.tensorflow_backend import Classifier

    text = section(README, "Classify with curl").split(DEMO_HEADING)[1]
    assert "Answers of the shipped demo model" in text
    shown = re.findall(r'"label": "(\w+)", "confidence": ([0-9.]+)', text)
    files = re.findall(r"=@examples/(\S+)", text)
    assert len(shown) == len(files) == 4  # cup alone, then cup, plate, fork in one batch
    classifier = Classifier.load(REPO / "saved_model")
    for file, (label, confidence) in zip(files, shown, strict=True):
        data = (REPO / "examples" / file).read_bytes()
        probabilities = classifier.predict_arrays(preprocess_bytes(data, classifier.image_size))
        best = int(probabilities[0].argmax())
        assert classifier.class_names[best] == label, file
        assert float(probabilities[0][best]) == pytest.approx(float(confidence), abs=2e-4), file


def test_settings_table_is_the_settings_class(tmp_path: Path) -> None:
    """docs/operations.md's table is generated (`make docs`); --check fails on a stale one."""
    check = [sys.executable, str(SETTINGS_TABLE), "--check"]
    current = subprocess.run(check, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert current.returncode == 0, current.stderr
    stale = tmp_path / "operations.md"
    text = (REPO / "docs" / "operations.md").read_text()
    stale.write_text(text.replace("| `KITCHENWARE_TOP_K` | `3` |", "| `KITCHENWARE_TOP_K` | `5` |"))
    result = subprocess.run(
        [*check, "--file", str(stale)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "make docs" in result.stderr
    subprocess.run([*check[:2], "--file", str(stale)], cwd=REPO, check=True, timeout=60)
    assert stale.read_text() == text  # regenerated: the real table again
