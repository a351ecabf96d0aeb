"""The item catalogue an export carries: item id -> ASIN, and titles where the dataset has metadata."""
from dataclasses import dataclass
from pathlib import Path

from datasets.p5 import read_meta

META_FILE = 'meta.json.gz'


@dataclass
class Catalogue:
    asins: list                 # index = item id; '' at 0 (padding)
    titles: list = None         # index = item id; None where unknown; None altogether without metadata



def read_catalogue(data_dir, id2item, num_items):
    """ASINs from the datamaps and titles from meta.json.gz when the dataset has one."""
    asins = [''] + [id2item[i] for i in range(1, num_items + 1)]
    meta_path = Path(data_dir) / META_FILE
    if not meta_path.exists():
        return Catalogue(asins, None)
    meta = read_meta(meta_path)
    titles = [None] + [meta.get(asin, {}).get('title') for asin in asins[1:]]
    return Catalogue(asins, [None if t is None else str(t) for t in titles])
