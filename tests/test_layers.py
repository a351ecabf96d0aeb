"""The import layers of docs/architecture.md, read from the source: utils/ is the bottom layer, the
model stands on utils/ alone, the data a run loads does not import the offline builders, and no
library module imports a script."""
import ast

import pytest

from tests.conftest import ROOT

SCRIPTS = {path.stem for path in ROOT.glob('*.py')} - {'config'}  # config.py is the options' library
PACKAGES = ('model', 'trainer', 'evaluation', 'runs', 'datasets', 'deploy', 'utils')
RUN_TIME_DATA = ('p5', 'features', 'feature_preprocessing', 'item_text', 'demo', 'published_stats')
BUILDERS = ('prepare', 'raw_amazon', 'download_images', 'text_features', 'image_features', 'feature_builds',
            'encoders', 'encoder_install')


def imported_modules(path):
    """Dotted names of every module `path` imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return names


def library_files():
    return [path for package in PACKAGES for path in sorted((ROOT / package).glob('*.py'))]


def test_the_layer_checks_see_the_imports_they_look_for():
    assert 'runs.run_folder' in imported_modules(ROOT / 'runs' / 'run_results.py')
    assert 'datasets.text_features' in imported_modules(ROOT / 'datasets' / 'feature_builds.py')
    assert {'train', 'reproduce', 'eval'} <= SCRIPTS and len(library_files()) > 40


@pytest.mark.parametrize('path', sorted((ROOT / 'utils').glob('*.py')), ids=lambda p: p.name)
def test_utils_imports_nothing_above_it(path):
    above = {name for name in imported_modules(path)
             if name.split('.')[0] in {'config', *PACKAGES} - {'utils'} | SCRIPTS}
    assert not above, f'utils/{path.name} imports {sorted(above)}'


@pytest.mark.parametrize('path', sorted((ROOT / 'model').glob('*.py')), ids=lambda p: p.name)
def test_the_model_imports_only_the_model_and_utils(path):
    above = {name for name in imported_modules(path)
             if name.split('.')[0] in {'config', 'trainer', 'evaluation', 'runs', 'datasets', 'deploy'} | SCRIPTS}
    assert not above, f'model/{path.name} imports {sorted(above)}'


@pytest.mark.parametrize('name', RUN_TIME_DATA)
def test_the_data_a_run_loads_does_not_import_the_builders(name):
    imports = imported_modules(ROOT / 'datasets' / f'{name}.py')
    builders = {module for module in imports for builder in BUILDERS if module == f'datasets.{builder}'
                or module.startswith(f'datasets.{builder}.')}
    assert not builders, f'datasets/{name}.py imports {sorted(builders)}'


def test_no_library_module_imports_a_script():
    offenders = {f'{path.parent.name}/{path.name}': sorted(imported_modules(path) & SCRIPTS) for path in library_files()}
    assert not {path: names for path, names in offenders.items() if names}
