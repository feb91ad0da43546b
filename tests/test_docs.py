"""The manual and the README: the site builds with --strict, the generated pages match their
generators, every serving variable has a row, no page or comment narrates how the product was built,
and the README's own command blocks work as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from conftest import free_port
from imgclf.config import ServingConfig
from imgclf.reference import PAGES
from imgclf_launch.paths import REPO

README = REPO / "README.md"
README_MAX_LINES = 250
NARRATION = [re.compile(p, re.IGNORECASE) for p in (
    r"\bissue \d+", r"\bsessions? \d+", r"(?<!--)\brounds? \d+", r"\bthe issue's", r"\(before[:,]", r"\bbefore: ",
    r"\bopen item", r"\bour (dev|ci)\b", r"\bwas lent\b", r"\bnone lent\b",
    r"\boriginal project", r"\bthe old name\b", r"\bthe run before it\b", r"\bone earlier run\b", r"\btaken before\b",
)]
SEARCHED = ("README.md", "docs", "container", "scripts", "bench", "docker")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".txt", ".toml", ".yml", ".yaml", ".cfg", ".ini", ".conf", ""}


def test_manual_builds_strict(tmp_path):
    """mkdocs.yml turns broken links and anchors, and pages missing from the nav, into warnings;
    --strict fails on them."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "serving-variables" / "index.html").is_file()


@pytest.mark.parametrize("page", sorted(PAGES))
def test_generated_page_is_current(page):
    assert (REPO / page).read_text() == PAGES[page](), f"{page} is stale: run `python -m imgclf.reference`"


class _Recording(Mapping):
    """An empty environment that records every name looked up in it."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        self.read.add(str(name))
        return False

    def get(self, name: str, default=None):
        self.read.add(name)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.mark.parametrize("gpus", [0, 2])
def test_every_serving_variable_has_exactly_one_row(gpus):
    environ = _Recording()
    ServingConfig.from_environ(gpus=gpus, cpus=8, environ=environ)
    declared = [name for name, _, _ in ServingConfig.VARIABLES]
    assert len(declared) == len(set(declared)), "a variable is declared twice in ServingConfig.VARIABLES"
    assert environ.read - set(declared) == set(), "read by ServingConfig.from_environ but without a row"
    assert set(declared) - environ.read == set(), "a row for a variable ServingConfig.from_environ never reads"


def _searched_files() -> Iterator[Path]:
    for top in SEARCHED:
        root = REPO / top
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in paths:
            parts = path.relative_to(REPO).parts
            if path.is_file() and path.suffix in TEXT_SUFFIXES and not {"__pycache__", "incoming"} & set(parts) \
                    and not any(p.endswith(".egg-info") for p in parts):
                yield path


def test_no_narration_of_how_the_product_was_built():
    """The product's own voice: what it does and why. History belongs in CHANGELOG.md."""
    hits = []
    for path in _searched_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            hits += [f"{path.relative_to(REPO)}:{number}: {line.strip()}" for p in NARRATION if p.search(line)]
    assert not hits, "narration found:\n" + "\n".join(hits)


def test_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = REPO / file
        assert path.exists(), f"README links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)
            assert anchor in {slugify(h, "-") for h in headings}, f"README links to {target}: no such heading"


def readme_block(marker: str) -> list[str]:
    """The command lines of the fenced block after ``<!-- tested: MARKER ...-->`` in README.md."""
    text = README.read_text()
    found = re.search(rf"<!-- tested: {marker}\b.*?-->\n```\w*\n(.*?)\n```", text, re.DOTALL)
    assert found, f"README.md has no block marked <!-- tested: {marker} -->"
    return [line for line in found.group(1).splitlines() if line.strip()]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z0-9-]+):.*## ", (REPO / "Makefile").read_text(), re.MULTILINE))


def test_readme_fresh_machine_commands_are_what_the_makefile_and_ci_provide():
    commands = [line.split("#")[0].strip() for line in readme_block("fresh-machine")]
    assert commands == ["make demo", "make test"]
    assert {c.split()[1] for c in commands} <= _make_targets()
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == "make test", ".ci/run must end by running the README's test command"


@pytest.mark.docker
def test_readme_local_run_works_as_written(image, sample_data, tmp_path):
    """The README's docker block, line by line, against the built image: the image, the sample data,
    the port and the test_dir are given through make's variables and the scripts' environment. The
    job trains one epoch (test_docker.py trains the README's eight and checks the model's answers)."""
    lines = readme_block("docker")
    assert {line.split()[1] for line in lines if line.startswith("make ")} <= _make_targets()
    repository, _, tag = image.rpartition(":")
    data = tmp_path / "data"
    shutil.copytree(sample_data, data)
    (data / ".done").touch()  # the sample data is there: make must not write it again
    venv_marker = Path(sys.prefix) / ".installed"
    make_args = (f"--old-file={venv_marker} --old-file={data}/.done VENV={sys.prefix} DATA={data} "
                 f"IMAGE={repository} TAG={tag}")
    port, name = free_port(), f"imgclf-readme-{os.getpid()}"
    script = "\n".join(
        line.replace("make ", f"make {make_args} ", 1).replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        .replace("local_test/data/", f"{data}/")
        for line in lines
    )
    test_dir = tmp_path / "test_dir"
    shutil.copytree(REPO / "local_test" / "test_dir" / "input", test_dir / "input")
    hyperparameters = test_dir / "input" / "config" / "hyperparameters.json"
    hyperparameters.write_text(json.dumps({**json.loads(hyperparameters.read_text()), "epochs": "1"}))
    env = {**os.environ, "TEST_DIR": str(test_dir), "PORT": str(port), "NETWORK": "host", "NAME": name}
    log = tmp_path / "output.txt"  # a file, not a pipe: the backgrounded server keeps its stdout open
    try:
        with log.open("w") as out:
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env,
                                    stdout=out, stderr=subprocess.STDOUT, timeout=900)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    output = log.read_text()
    assert result.returncode == 0, output[-6000:]
    decoder = json.JSONDecoder()
    answers = [decoder.raw_decode(output, m.start())[0] for m in re.finditer(r'\{"predictions"', output)]
    assert len(answers) == 2, output[-6000:]
    labels = {p.name.split(".", 1)[1] for p in (data / "train").iterdir()}
    assert all(len(a["predictions"][0]) == 3 and {p["label"] for p in a["predictions"][0]} <= labels for a in answers)
