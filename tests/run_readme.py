"""Run every ```python block of README.md in order, as a new user would paste them; print where antipasto came from."""
import pathlib, re, sys, tempfile, os

readme = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[1] / 'README.md')
blocks = re.findall(r'```python\n(.*?)```', readme.read_text(), flags=re.S)
if not blocks: sys.exit(f'no ```python blocks in {readme}')
os.chdir(tempfile.mkdtemp())
ns = {'__name__': '__readme__'}
for b in blocks: exec(compile(b, str(readme), 'exec'), ns)
import antipasto
print(f'README: {len(blocks)} block(s) ran; antipasto {antipasto.__version__} from {antipasto.__file__}')
