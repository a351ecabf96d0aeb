"""The paper's configuration and published numbers (docs/method.md), for presets and side-by-side tables."""

# The nested sizes of every configuration in the paper (the default of --mrl_hidden_sizes).
PAPER_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)
PAPER_NUM_BLOCKS = 2        # LRU blocks of its best configurations (presets/*.yaml)
PAPER_FEATURE_WIDTH = 1024  # each frozen feature: bge-large text and SigLIP-large image are both 1024-d
# The metrics of the paper's Table 2, in its column order.
PAPER_COLUMNS = ('NDCG@5', 'Recall@5', 'NDCG@10', 'Recall@10')

# Table 2, test set, fMRLRec at D = 1024.
PAPER_FMRLREC = {
    'beauty': {'NDCG@5': 0.0415, 'Recall@5': 0.0613, 'NDCG@10': 0.0520, 'Recall@10': 0.0939},
    'clothing': {'NDCG@5': 0.0193, 'Recall@5': 0.0333, 'NDCG@10': 0.0259, 'Recall@10': 0.0541},
    'sports': {'NDCG@5': 0.0230, 'Recall@5': 0.0349, 'NDCG@10': 0.0284, 'Recall@10': 0.0516},
    'toys': {'NDCG@5': 0.0461, 'Recall@5': 0.0672, 'NDCG@10': 0.0552, 'Recall@10': 0.0956},
}
# Ablations on Beauty (NDCG@10, Recall@10).
PAPER_ABLATIONS = {
    ('beauty', 'text'): {'NDCG@10': 0.0449, 'Recall@10': 0.0859},
    ('beauty', 'image'): {'NDCG@10': 0.0464, 'Recall@10': 0.0833},
    ('beauty', 'id'): {'NDCG@10': 0.0288, 'Recall@10': 0.0431},
}
# The strongest baseline in the table, LRURec (ID-based).
PAPER_LRUREC = {
    'beauty': {'NDCG@10': 0.0438, 'Recall@10': 0.0871},
    'sports': {'NDCG@10': 0.0266, 'Recall@10': 0.0536},
}


def paper_reference(dataset, modality):
    """(label, metrics) of the paper row that a run of this dataset and modality compares with."""
    if modality == 'text+image':
        row = PAPER_FMRLREC.get(dataset)
        return ('fMRLRec (paper, D=1024)', row) if row else (None, None)
    row = PAPER_ABLATIONS.get((dataset, modality))
    if row:
        return (f'fMRLRec {modality} only (paper ablation)', row)
    if modality == 'id' and dataset in PAPER_LRUREC:
        return ('LRURec (paper, ID-based)', PAPER_LRUREC[dataset])
    if dataset in PAPER_FMRLREC:  # no row of this kind in the paper: its full model, for scale
        return ('fMRLRec text+image (paper; no such ablation for this dataset)', PAPER_FMRLREC[dataset])
    return None, None
