"""The photo downloader against a local HTTP server on 127.0.0.1 (no other network)."""
import gzip
import io
import json
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from datasets.download_images import (REPORT_NAME, ImageJob, download_images, download_one, image_file_name,
                                      main)


def png_bytes(colour):
    buffer = io.BytesIO()
    Image.new('RGB', (8, 8), colour).save(buffer, format='PNG')
    return buffer.getvalue()


class PhotoServer(BaseHTTPRequestHandler):
    """Routes: /ok/<name> an image; /dead a 404; /html a 200 page that is not an image; /slow an image
    after 2 s; /big a body over the size limit; /flaky a 503 on the first request, then an image;
    /truncated half a PNG."""
    requests = []
    lock = threading.Lock()

    def do_GET(self):
        with self.lock:
            self.requests.append(self.path)
            flaky_before = self.requests.count(self.path) > 1
        if self.path.startswith('/ok/'):
            return self._send(200, png_bytes((len(self.path) * 9 % 255, 0, 0)))
        if self.path == '/flaky':
            return self._send(200, png_bytes((0, 0, 255))) if flaky_before else self._send(503, b'busy')
        if self.path == '/html':
            return self._send(200, b'<html><body>Image not available</body></html>', 'text/html')
        if self.path == '/slow':
            time.sleep(2.0)
            return self._send(200, png_bytes((1, 2, 3)))
        if self.path == '/big':
            return self._send(200, b'\x89PNG' + b'0' * 50_000)
        if self.path == '/truncated':
            return self._send(200, png_bytes((5, 5, 5))[:40])
        return self._send(404, b'not found', 'text/plain')

    def _send(self, status, body, content_type='image/png'):
        try:
            self.send_response(status)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the slow route)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for name in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)  # talk to 127.0.0.1 directly
    PhotoServer.requests = []
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), PhotoServer)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]  # nothing listens here once the socket is closed


FAST = dict(workers=8, timeout=0.5, retries=1, backoff=0.05, max_bytes=20_000, progress=False)


def test_outcomes_for_every_kind_of_url(tmp_path, server):
    urls = {'a': '/ok/a.jpg', 'b': '/ok/b.jpg', 'dead': '/dead', 'html': '/html', 'slow': '/slow',
            'big': '/big', 'flaky': '/flaky', 'truncated': '/truncated'}
    jobs = [ImageJob(asin, server + route, tmp_path / 'photos' / f'{asin}.png') for asin, route in urls.items()]
    jobs.append(ImageJob('refused', f'http://127.0.0.1:{closed_port()}/x.jpg', tmp_path / 'photos' / 'refused.png'))
    started = time.monotonic()
    outcomes = {o.asin: o for o in download_images(jobs, **FAST)}
    assert time.monotonic() - started < 4.0  # the slow route costs two timeouts, run in parallel

    assert {a for a, o in outcomes.items() if o.status == 'downloaded'} == {'a', 'b', 'flaky'}
    assert PhotoServer.requests.count('/flaky') == 2  # a 503 is retried
    assert PhotoServer.requests.count('/dead') == 1  # a 404 is not
    assert 'HTTP 404' in outcomes['dead'].reason
    assert 'not a decodable image' in outcomes['html'].reason
    assert 'not a decodable image' in outcomes['truncated'].reason
    assert 'too large' in outcomes['big'].reason
    assert 'gave up after 2 tries' in outcomes['slow'].reason and 'timed out' in outcomes['slow'].reason
    assert 'gave up after 2 tries' in outcomes['refused'].reason
    for asin in ('dead', 'html', 'big', 'slow', 'refused', 'truncated'):
        assert not outcomes[asin].ok and not (tmp_path / 'photos' / f'{asin}.png').exists()
    assert Image.open(tmp_path / 'photos' / 'a.png').size == (8, 8)
    assert not list((tmp_path / 'photos').glob('*.part'))  # written atomically


def test_resume_keeps_valid_photos_and_refetches_broken_ones(tmp_path, server):
    good, broken = tmp_path / 'p' / 'good.png', tmp_path / 'p' / 'broken.png'
    good.parent.mkdir()
    good.write_bytes(png_bytes((0, 1, 0)))
    broken.write_bytes(b'half a photo')  # what an interrupted, non-atomic download would leave
    outcomes = download_images([ImageJob('g', server + '/ok/g.jpg', good),
                                ImageJob('b', server + '/ok/b.jpg', broken)], **FAST)
    assert [o.status for o in outcomes] == ['present', 'downloaded']
    assert PhotoServer.requests == ['/ok/b.jpg']
    assert download_one(ImageJob('b', server + '/ok/b.jpg', broken)).status == 'present'


def test_image_file_name():
    assert image_file_name('http://ecx.images-amazon.com/images/I/41X%2BabcL._SY300_.jpg', 'B1') == '41X_abcL._SY300_.jpg'
    assert image_file_name('http://x/images/I/noext', 'B1') == 'noext.jpg'
    assert image_file_name('http://x/', 'B1') == 'B1.jpg'
    assert image_file_name('http://x/a/photo.PNG?size=2', 'B1', prefer_asin=True) == 'B1.png'


def test_command_on_a_dataset_folder(tmp_path, server, capsys):
    data_dir = tmp_path / 'data' / 'toy'
    data_dir.mkdir(parents=True)
    asins = ['P1', 'P2', 'P3', 'P4']
    (data_dir / 'datamaps.json').write_text(json.dumps({'item2id': {a: str(i) for i, a in enumerate(asins, 1)}}))
    meta = [{'asin': 'P1', 'imUrl': server + '/ok/one.jpg'}, {'asin': 'P2', 'imUrl': server + '/dead'},
            {'asin': 'P3', 'title': 'no image url'}, {'asin': 'P4', 'imUrl': server + '/ok/one.jpg'}]
    with gzip.open(data_dir / 'meta.json.gz', 'wt') as handle:
        handle.writelines(repr(m) + '\n' for m in meta)
    item2img = {'P1': 'toy/one.jpg', 'P2': 'toy/dead.jpg', 'P4': 'toy/one.jpg'}
    (data_dir / 'item2img_dict.pkl').write_bytes(pickle.dumps(item2img))
    args = ['--data_dir', str(data_dir), '--image_root', str(tmp_path / 'photos'), '--timeout', '1',
            '--retries', '0', '--no_progress']
    assert main(args) == 0
    assert Image.open(tmp_path / 'photos/toy/one.jpg').format == 'PNG'  # saved under item2img's name
    assert PhotoServer.requests.count('/ok/one.jpg') == 1  # P1 and P4 share the file
    report = (tmp_path / 'photos/toy' / REPORT_NAME).read_text().splitlines()
    assert report[0] == 'asin\turl\treason'
    assert sorted(line.split('\t')[0] for line in report[1:]) == ['P2', 'P3']
    out = capsys.readouterr().out
    assert 'downloaded 1, already present 0, failed 1, no imUrl 1; 2 missing' in out
    assert main(args) == 0  # resumed: nothing new to fetch
    assert 'downloaded 0, already present 1' in capsys.readouterr().out
    assert PhotoServer.requests.count('/ok/one.jpg') == 1
    assert Path(tmp_path / 'photos/toy').is_dir()
