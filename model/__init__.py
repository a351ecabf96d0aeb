"""fMRLRec model: nested (Matryoshka) LRU recommender and its plain reference computation."""
from model.fmrlrec import FMRLRec
from model.packing import PackedBatch, pack_batch, pack_last_position

__all__ = ['FMRLRec', 'PackedBatch', 'pack_batch', 'pack_last_position']
