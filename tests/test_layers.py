"""The import layers of docs/architecture.md, read from the source: utils/ is the bottom layer, the
model stands on utils/ alone, the data a run loads does not import the offline builders, runs/ stands
below evaluation/, which stands below the training loop (trainer/), serving (deploy/) does not import
the training loop, only runs/ names the run folder's files, and no library module imports a script."""
import ast

import pytest

from runs import loggers, run_folder, run_lock
from tests.conftest import ROOT

SCRIPTS = {path.stem for path in ROOT.glob('*.py')} - {'config'}  # config.py is the options' library
SCRIPT_FOLDERS = {'scripts', 'benchmarks', 'tests'}
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


def library_files(packages=PACKAGES):
    return [path for package in packages for path in sorted((ROOT / package).glob('*.py'))]


def imported_roots(path):
    return {name.split('.')[0] for name in imported_modules(path)}


def string_constants(path):
    """(line, value) of every string literal of `path` but its docstrings."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_layer_checks_see_the_imports_they_look_for():
    assert 'runs.run_folder' in imported_modules(ROOT / 'runs' / 'run_results.py')
    assert 'datasets.text_features' in imported_modules(ROOT / 'datasets' / 'feature_builds.py')
    assert {'train', 'reproduce', 'eval'} <= SCRIPTS and len(library_files()) > 40
    assert 'runs' in imported_roots(ROOT / 'evaluation' / 'final_evaluation.py')
    assert names_a_run_folder_file('args.yaml') and names_a_run_folder_file('models/best_acc_model.pth')
    assert not names_a_run_folder_file('log to TensorBoard in <export_root>/tb')
    report = string_constants(ROOT / 'utils' / 'report.py')  # its literals, not its docstrings
    assert (4, 'Recall@5') in report and not any(value.startswith('Per-size result tables') for _, value in report)


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


@pytest.mark.parametrize('path', library_files(['runs']), ids=lambda p: p.name)
def test_runs_import_neither_evaluation_nor_the_training_loop(path):
    above = imported_roots(path) & ({'trainer', 'evaluation', 'deploy'} | SCRIPTS | SCRIPT_FOLDERS)
    assert not above, f'runs/{path.name} imports {sorted(above)}'


@pytest.mark.parametrize('path', library_files(['evaluation']), ids=lambda p: p.name)
def test_evaluation_imports_nothing_of_the_training_loop(path):
    above = imported_roots(path) & ({'trainer', 'deploy'} | SCRIPTS | SCRIPT_FOLDERS)
    assert not above, f'evaluation/{path.name} imports {sorted(above)}'


@pytest.mark.parametrize('path', library_files(['deploy']), ids=lambda p: p.name)
def test_serving_imports_nothing_of_the_training_loop(path):
    above = imported_roots(path) & ({'trainer'} | SCRIPTS | SCRIPT_FOLDERS)
    assert not above, f'deploy/{path.name} imports {sorted(above)}'


RUN_FOLDER_NAMES = {run_folder.ARGS_FILE, run_folder.INPUTS_FILE, run_folder.MODELS_DIR, run_folder.BEST_CHECKPOINT,
                    run_folder.RECENT_CHECKPOINT, run_folder.LOGS_DIR, run_folder.LOG_FILE, run_folder.TENSORBOARD_DIR,
                    run_lock.LOCK_FILE, loggers.WANDB_ID_FILE,
                    *(f'{name}{ending}' for name in (run_folder.METRICS_FILE, run_folder.LARGEST_METRICS_FILE,
                                                      run_folder.POPULARITY_FILE) for ending in ('', '.json'))}


def names_a_run_folder_file(value):
    """`value` is one of the run folder's names, or a path (no spaces) that ends in one."""
    return value in RUN_FOLDER_NAMES or (' ' not in value and value.rsplit('/', 1)[-1] in RUN_FOLDER_NAMES
                                         and '/' in value)


@pytest.mark.parametrize('path', [path for path in library_files() if path.parent.name != 'runs']
                         + [ROOT / f'{name}.py' for name in sorted(SCRIPTS)], ids=lambda p: f'{p.parent.name}/{p.name}')
def test_only_runs_names_the_files_of_the_run_folder(path):
    """runs/ reads and writes the run folder (runs/run_folder.py has its names): no other library module or
    entry point spells one of them, so none reads or writes those files by itself."""
    spelled = [(line, value) for line, value in string_constants(path) if names_a_run_folder_file(value)]
    assert not spelled, f'{path.relative_to(ROOT)} spells {spelled}'


def test_only_runs_writes_checkpoints():
    writers = [f'{path.parent.name}/{path.name}' for path in library_files() + [ROOT / f'{name}.py' for name in SCRIPTS]
               if 'atomic_torch_save' in path.read_text()]
    assert writers == ['runs/run_folder.py', 'utils/io.py']


def test_no_library_module_imports_a_script():
    offenders = {f'{path.parent.name}/{path.name}': sorted(imported_roots(path) & (SCRIPTS | SCRIPT_FOLDERS))
                 for path in library_files()}
    assert not {path: names for path, names in offenders.items() if names}
