"""fit_preprocessing / apply_preprocessing (datasets/feature_preprocessing.py): the split of
preprocess_features into a fitted map and its application gives the numbers the whole-table
transform gave before the split, so runs keep their preprocessing signature; and the map applies to
rows that were not in the table (new items: deploy/add_items.py)."""
import numpy as np
import pytest
import torch

from datasets.feature_preprocessing import apply_preprocessing, fit_preprocessing, preprocess_features
from datasets.features import FeatureTableError


def reference_preprocess(table, method):
    """preprocess_features as it was before the fit/apply split (whitened rows computed twice)."""
    if method == 'none':
        return table
    unique, inverse, counts = torch.unique(table[1:].double(), dim=0, return_inverse=True, return_counts=True)
    weights = counts.double() / counts.sum()
    centred = unique - weights @ unique
    if method == 'whiten':
        covariance = (centred * weights[:, None]).T @ centred
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues = eigenvalues.clamp(min=0)
        floored = eigenvalues.clamp(min=0.01 * float(eigenvalues.mean()))
        whitened = centred @ ((eigenvectors * floored.rsqrt()) @ eigenvectors.T)
        scale = (float(weights @ unique.pow(2).sum(1)) / float(weights @ whitened.pow(2).sum(1))) ** 0.5
        centred = whitened * scale
    out = torch.zeros(table.shape, dtype=table.dtype)
    out[1:] = centred[inverse].to(table.dtype)
    return out


def cone_table(n, d, seed=0, rank=None):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, d)) * np.geomspace(3.0, 0.05, d) + 4.0
    if rank is not None:  # fewer directions than columns: the eigenvalue floor matters
        rows = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + 1e-4 * rng.normal(size=(n, d))
    table = torch.zeros(n + 1, d)
    table[1:] = torch.from_numpy(rows / np.linalg.norm(rows, axis=1, keepdims=True)).float()
    table[9] = table[4]  # a tie
    return table


@pytest.mark.parametrize('method', ['none', 'centre', 'whiten'])
@pytest.mark.parametrize('n, d, rank', [(600, 12, None), (40, 64, None), (80, 16, 3)])
def test_fit_then_apply_is_the_old_preprocessing(method, n, d, rank):
    table = cone_table(n, d, rank=rank)
    expected = reference_preprocess(table, method)
    got = preprocess_features(table, method)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    assert not got[0].any() and torch.equal(got[4], got[9])
    fitted = fit_preprocessing(table, method)
    assert torch.equal(apply_preprocessing(fitted, table[1:]), got[1:])
    # one row alone goes through the same map
    assert torch.allclose(apply_preprocessing(fitted, table[5:6]), got[5:6], rtol=1e-6, atol=1e-7)


def test_apply_refuses_rows_of_another_width():
    fitted = fit_preprocessing(cone_table(30, 8), 'centre', 'text features')
    with pytest.raises(FeatureTableError, match='text features: rows of shape \\(2, 6\\)'):
        apply_preprocessing(fitted, torch.ones(2, 6))
