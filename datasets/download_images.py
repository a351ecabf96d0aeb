"""Download the items' photos (the `imUrl` of meta.json.gz) into `<image_root>/<code>/`.

    python -m datasets.download_images --data_dir data/beauty --image_root photos

Resumable: a photo already on disk that decodes is kept, one that does not is fetched again.
Each photo is fetched with parallel requests, retried with exponential back-off on transient
failures (timeouts, refused connections, HTTP 5xx/408/429), refused above a size limit, verified to
decode as an image, and written atomically, so an interrupted run never leaves half a file.
What could not be had is listed in `<image_root>/<code>/missing_images.tsv` (asin, url, reason).
Standard library plus Pillow and tqdm only.
"""
import argparse
import io
import os
import pickle
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

DEFAULT_MAX_BYTES = 10 * 2 ** 20  # product photos are tens of kB; anything huge is not one
USER_AGENT = 'fMRLRec-image-downloader/1.0 (+research; python-urllib)'
REPORT_NAME = 'missing_images.tsv'
_RETRYABLE_HTTP = {408, 429}


class PermanentFailure(Exception):
    """Retrying will not help (HTTP 4xx, a body that is not an image, a body over the size limit)."""


@dataclass
class ImageJob:
    asin: str
    url: str
    path: Path


@dataclass
class DownloadOutcome:
    asin: str
    url: str
    path: Path
    status: str  # 'downloaded', 'present' (already on disk and valid), 'failed', 'no_url'
    reason: str = ''

    @property
    def ok(self):
        return self.status in ('downloaded', 'present')


def image_file_name(url, asin, prefer_asin=False):
    """The file a photo is saved as: the URL's last path component (made file-name safe), or the
    ASIN with the URL's extension when asked or when the URL has no usable name."""
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', name).lstrip('.')
    extension = Path(name).suffix.lower() or '.jpg'
    if prefer_asin or not Path(name).stem:
        return f'{asin}{extension}'
    return name if Path(name).suffix else name + extension


