"""The README's quickstart runs as written."""
import pathlib, subprocess, sys

ROOT = pathlib.Path(__file__).parents[1]


def test_readme_quickstart_runs():
    out = subprocess.run([sys.executable, str(ROOT / 'tests' / 'run_readme.py'), str(ROOT / 'README.md')],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'block(s) ran' in out.stdout
