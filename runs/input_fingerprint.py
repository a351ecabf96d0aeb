"""What a run was trained on, RUN/inputs.json (docs/resume.md, "Inputs"): fingerprints of the dataset,
every feature table and the preprocessing, and their comparison with the run's record.

A run resumed, tested, exported or served on other inputs stops with one line naming what changed,
unless --accept_changed_inputs lets it go on, which is then said on standard error and in the metrics
files. runs/run_inputs.py fingerprints what it loads with these functions.
"""
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets.feature_preprocessing import preprocessing_signature, same_signature
from datasets.features import table_sha256
from runs.run_folder import INPUTS_FILE, CheckpointError, read_inputs_record, read_saved_config

ACCEPT_OPTION = '--accept_changed_inputs'
RECORD_FORMAT = 1


class InputsChangedError(CheckpointError):
    """The dataset or a feature table is not what the run was trained on."""


@dataclass
class LoadedInputs:
    """What load_data loaded, kept on the configuration as `args.resolved_inputs`."""
    fingerprint: dict  # RUN/inputs.json's content for these inputs
    accepted_changes: list = field(default_factory=list)  # differences from the run's record that were let through
    record_due: bool = True  # whether RUN/inputs.json is to be written (run_config.prepare_run_folder)


def _warn(text):
    """A warning on standard error, said once under torchrun (by rank 0, as train.py's messages)."""
    if int(os.environ.get('RANK', '0')) == 0:
        print(text, file=sys.stderr, flush=True)


def _sha256_json(value):
    return hashlib.sha256(json.dumps(value, separators=(',', ':')).encode()).hexdigest()


def dataset_fingerprint(args, data):
    """Counts, and hashes of the sequences (user id -> items) and of the item id -> ASIN map."""
    return {'dataset_code': args.dataset_code, 'num_users': data.num_users, 'num_items': data.num_items,
            'num_interactions': data.num_interactions,
            'sequences_sha256': _sha256_json(sorted(data.sequences.items())),
            'id_maps_sha256': _sha256_json(sorted(data.id2item.items()))}


def features_fingerprint(used_tables, raw_tables):
    """{modality: encoder, text fields, cache file name, shape and content hash of the table as loaded};
    `used_tables`: (modality, encoder, text fields or None, cache file name) of each table used."""
    entries = {}
    for modality, encoder, fields, file_name in used_tables:
        table = raw_tables[modality]
        entries[modality] = {'encoder': str(encoder), **({'text_fields': fields} if fields else {}),
                             'file': file_name, 'shape': [table.shape[0] - 1, table.shape[1]],
                             'sha256': table_sha256(table)}
    return entries


def preprocessing_fingerprint(method, raw_tables, tables):
    """The method, and for each transformed table what its statistics did to it."""
    return {'method': method, **{modality: preprocessing_signature(raw_tables[modality], table)
                                 for modality, table in tables.items() if table is not None and method != 'none'}}


def _count_changes(recorded, current):
    changes = [f'{what} {recorded.get(key)} -> {current[key]}'
               for key, what in (('dataset_code', 'dataset'), ('num_items', 'items'), ('num_users', 'users'),
                                 ('num_interactions', 'interactions')) if recorded.get(key) != current[key]]
    changes += [f'{what} differ' for key, what in (('sequences_sha256', 'sequences'), ('id_maps_sha256', 'id maps'))
                if recorded.get(key) != current[key]]
    return changes


def dataset_changes(recorded, current):
    changes = _count_changes(recorded.get('dataset') or {}, current['dataset'])
    return [f'dataset: {", ".join(changes)}'] if changes else []


def feature_changes(recorded, current):
    """One entry per feature table that differs, then per preprocessing whose statistics differ."""
    old_tables, new_tables = recorded.get('features') or {}, current['features']
    changes = []
    for modality in sorted(set(old_tables) | set(new_tables)):
        old, new = old_tables.get(modality), new_tables.get(modality)
        if old is None or new is None:
            was, now = ('none' if table is None else 'used' for table in (old, new))
            changes.append(f'{modality} features: {was} -> {now}')
            continue
        differences = [f'{key} {old.get(key)!r} -> {new.get(key)!r}' for key in ('encoder', 'text_fields')
                       if old.get(key) != new.get(key)]
        if old.get('shape') != new['shape']:
            differences.append(f'shape {tuple(old.get("shape") or ())} -> {tuple(new["shape"])}')
        elif old.get('sha256') != new['sha256']:
            differences.append(f'content differs (sha256 {str(old.get("sha256"))[:12]}... -> {new["sha256"][:12]}...)')
        if differences:
            changes.append(f'{modality} features ({new["file"]}): {", ".join(differences)}')
    old_method, new_method = (recorded.get('preprocessing') or {}).get('method'), current['preprocessing']['method']
    if old_method != new_method:
        changes.append(f'--feature_preprocessing {old_method} -> {new_method}')
    elif not changes:  # the same tables: only the statistics' computation can differ
        changes += [f'{modality} features: --feature_preprocessing {new_method} statistics differ'
                    for modality, signature in current['preprocessing'].items() if modality != 'method'
                    and not same_signature(recorded['preprocessing'].get(modality) or {}, signature)]
    return changes


class InputsCheck:
    """Compares what is being loaded with the run's record, part by part: the dataset first, before any
    feature table is read or built, so that a re-prepared dataset stops before its cache is touched."""

    def __init__(self, root, recorded, accept, resuming):
        self.root, self.recorded, self.accept, self.resuming = root, recorded, accept, resuming
        self.accepted = []
        if recorded is None:
            _warn(f'warning: {root} has no {INPUTS_FILE} (it was trained before runs recorded their inputs): '
                  f'its dataset and feature tables cannot be checked against what it was trained on'
                  + ('; recording the current ones' if resuming else ''))
        elif recorded.get('accepted_changes'):
            _warn(f'note: {root} was resumed on changed inputs before ({ACCEPT_OPTION}), so it was trained on '
                  f'two sets of inputs: {"; ".join(recorded["accepted_changes"])}')

    def compare(self, changes_of, current):
        if self.recorded is None:
            return
        changes = changes_of(self.recorded, current)
        if changes and not self.accept:
            raise InputsChangedError(
                f'{self.root} was trained on other inputs: {"; ".join(changes)}. Give the data it was trained on '
                f'(--data_root), or pass {ACCEPT_OPTION} to go on with these (then said on standard error and '
                f'in the metrics files).')
        if changes:
            _warn(f'warning: {ACCEPT_OPTION}: {self.root} was trained on other inputs; going on with these: '
                  f'{"; ".join(changes)}')
        self.accepted += changes

    def result(self, fingerprint):
        """The LoadedInputs: changes accepted now and before (at a resume) are kept with the record."""
        earlier = (self.recorded or {}).get('accepted_changes', [])
        accepted = earlier + self.accepted
        record = {**fingerprint, **({'accepted_changes': accepted} if accepted else {})}
        record_due = self.resuming and (self.recorded is None or bool(self.accepted))
        return LoadedInputs(record, accepted, record_due)


def inputs_check(args, trained_run):
    """The check for a resumed run (--resume of a folder holding a run) or a trained one; None for a new run."""
    root = Path(args.export_root)
    if not trained_run and not (args.resume and read_saved_config(root) is not None):
        return None
    return InputsCheck(root, read_inputs_record(root), bool(getattr(args, 'accept_changed_inputs', False)),
                       resuming=not trained_run)
