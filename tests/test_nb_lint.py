"The notebook linter finds imports by statement, as nbdev's docs build does."
import importlib.util, pathlib

spec = importlib.util.spec_from_file_location('nb_lint', pathlib.Path(__file__).parents[1] / 'tools' / 'nb_lint.py')
nb_lint = importlib.util.module_from_spec(spec); spec.loader.exec_module(nb_lint)
cell = lambda s: {'cell_type': 'code', 'source': s.splitlines(keepends=True)}


def test_import_in_a_string_is_not_an_import():
    # a script run in a subprocess: its import lines are text, and --fix moved them out of the string (the probe broke)
    assert nb_lint.mixed(cell('probe = """\nimport sys\nprint(1)\n"""\nrun(probe)')) == []


def test_mixed_cell_is_split_and_the_string_kept_whole():
    c = cell('import os\nprobe = """\nimport sys\n"""\nprint(probe)')
    assert nb_lint.mixed(c) == [0]
    imps, rest = nb_lint.fix({'cells': [c]})['cells']
    assert imps['source'] == 'import os'
    assert rest['source'] == 'probe = """\nimport sys\n"""\nprint(probe)'


def test_magic_lines_fall_back_to_lines_and_multiline_imports_are_left_alone():
    assert nb_lint.mixed(cell('import os\n%time x = 1')) == [0]
    assert nb_lint.mixed(cell('from os import (path,\n    sep)\nx = 1')) == []
    assert nb_lint.mixed(cell('#| export\nimport os\nx = 1')) == []
