"""Gated assignment of predictions to measurements, and the costs it runs on.

Generic on purpose: the tracker associates track predictions with detections, and the
output-level fusion associates one sensor's object list with another's. Two forms:

* dense: :func:`associate` on a ``(T, D)`` matrix from :func:`mahalanobis_costs` or
  :func:`bev_distance_costs`;
* sparse (the fast path for many objects): :func:`candidate_pairs` finds the pairs within a
  BEV distance, :func:`mahalanobis_pair_costs` costs only those, :func:`associate_pairs`
  solves. Isolated pairs (the row and the column have no other admissible partner, the
  common case) are matched directly; ``scipy.optimize.linear_sum_assignment`` only sees
  the rows and columns that actually compete. Same result as the dense form.

Objectives (what a brute-force reference checks). Only one-to-one matchings that use pairs
with a finite cost ``<= gate`` are admissible; among them

* ``maximize_matches=True`` (default): the **largest number of pairs**, and among those the
  **smallest total cost**. ``linear_sum_assignment`` gives it once gated pairs carry a large
  finite cost (big enough that one more valid pair always beats any cost difference); the
  gated pairs it is then forced to pick are dropped.
* ``maximize_matches=False``: the **largest total gain** ``sum(gate - cost)``, i.e. leaving a
  row or column unmatched costs ``gate / 2`` each (the global-nearest-neighbour objective
  with a miss cost): a pair near the gate is not worth displacing a good pair. Gated pairs
  carry the cost ``gate`` itself, so a forced gated pick changes nothing and is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: above this many row x column pairs :func:`candidate_pairs` uses a k-d tree
_KDTREE_MIN_PAIRS = 40_000


def _check_gate(gate: float) -> None:
    if not np.isfinite(gate):
        raise ValueError(f"gate must be finite, got {gate}")


def associate(cost: npt.ArrayLike, gate: float,
              maximize_matches: bool = True) -> tuple[I64, I64, I64]:
    """Gated optimal one-to-one assignment (objectives in the module docstring).

    Args:
        cost: ``(T, D)`` float costs (rows: tracks / predictions, columns: detections).
            NaN, +-inf and values above ``gate`` mark pairs that may never be matched.
        gate: largest cost a matched pair may have (same unit as ``cost``; for squared
            Mahalanobis costs a chi-square quantile).
        maximize_matches: objective, see the module docstring.

    Returns:
        ``(matches, unmatched_rows, unmatched_cols)``: ``(K, 2)`` int64 ``[row, col]`` pairs
        sorted by row, and the sorted ``(T - K,)`` / ``(D - K,)`` int64 indices left over.

    Raises:
        ValueError: ``cost`` is not 2-D or ``gate`` is not finite.
    """
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"cost must be a 2-D (tracks, detections) matrix, got shape {c.shape}")
    _check_gate(gate)
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(np.isfinite(c) & (c <= gate))
    return associate_pairs(rows, cols, c[rows, cols], c.shape[0], c.shape[1], gate,
                           maximize_matches)


def associate_pairs(rows: npt.ArrayLike, cols: npt.ArrayLike, cost: npt.ArrayLike,
                    n_rows: int, n_cols: int, gate: float,
                    maximize_matches: bool = True) -> tuple[I64, I64, I64]:
    """:func:`associate` on a sparse cost list (pairs not listed are not admissible).

    Args:
        rows, cols: ``(P,)`` int row / column index of each listed pair (no duplicates).
        cost: ``(P,)`` their costs (non-finite or above ``gate``: not admissible).
        n_rows, n_cols: problem size ``T``, ``D``.
        gate, maximize_matches: as for :func:`associate`.

    Returns:
        As :func:`associate`.
    """
    _check_gate(gate)
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    c = np.asarray(cols, dtype=np.int64).reshape(-1)
    v = np.asarray(cost, dtype=np.float64).reshape(-1)
    if not r.shape == c.shape == v.shape:
        raise ValueError(f"rows, cols and cost must have the same length, got {r.shape}, "
                         f"{c.shape}, {v.shape}")
    if r.size and (r.min() < 0 or r.max() >= n_rows or c.min() < 0 or c.max() >= n_cols):
        raise ValueError(f"pair indices out of range for a ({n_rows}, {n_cols}) problem")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(v) & (v <= gate)
    r, c, v = r[ok], c[ok], v[ok]
    deg_r = np.bincount(r, minlength=n_rows)
    deg_c = np.bincount(c, minlength=n_cols)
    # a pair whose row and column have no other admissible partner is a component of its
    # own: matching it is optimal under both objectives
    iso = (deg_r[r] == 1) & (deg_c[c] == 1)
    parts = [np.stack([r[iso], c[iso]], axis=1)]
    if not iso.all():
        parts.append(_solve_dense(r[~iso], c[~iso], v[~iso], n_rows, n_cols, gate,
                                  maximize_matches))
    matches = np.concatenate(parts).astype(np.int64)
    matches = matches[np.argsort(matches[:, 0], kind="stable")]
    row_used = np.zeros(n_rows, dtype=bool)
    col_used = np.zeros(n_cols, dtype=bool)
    row_used[matches[:, 0]] = True
    col_used[matches[:, 1]] = True
    return (matches, np.flatnonzero(~row_used).astype(np.int64),
            np.flatnonzero(~col_used).astype(np.int64))


def _compact(idx: I64, n: int) -> tuple[I64, I64]:
    """``np.unique(idx, return_inverse=True)`` for indices in ``[0, n)``: the sorted
    distinct values ``(U,)`` and the position of each entry among them ``(len(idx),)``,
    both int64, by marking a ``(n,)`` mask instead of sorting (several times faster for
    the few hundred indices of a frame)."""
    used = np.zeros(n, dtype=bool)
    used[idx] = True
    position = np.cumsum(used) - 1
    return np.flatnonzero(used).astype(np.int64), position[idx].astype(np.int64)


def _solve_dense(r: I64, c: I64, v: F64, n_rows: int, n_cols: int, gate: float,
                 maximize_matches: bool) -> I64:
    """``linear_sum_assignment`` over the rows / columns of admissible pairs ``(r, c, v)``
    (indices in ``[0, n_rows)`` / ``[0, n_cols)``)."""
    ur, ri = _compact(r, n_rows)
    uc, ci = _compact(c, n_cols)
    if maximize_matches:
        hi, lo = float(v.max()), float(v.min())
        # With k = min(rows, cols) pairs at most, a matching with one more valid pair costs
        # at most hi + (k-1)(hi-lo) less than "big" below, so the solver always maximises
        # the number of valid pairs first, then minimises their total cost.
        k = min(ur.size, uc.size)
        big = hi + (k + 1) * (hi - lo) + 1.0 + abs(hi)
    else:
        # sum(work) = k * gate - sum over valid picks of (gate - cost): minimising it
        # maximises the gain, and a gated pick (cost gate) is the same as no pick
        big = float(gate)
    work = np.full((ur.size, uc.size), big)
    valid = np.zeros((ur.size, uc.size), dtype=bool)
    work[ri, ci] = v
    valid[ri, ci] = True
    sel_r, sel_c = linear_sum_assignment(work)
    keep = valid[sel_r, sel_c]
    return np.stack([ur[sel_r[keep]], uc[sel_c[keep]]], axis=1)


def candidate_pairs(pred_xy: npt.ArrayLike, det_xy: npt.ArrayLike,
                    max_distance: float) -> tuple[I64, I64]:
    """All ``(row, col)`` pairs with a BEV distance ``<= max_distance``.

    Args:
        pred_xy: ``(T, >=2)`` rows starting with ``x, y`` (metres, common frame).
        det_xy: ``(D, >=2)`` rows starting with ``x, y`` (metres, same frame).
        max_distance: metres, finite and > 0.

    Returns:
        ``(rows, cols)``: ``(P,)`` int64 each, sorted by row then column. Non-finite
        positions pair with nothing.
    """
    a = np.asarray(pred_xy, dtype=np.float64)
    b = np.asarray(det_xy, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or b.ndim != 2 or b.shape[1] < 2:
        raise ValueError(f"expected (T, >=2) and (D, >=2) arrays, got {a.shape} and {b.shape}")
    if not (np.isfinite(max_distance) and max_distance > 0):
        raise ValueError(f"max_distance must be finite and > 0, got {max_distance}")
    empty = np.zeros(0, dtype=np.int64)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return empty, empty.copy()
    if a.shape[0] * b.shape[0] <= _KDTREE_MIN_PAIRS:
        dx = b[None, :, 0] - a[:, None, 0]
        dy = b[None, :, 1] - a[:, None, 1]
        with np.errstate(invalid="ignore"):
            rows, cols = np.nonzero(dx * dx + dy * dy <= max_distance * max_distance)
        return rows.astype(np.int64), cols.astype(np.int64)
    fa = np.flatnonzero(np.isfinite(a[:, :2]).all(axis=1))
    fb = np.flatnonzero(np.isfinite(b[:, :2]).all(axis=1))
    if fa.size == 0 or fb.size == 0:
        return empty, empty.copy()
    found = cKDTree(a[fa, :2]).sparse_distance_matrix(cKDTree(b[fb, :2]), max_distance,
                                                      output_type="ndarray")
    rows, cols = fa[found["i"]], fb[found["j"]]
    order = np.lexsort((cols, rows))
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def _wrap(angle: F64) -> F64:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _pair_d2(zp: F64, sp: F64, zm: F64, zr: F64, angle_dims: Sequence[int]) -> F64:
    """``(P,)`` squared Mahalanobis distances of pairs: predicted ``zp`` ``(P, m)`` with
    ``sp`` ``(P, m, m)``, measured ``zm`` ``(P, m)`` with ``zr`` ``(P, m, m)``."""
    m = zp.shape[1]
    y = zm - zp
    dims = list(angle_dims)
    if dims:
        y[:, dims] = _wrap(y[:, dims])
    s = sp + zr
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if m == 1:
            var = s[:, 0, 0]
            d2 = y[:, 0] ** 2 / var
            good = var > 0
        elif m == 2:
            a, d = s[:, 0, 0], s[:, 1, 1]
            b = 0.5 * (s[:, 0, 1] + s[:, 1, 0])
            det = a * d - b * b
            d2 = (d * y[:, 0] ** 2 - 2.0 * b * y[:, 0] * y[:, 1] + a * y[:, 1] ** 2) / det
            good = (a > 0) & (det > 0)
        else:
            finite = np.isfinite(s).all(axis=(1, 2)) & np.isfinite(y).all(axis=1)
            good = np.zeros(s.shape[0], dtype=bool)
            if finite.any():
                sym = 0.5 * (s[finite] + np.swapaxes(s[finite], 1, 2))
                good[finite] = np.linalg.eigvalsh(sym)[:, 0] > 0
            d2 = np.full(s.shape[0], np.inf)
            if good.any():
                sol = np.linalg.solve(s[good], y[good][..., None])[..., 0]
                d2[good] = np.einsum("ki,ki->k", y[good], sol)
    return np.asarray(np.where(good & np.isfinite(d2), d2, np.inf), dtype=np.float64)


def _project(means: F64, covs: F64, H: npt.ArrayLike | None, m: int) -> tuple[F64, F64]:
    if means.ndim != 2 or covs.shape != (means.shape[0], means.shape[1], means.shape[1]):
        raise ValueError(f"pred_means (T, n) / pred_covs (T, n, n) mismatch: {means.shape}, "
                         f"{covs.shape}")
    if H is None:
        if means.shape[1] != m:
            raise ValueError(f"without H the state and measurement sizes must agree, got "
                             f"n={means.shape[1]}, m={m}")
        return means, covs
    h = np.asarray(H, dtype=np.float64)
    if h.shape != (m, means.shape[1]):
        raise ValueError(f"H must be (m, n) = ({m}, {means.shape[1]}), got {h.shape}")
    return means @ h.T, h @ covs @ h.T


def _measurements(det_means: npt.ArrayLike, det_covs: npt.ArrayLike) -> tuple[F64, F64]:
    zm = np.asarray(det_means, dtype=np.float64)
    zr = np.asarray(det_covs, dtype=np.float64)
    if zm.ndim != 2 or zr.shape != (zm.shape[0], zm.shape[1], zm.shape[1]):
        raise ValueError(f"det_means (D, m) / det_covs (D, m, m) mismatch: {zm.shape}, "
                         f"{zr.shape}")
    return zm, zr


def mahalanobis_costs(pred_means: npt.ArrayLike, pred_covs: npt.ArrayLike,
                      det_means: npt.ArrayLike, det_covs: npt.ArrayLike,
                      H: npt.ArrayLike | None = None,
                      angle_dims: Sequence[int] = ()) -> F64:
    """Squared Mahalanobis distances between predicted and measured values, all pairs.

    For pair ``(t, d)``: ``y = z_d - H x_t`` (components in ``angle_dims`` wrapped to
    ``[-pi, pi)``), ``S = H P_t H^T + R_d`` and the cost is ``y^T S^-1 y`` (chi-square with
    ``m`` degrees of freedom when the models are right). Closed form for ``m <= 2``,
    a batched solve otherwise.

    Args:
        pred_means: ``(T, n)`` predicted states.
        pred_covs: ``(T, n, n)`` their covariances.
        det_means: ``(D, m)`` measurements.
        det_covs: ``(D, m, m)`` measurement covariances.
        H: ``(m, n)`` linear measurement matrix; None means identity (``m == n``).
        angle_dims: measurement components that are angles (radians).

    Returns:
        ``(T, D)`` float64 costs; ``inf`` where ``S`` is not positive definite or any input
        of the pair is not finite.
    """
    zm, zr = _measurements(det_means, det_covs)
    zp, sp = _project(np.asarray(pred_means, dtype=np.float64),
                      np.asarray(pred_covs, dtype=np.float64), H, zm.shape[1])
    n_t, n_d = zp.shape[0], zm.shape[0]
    if n_t == 0 or n_d == 0:
        return np.zeros((n_t, n_d), dtype=np.float64)
    rows = np.repeat(np.arange(n_t), n_d)
    cols = np.tile(np.arange(n_d), n_t)
    return _pair_d2(zp[rows], sp[rows], zm[cols], zr[cols], angle_dims).reshape(n_t, n_d)


def mahalanobis_pair_costs(pred_means: npt.ArrayLike, pred_covs: npt.ArrayLike,
                           det_means: npt.ArrayLike, det_covs: npt.ArrayLike,
                           rows: npt.ArrayLike, cols: npt.ArrayLike,
                           H: npt.ArrayLike | None = None,
                           angle_dims: Sequence[int] = ()) -> F64:
    """:func:`mahalanobis_costs` for the listed pairs only: ``(P,)`` costs of
    ``(rows[p], cols[p])`` (e.g. from :func:`candidate_pairs`)."""
    zm, zr = _measurements(det_means, det_covs)
    zp, sp = _project(np.asarray(pred_means, dtype=np.float64),
                      np.asarray(pred_covs, dtype=np.float64), H, zm.shape[1])
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    c = np.asarray(cols, dtype=np.int64).reshape(-1)
    if r.shape != c.shape:
        raise ValueError(f"rows and cols must have the same length, got {r.shape}, {c.shape}")
    if r.size == 0:
        return np.zeros(0, dtype=np.float64)
    return _pair_d2(zp[r], sp[r], zm[c], zr[c], angle_dims)


def bev_distance_costs(pred_means: npt.ArrayLike, det_means: npt.ArrayLike) -> F64:
    """Euclidean bird's-eye-view distances between all pairs.

    Args:
        pred_means: ``(T, >=2)`` rows starting with ``x, y`` (metres, common frame).
        det_means: ``(D, >=2)`` rows starting with ``x, y`` (metres, same frame).

    Returns:
        ``(T, D)`` float64 distances in metres (``inf`` where an input is not finite).
    """
    a = np.asarray(pred_means, dtype=np.float64)
    b = np.asarray(det_means, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or b.ndim != 2 or b.shape[1] < 2:
        raise ValueError(f"expected (T, >=2) and (D, >=2) arrays, got {a.shape} and {b.shape}")
    diff = b[None, :, :2] - a[:, None, :2]
    dist = np.hypot(diff[..., 0], diff[..., 1])
    return np.where(np.isfinite(dist), dist, np.inf)


__all__ = [
    "associate",
    "associate_pairs",
    "bev_distance_costs",
    "candidate_pairs",
    "mahalanobis_costs",
    "mahalanobis_pair_costs",
]
