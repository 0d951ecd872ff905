"""The README stays a one-page entry point: the two set-up commands CI runs, and links that resolve.

Every option of the public configs is documented on the docs site (tests/test_docs.py)."""

import re
from pathlib import Path

REPO = Path(__file__).parents[1]
README = (REPO / "README.md").read_text()


def test_readme_has_the_two_setup_commands():
    assert "bash scripts/setup_cpu.sh && .venv/bin/accelerate launch recipes/grpo_mt.py" in README
    assert "bash scripts/setup_cpu.sh && .venv/bin/python -m pytest" in README


def test_readme_fits_on_a_page_and_shows_the_start_first():
    lines = README.splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:60])
    for needed in ("scripts/setup_cpu.sh", "GRPOTrainer(", "reward_funcs=[judge]"):
        assert needed in first_screen


def test_readme_links_into_the_docs_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert links and all((REPO / link).is_file() for link in links)
