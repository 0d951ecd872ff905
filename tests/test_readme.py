"""The README stays a one-page entry point: the two set-up commands CI runs (the test command is the very line
.ci/run runs), and links that resolve.

Every option of the public configs is documented on the docs site (tests/test_docs.py)."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]
README = (REPO / "README.md").read_text()


TEST_COMMAND = "bash scripts/setup_cpu.sh && bash scripts/run_tests.sh"


def test_readme_has_the_two_setup_commands():
    assert "bash scripts/setup_cpu.sh && .venv/bin/accelerate launch recipes/grpo_mt.py" in README
    assert TEST_COMMAND in README


def test_ci_runs_the_readme_test_command():
    # CI and a reader run the same line, so what the README promises is what CI checks.
    ci_commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                   if line.strip() and not line.startswith("#")]  # fmt: skip
    assert ci_commands[-1] == TEST_COMMAND


def test_run_tests_runs_fast_then_slow_and_counts_both(tmp_path):
    """scripts/run_tests.sh on a throwaway test folder: a fast and a slow pytest run, one count line each, extra
    arguments passed to both, and a non-zero exit when one of the runs fails."""
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nmarkers = ["slow: slow"]\n')
    (tmp_path / "test_split.py").write_text(
        "import os, pytest\n"
        "def test_fast(): pass\n"
        "def test_fast_2(): pass\n"
        "@pytest.mark.slow\n"
        "def test_slow(): assert not os.environ.get('FAIL_SLOW')\n"
    )
    script = REPO / "scripts" / "run_tests.sh"
    # no plugin autoload: the throwaway tests need none, and loading them costs seconds per run
    env = {**os.environ, "PYTHON": sys.executable, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), str(tmp_path), "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                               *args], env={**env, **extra_env}, capture_output=True, text=True, timeout=300)  # fmt: skip

    ok = run()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    counts = ok.stdout.split("=== test counts")[1]
    assert re.search(r"fast: +2 passed, 1 deselected in .* \(exit 0\)", counts), counts
    assert re.search(r"slow: +1 passed, 2 deselected in .* \(exit 0\)", counts), counts
    assert ok.stdout.index('-m not slow') < ok.stdout.index("-m slow")  # fast first

    failed = run(FAIL_SLOW="1")
    assert failed.returncode != 0
    assert re.search(r"fast: +2 passed.*\(exit 0\)", failed.stdout) and re.search(r"slow: +1 failed.*\(exit 1\)",
                                                                                  failed.stdout)  # fmt: skip

    selected = run("-m", "slow", "-k", "slow")  # an explicit -m: one run with exactly that selection
    assert selected.returncode == 0 and "selected:" in selected.stdout and "fast:" not in selected.stdout


def test_readme_fits_on_a_page_and_shows_the_start_first():
    lines = README.splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:60])
    for needed in ("scripts/setup_cpu.sh", "GRPOTrainer(", "reward_funcs=[judge]"):
        assert needed in first_screen


def test_readme_links_into_the_docs_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert links and all((REPO / link).is_file() for link in links)
