"""`--config FILE.yaml`: options from a YAML file, as if they were written first on the command line.

A file maps option names (as in args.yaml: `lr: 0.001`, `use_img_encoder: false`,
`mrl_hidden_sizes: 8,16,32` or a list, `metric_ks: [5, 10]`) to values; `null` keeps the default.
`expand_config_argv` replaces `--config FILE` by the file's options placed before the rest of the
command line, so an option given on the command line wins (argparse keeps the last value), and
everything after (validation, --resume's agreement checks, args.yaml) sees ordinary options.
"""
import difflib
from pathlib import Path

import yaml

CONFIG_OPTION = '--config'


class ConfigFileError(ValueError):
    """A --config file that cannot be read or names an unknown option."""


def _option_actions(parser):
    """dest -> the action of `--dest` (a boolean's `--no-dest` shares the dest and is skipped)."""
    return {action.dest: action for action in parser._actions if f'--{action.dest}' in action.option_strings}


def config_file_tokens(path, parser):
    """The command-line tokens equivalent to the YAML file at `path`."""
    path = Path(path)
    try:
        options = yaml.safe_load(path.read_text(encoding='utf-8'))
    except OSError as error:
        raise ConfigFileError(f'--config {path}: cannot be read ({error.strerror or error})') from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        reason = (str(error).splitlines() or [''])[0]
        raise ConfigFileError(f'--config {path}: not valid YAML ({reason})') from None
    if options is None:
        return []
    if not isinstance(options, dict):
        raise ConfigFileError(f'--config {path}: expected option: value lines (a YAML mapping), got '
                              f'{type(options).__name__}')
    actions = _option_actions(parser)
    tokens = []
    for key, value in options.items():
        key = str(key).replace('-', '_')
        if key == CONFIG_OPTION.lstrip('-') or key not in actions:
            close = difflib.get_close_matches(key, [k for k in actions if k != 'config'], n=1)
            hint = f' (did you mean {close[0]}?)' if close else ''
            raise ConfigFileError(f'--config {path}: {key!r} is not an option of this command{hint}')
        if value is None:
            continue
        tokens.append(f'--{key}')
        if isinstance(value, bool):
            tokens.append(str(value))
        elif isinstance(value, (list, tuple)):
            if actions[key].nargs in ('+', '*'):
                tokens.extend(str(v) for v in value)
            else:
                tokens.append(','.join(str(v) for v in value))
        else:
            tokens.append(str(value))
    return tokens


def expand_config_argv(argv, parser):
    """`argv` with `--config FILE` (or `--config=FILE`) replaced by the file's options, put first."""
    argv = list(argv)
    rest, files = [], []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == CONFIG_OPTION:
            if index + 1 >= len(argv):
                raise ConfigFileError(f'{CONFIG_OPTION} needs a file name')
            files.append(argv[index + 1])
            index += 2
            continue
        if token.startswith(CONFIG_OPTION + '='):
            files.append(token.split('=', 1)[1])
        else:
            rest.append(token)
        index += 1
    if len(files) > 1:
        raise ConfigFileError(f'{CONFIG_OPTION} given {len(files)} times ({", ".join(files)}); give one file')
    return (config_file_tokens(files[0], parser) if files else []) + rest
