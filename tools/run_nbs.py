"""Execute notebooks in place so their outputs (prints, tables, plots) show in the docs.

`python tools/run_nbs.py [NAMES...]` runs each notebook of nbs/ (or those named, e.g. 20_basis) in a fresh process,
writes the outputs into the .ipynb (minus third-party warnings and progress bars on stderr), then runs nbdev_clean on it. A notebook that raises is left unchanged and
reported; the exit status is the number of failures.
"""
import os, pathlib, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

NBS = pathlib.Path(__file__).parents[1] / 'nbs'
CHILD = r'''
import os, sys, pathlib
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
from execnb.shell import CaptureShell
from execnb.nbio import read_nb, write_nb
fn = pathlib.Path(sys.argv[1]); os.chdir(fn.parent)
nb = read_nb(fn)
sh = CaptureShell(fn)
sh.run_all(nb, exc_stop=True)
# third-party warnings and progress bars on stderr are noise in the docs (and carry this machine's paths)
noise = lambda t: "site-packages/" in t or "\r" in t
for c in nb.cells:
    if c.get("outputs"):
        c["outputs"] = [o for o in c["outputs"] if not (o.get("name") == "stderr" and noise("".join(o.get("text", ""))))]
write_nb(nb, fn)
'''


def run(fn: pathlib.Path) -> tuple[str, int, str]:
    p = subprocess.run([sys.executable, '-c', CHILD, str(fn)], capture_output=True, text=True)
    if p.returncode == 0: subprocess.run(['nbdev_clean', '--fname', str(fn)], capture_output=True)
    return fn.name, p.returncode, (p.stderr or p.stdout)[-2000:]


def main(argv):
    names = [a for a in argv if not a.startswith('-')]
    fns = sorted(f for f in NBS.glob('*.ipynb') if not names or any(f.stem.startswith(n) for n in names))
    fails = 0
    with ThreadPoolExecutor(int(os.environ.get('RUN_NBS_WORKERS', 2))) as ex:
        for name, rc, err in ex.map(run, fns):
            print(f'{"ok  " if rc == 0 else "FAIL"} {name}', flush=True)
            if rc: fails += 1; print(err)
    return fails


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