def image_problem(data):
    """None when `data` (bytes) decodes fully as an image, else why not."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a full decode: catches truncated files that Image.open alone accepts
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError)
        return f'not a decodable image ({type(error).__name__}: {error})'
    return None


def _fetch(url, timeout, max_bytes):
    request = urllib.request.Request(url, headers={'User-Agent': USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get('Content-Length')
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise PermanentFailure(f'too large ({int(length):,} bytes > limit {max_bytes:,})')
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code in _RETRYABLE_HTTP:
            raise
        raise PermanentFailure(f'HTTP {error.code} {error.reason}') from None
    if len(data) > max_bytes:
        raise PermanentFailure(f'too large (more than the limit of {max_bytes:,} bytes)')
    return data


def download_one(job, *, timeout=10.0, retries=3, backoff=0.5, max_bytes=DEFAULT_MAX_BYTES):
    """Fetch one photo unless a valid copy is on disk; never raises, the outcome says what happened."""
    if job.path.exists() and image_problem(job.path.read_bytes()) is None:
        return DownloadOutcome(job.asin, job.url, job.path, 'present')
    reason = ''
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            data = _fetch(job.url, timeout, max_bytes)
        except PermanentFailure as failure:
            return DownloadOutcome(job.asin, job.url, job.path, 'failed', str(failure))
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as error:
            reason = f'{type(error).__name__}: {getattr(error, "reason", error)}'
            continue  # transient: timeouts, refused or reset connections, HTTP 5xx
        problem = image_problem(data)
        if problem is not None:
            return DownloadOutcome(job.asin, job.url, job.path, 'failed', problem)
        job.path.parent.mkdir(parents=True, exist_ok=True)
        partial = job.path.with_name(job.path.name + '.part')
        partial.write_bytes(data)
        os.replace(partial, job.path)
        return DownloadOutcome(job.asin, job.url, job.path, 'downloaded')
    return DownloadOutcome(job.asin, job.url, job.path, 'failed', f'gave up after {retries + 1} tries ({reason})')


def download_images(jobs, *, workers=8, timeout=10.0, retries=3, backoff=0.5,
                    max_bytes=DEFAULT_MAX_BYTES, progress=True):
    """Run the jobs on `workers` threads; outcomes come back in job order."""
    outcomes = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(download_one, job, timeout=timeout, retries=retries, backoff=backoff,
                               max_bytes=max_bytes): index for index, job in enumerate(jobs)}
        bar = tqdm(as_completed(futures), total=len(futures), desc='photos', unit=' img', disable=not progress)
        failed = 0
        for future in bar:
            outcome = outcomes[futures[future]] = future.result()
            failed += not outcome.ok
            bar.set_postfix(failed=failed, refresh=False)
    return outcomes


def dataset_image_jobs(data_dir, image_root='photos', dataset_code=None):
    """(jobs, outcomes for items without an imUrl) for the items of a P5 folder, one job per file."""
    from datasets.p5 import read_datamaps, read_meta  # the P5 folder readers
    data_dir = Path(data_dir)
    code = dataset_code or data_dir.name
    id2item = read_datamaps(data_dir / 'datamaps.json')
    meta = read_meta(data_dir / 'meta.json.gz')
    item2img_path = data_dir / 'item2img_dict.pkl'
    item2img = pickle.loads(item2img_path.read_bytes()) if item2img_path.exists() else {}
    jobs, no_url, seen = [], [], set()
    for item_id in sorted(id2item):
        asin = id2item[item_id]
        url = (meta.get(asin) or {}).get('imUrl')
        if not url:
            no_url.append(DownloadOutcome(asin, '', Path(), 'no_url', 'no imUrl in the metadata'))
            continue
        name = item2img[asin].split('/')[-1] if asin in item2img else image_file_name(url, asin)
        path = Path(image_root) / code / name
        if path not in seen:  # items sharing a photo share the file
            seen.add(path)
            jobs.append(ImageJob(asin, url, path))
    return jobs, no_url


def write_missing_report(outcomes, path):
    """Write asin, url, reason of every photo that is not on disk; returns how many."""
    missing = [o for o in outcomes if not o.ok]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ['asin\turl\treason'] + [f'{o.asin}\t{o.url}\t{o.reason or o.status}' for o in missing]
    path.write_text('\n'.join(lines) + '\n')
    return len(missing)


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m datasets.download_images',
                                     description='Download (resumably) the photos of a P5 dataset folder.')
    parser.add_argument('--data_dir', required=True, help='the P5 folder (datamaps.json, meta.json.gz)')
    parser.add_argument('--image_root', default='photos', help='photos go to <image_root>/<code>/')
    parser.add_argument('--dataset_code', default=None, help='default: the name of --data_dir')
    parser.add_argument('--workers', type=int, default=16, help='parallel requests')
    parser.add_argument('--timeout', type=float, default=15.0, help='seconds per network operation')
    parser.add_argument('--retries', type=int, default=3, help='extra tries after a transient failure')
    parser.add_argument('--backoff', type=float, default=1.0, help='first back-off in seconds, doubled each try')
    parser.add_argument('--max_bytes', type=int, default=DEFAULT_MAX_BYTES, help='largest accepted photo')
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    code = args.dataset_code or Path(args.data_dir).name
    jobs, no_url = dataset_image_jobs(args.data_dir, args.image_root, code)
    print(f'{len(jobs):,} photos to check or fetch into {Path(args.image_root) / code}/; '
          f'{len(no_url):,} items have no imUrl')
    outcomes = download_images(jobs, workers=args.workers, timeout=args.timeout, retries=args.retries,
                               backoff=args.backoff, max_bytes=args.max_bytes, progress=not args.no_progress)
    counts = {status: sum(o.status == status for o in outcomes) for status in ('downloaded', 'present', 'failed')}
    report = Path(args.image_root) / code / REPORT_NAME
    missing = write_missing_report(no_url + outcomes, report)
    print(f'downloaded {counts["downloaded"]:,}, already present {counts["present"]:,}, '
          f'failed {counts["failed"]:,}, no imUrl {len(no_url):,}; {missing:,} missing, listed in {report}')
    print('Rerun the same command to retry the failures; photos already on disk are kept.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
