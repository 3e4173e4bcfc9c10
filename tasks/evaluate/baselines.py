"""Baselines the CNN is judged against, on the same splits.

- **majority**: always the training majority class; its score is the training fraction of
  real candidates, the same for every candidate (ROC AUC 0.5, PR AUC the prevalence).
- **score_peak**: a threshold on the peak of the score image at the candidate
  (``score_peak`` index column, S/N units), the classic detection-significance cut.
- **gradient_boosting**: scikit-learn's ``HistGradientBoostingClassifier`` on the catalog
  features of the index (:mod:`.features`: finder and PSF-fit columns; never positions,
  labels or truth), missing values handled natively.

Scores follow :mod:`tasks.evaluate.metrics`: higher means more likely real.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from croissant_cutouts.tasks.evaluate.features import catalog_features, feature_matrix

__all__ = [
    "gradient_boosting_scores",
    "majority_scores",
    "score_peak_scores",
]

def majority_scores(y_train: np.ndarray, n: int) -> np.ndarray:
    """Constant score: the fraction of real candidates in ``y_train``, for ``n`` rows."""
    y_train = np.asarray(y_train)
    rate = float(np.mean(y_train == 1)) if len(y_train) else 0.0
    return np.full(n, rate, np.float64)


def score_peak_scores(frame: pd.DataFrame) -> np.ndarray:
    """``score_peak`` of every row as float64; missing peaks score ``-inf`` (never real)."""
    if "score_peak" not in frame:
        return np.full(len(frame), -np.inf)
    peak = pd.to_numeric(frame["score_peak"], errors="coerce").to_numpy(np.float64)
    return np.where(np.isfinite(peak), peak, -np.inf)


def gradient_boosting_scores(
    frame: pd.DataFrame, y: np.ndarray, train: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Fit on the ``train`` rows, return P(real) of every row and the features used.

    ``HistGradientBoostingClassifier(max_iter=200, early_stopping=False,
    random_state=seed)``: deterministic for a given seed. Without a usable feature or with
    one class in training, every row gets the training fraction of real candidates.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    y = np.asarray(y)
    names = catalog_features(frame, train)
    if not names or len(np.unique(y[train])) < 2:
        return majority_scores(y[train], len(y)), names
    x = feature_matrix(frame, names)  # NaN where missing or not finite, as trees want
    model = HistGradientBoostingClassifier(
        max_iter=200, early_stopping=False, random_state=seed
    )
    model.fit(x[train], y[train])
    return model.predict_proba(x)[:, 1].astype(np.float64), names
