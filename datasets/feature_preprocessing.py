"""--feature_preprocessing: a fixed transform of one frozen feature table before the projection.

    none    the table as it is
    centre  the mean item row is subtracted
    whiten  centred, then ZCA-whitened (every direction of the item cloud gets the same variance),
            with the eigenvalues floored at 1 % of their mean, then scaled so that the mean squared
            row norm is the input's (1 for L2-normalised features: the learning rate keeps its meaning)

Sentence and image encoders put their embeddings in a narrow cone: a large shared component and a
few dominant directions. Centring removes the shared part; whitening also evens out the directions,
while the floor keeps the nearly empty ones (noise, or none at all when N < d) from being blown up.

The input is an (N + 1, d) float32 tensor whose row 0 is the zero padding row; the statistics use the
item rows 1..N only, row 0 stays exactly zero, and the arithmetic is float64 (deterministic). The map
is one affine map applied to unique rows, so items with identical features stay identical.
`fit_preprocessing` returns that map and `apply_preprocessing` applies it to any rows, so that items
added to an export later get the run's own statistics (docs/deploy.md, "Adding items to an export").

A run records what the transform did (`preprocessing_signature`: three sums of the output, which the
statistics decide for a given table) so that a later load can tell whether the same statistics were
applied (runs/input_fingerprint.py). They are compared to a relative 1e-6, not bit for bit: the float64
eigendecomposition may round its last bits differently on another CPU or BLAS.
"""
from dataclasses import dataclass

import torch

from datasets.features import FeatureTableError

PREPROCESSING = ('none', 'centre', 'whiten')
EIGENVALUE_FLOOR = 0.01  # times the mean eigenvalue of the item covariance
SIGNATURE_TOLERANCE = 1e-6  # relative; rounding moves these float64 sums by about 1e-9


@dataclass(frozen=True)
class FittedPreprocessing:
    """The affine map of one method, fitted on a table's item rows: row -> (row - mean) @ matrix * scale,
    in float64. 'none' is the identity (mean None); 'centre' has matrix None and scale 1."""
    method: str
    name: str
    dim: int
    mean: torch.Tensor = None    # (d,) float64
    matrix: torch.Tensor = None  # (d, d) float64 (whiten), else None
    scale: float = 1.0


def fit_preprocessing(table, method, name='feature table'):
    """The map `method` (one of PREPROCESSING) fits on the item rows 1..N of an (N + 1, d) table.

    `name` ('text features', ...) names the table in error messages. Fitting once and applying the map
    to rows that were not in the table (deploy/add_items.py) gives them the run's own statistics."""
    if method not in PREPROCESSING:
        raise ValueError(f'--feature_preprocessing must be one of {", ".join(PREPROCESSING)}, got {method!r}')
    if method == 'none':
        return FittedPreprocessing(method, name, int(table.shape[-1]))
    if table.ndim != 2 or table.shape[0] < 2:
        raise FeatureTableError(f'{name}: expected an (N + 1, d) table with N >= 1 items, '
                                f'got shape {tuple(table.shape)}')
    if torch.any(table[0] != 0):
        raise FeatureTableError(f'{name}: row 0 must be the zero padding row before --feature_preprocessing {method}')
    unique, counts = torch.unique(table[1:].double(), dim=0, return_counts=True)
    if unique.shape[0] == 1:
        raise FeatureTableError(f'{name}: all {table.shape[0] - 1} item rows are identical, so --feature_preprocessing '
                                f'{method} would make them all zero; use --feature_preprocessing none or rebuild '
                                f'the features')
    weights = counts.double() / counts.sum()  # each unique row counts as often as it occurs
    mean = weights @ unique
    if method == 'centre':
        return FittedPreprocessing(method, name, int(table.shape[1]), mean)
    centred = unique - mean
    matrix, scale = _whitening(centred, weights, mean_squared_norm=float(weights @ unique.pow(2).sum(1)))
    return FittedPreprocessing(method, name, int(table.shape[1]), mean, matrix, scale)


def apply_preprocessing(fitted, rows):
    """(M, d) item rows (no padding row) mapped by `fitted`, in their own dtype; 'none' returns `rows`."""
    if fitted.method == 'none':
        return rows
    if rows.ndim != 2 or rows.shape[1] != fitted.dim:
        raise FeatureTableError(f'{fitted.name}: rows of shape {tuple(rows.shape)} cannot take a map fitted on '
                                f'{fitted.dim} columns')
    # Unique rows: each output row is then computed once, so equal items give bit-equal rows.
    unique, inverse = torch.unique(rows.double(), dim=0, return_inverse=True)
    mapped = unique - fitted.mean
    if fitted.matrix is not None:
        mapped = (mapped @ fitted.matrix) * fitted.scale
    return mapped[inverse].to(rows.dtype)


def preprocess_features(table, method, name='feature table'):
    """The table transformed by `method` (one of PREPROCESSING): fit_preprocessing on its item rows, then
    apply_preprocessing to them; row 0 stays zero. 'none' returns `table` itself.

    `name` ('text features', ...) names the table in error messages."""
    fitted = fit_preprocessing(table, method, name)
    if method == 'none':
        return table
    out = torch.zeros(table.shape, dtype=table.dtype)
    out[1:] = apply_preprocessing(fitted, table[1:])
    return out


def _whitening(centred, weights, mean_squared_norm):
    """(ZCA matrix, scale) of centred unique rows (weighted by their multiplicity), floored and rescaled."""
    covariance = (centred * weights[:, None]).T @ centred
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    nonnegative = eigenvalues.clamp(min=0)  # tiny negative values are rounding
    floored = nonnegative.clamp(min=EIGENVALUE_FLOOR * float(nonnegative.mean()))
    # ZCA (V diag(1/sqrt(lambda)) V^T) rather than PCA: no eigenvector sign choices, and the
    # coordinates stay those of the encoder.
    zca = (eigenvectors * floored.rsqrt()) @ eigenvectors.T
    # The whitened rows' weighted mean squared norm is trace(Z C Z) = sum(lambda / floored): the scale
    # without whitening every row twice (once here, once in apply_preprocessing).
    whitened_mean_squared_norm = float((eigenvalues / floored).sum())
    return zca, (mean_squared_norm / whitened_mean_squared_norm) ** 0.5


def preprocessing_signature(table, processed):
    """{'sum_of_squares', 'sum_of_abs', 'inner_product_with_input'} of the transformed item rows, in
    float64: the scale, the spread over the coordinates and the rotation of what the statistics did.
    `table` is the (N + 1, d) input, `processed` what preprocess_features made of it."""
    rows, inputs = processed[1:].double(), table[1:].double()
    return {'sum_of_squares': float(rows.pow(2).sum()), 'sum_of_abs': float(rows.abs().sum()),
            'inner_product_with_input': float((rows * inputs).sum())}


def same_signature(recorded, current):
    """Whether two preprocessing_signature results agree to SIGNATURE_TOLERANCE."""
    if set(recorded) != set(current):
        return False
    return all(abs(recorded[key] - current[key]) <= SIGNATURE_TOLERANCE * max(abs(recorded[key]), abs(current[key]), 1e-12)
               for key in current)
