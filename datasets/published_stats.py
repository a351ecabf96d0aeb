"""The published statistics of the P5/VIP5 datasets (docs/method.md, Data): what builds of the known
codes are checked against (datasets/prepare.py), and the shapes that memory and speed measurements
stand in for when the real sequences are absent."""

PUBLISHED_STATS = {
    'beauty': {'users': 22363, 'items': 12101, 'interactions': 198502, 'avg_len': 8.88, 'items_with_image': 12023},
    'clothing': {'users': 39387, 'items': 23033, 'interactions': 278677, 'avg_len': 7.08, 'items_with_image': 22299},
    'sports': {'users': 35598, 'items': 18357, 'interactions': 296337, 'avg_len': 8.32, 'items_with_image': 17943},
    'toys': {'users': 19412, 'items': 11924, 'interactions': 167597, 'avg_len': 8.63, 'items_with_image': 11895},
}
