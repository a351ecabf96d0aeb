"""`--config FILE.yaml`: options from a YAML file, as if they were written first on the command line.

A file maps option names (as in args.yaml: `lr: 0.001`, `use_img_encoder: false`,
`mrl_hidden_sizes: 8,16,32` or a list, `metric_ks: [5, 10]`) to values; `null` keeps the default.
`expand_config_argv` replaces `--config FILE` by the file's options placed before the rest of the
command line, so an option given on the command line wins (argparse keeps the last value), and
everything after (validation, --resume's agreement checks, args.yaml) sees ordinary options.

A value the option cannot take is reported naming the file: at once when the option's own parser
refuses it (`lr: fast`), and through `name_config_file` when a later check does (`lr: -1`).
"""
import argparse
import difflib
import re
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
    _check_values(path, tokens, parser)
    return tokens


def _check_values(path, tokens, parser):
    """ConfigFileError naming the file when an option of the file refuses its value (type, choices)."""
    exit_on_error = parser.exit_on_error
    parser.exit_on_error = False  # argparse then raises ArgumentError instead of exiting
    try:
        parser.parse_known_args(tokens)
    except argparse.ArgumentError as error:
        raise ConfigFileError(f'--config {path}: {error}') from None
    finally:
        parser.exit_on_error = exit_on_error


# tuple(expanded argv) -> (the --config file, the options it set that the command line does not set
# again): later checks see the expanded argv only, and name_config_file finds the file from it.
_FILE_OPTIONS = {}


def _option_names(tokens):
    """Option names in command-line tokens (`--no-x` names x; values are skipped)."""
    names = set()
    for token in tokens:
        if token.startswith('--') and len(token) > 2:
            name = token[2:].split('=', 1)[0].replace('-', '_')
            names.add(name[3:] if name.startswith('no_') else name)
    return names


def name_config_file(message, argv):
    """`message` (a refused option value) prefixed with `--config FILE: ` when an option it names came
    from the --config file of `argv` (as expand_config_argv returned it), and not the command line."""
    origin = _FILE_OPTIONS.get(tuple(argv or ()))
    if origin is None:
        return message
    path, from_file = origin
    named = {name.replace('-', '_') for name in re.findall(r'--([A-Za-z0-9_-]+)', message)}
    return f'--config {path}: {message}' if named & from_file else message


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
    if not files:
        return rest
    tokens = config_file_tokens(files[0], parser)
    expanded = tokens + rest
    _FILE_OPTIONS[tuple(expanded)] = (files[0], _option_names(tokens) - _option_names(rest))
    return expanded
