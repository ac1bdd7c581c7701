"""The README's promises that a new user relies on."""

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_test_command_is_what_ci_runs():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.endswith("pytest")][-1]
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 2, "README carries exactly two set-up commands"
    assert blocks[1].strip() == ci


def test_help_is_fast_and_does_not_import_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); from click.testing import CliRunner; "
            "from tfmssass.cli import main; r = CliRunner().invoke(main, ['--help']); "
            "assert r.exit_code == 0 and 'synth' in r.output and 'inspect' in r.output; "
            "assert 'tensorflow' not in sys.modules; print(time.perf_counter() - t)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 2.0 and time.perf_counter() - start < 5.0


def test_readme_is_the_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for page in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / page).is_file(), page
    assert "phantom-trained" in text.lower() and "mkdocs" in text
