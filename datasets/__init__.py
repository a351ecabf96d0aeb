"""The data, in two kinds of module (docs/architecture.md, "Layers").

What a run loads (train.py, eval.py, export.py, recommend.py):
    p5.py                  the P5/VIP5 dataset folder and the leave-one-out split
    features.py            the frozen feature tables: cache paths, checks, loading
    feature_preprocessing.py  --feature_preprocessing applied to a loaded table
    item_text.py           which metadata fields make an item's text (part of a text table's name)
    demo.py                the synthetic demo dataset, made on first use
    published_stats.py     the published P5/VIP5 statistics

What builds the files, offline (python -m datasets.<name>), or when a run finds a table missing:
    prepare.py, raw_amazon.py   McAuley's raw files -> a P5 folder
    download_images.py          the items' photos
    text_features.py, image_features.py  encode items into feature tables
    feature_builds.py, encoders.py       a run's check of its tables and encoders, building the missing ones
"""
