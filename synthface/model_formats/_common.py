"""What the format readers share: validated access to file arrays, and their conversion.

Every check raises :class:`ModelFileError` whose message starts with the file
path, says what is wrong and ends with a format-specific hint, so a user who
passes the wrong file (or a truncated one) gets one line instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError
from ..model import MorphableModel

Shape = tuple[int | None, ...]
"""An expected array shape; ``None`` matches any size along that axis."""


def error(path: Path, problem: str, hint: str) -> ModelFileError:
    """``<path>: <problem>; <hint>`` — the one message layout of every reader error."""
    return ModelFileError(f"{path}: {problem}; {hint}")


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn whatever a third-party reader raises on a bad file into one :class:`ModelFileError`.

    scipy.io.loadmat and h5py raise assorted types (ValueError, OSError, KeyError,
    zlib.error, TypeError, MatReadError…) on truncated or corrupt files, so the
    catch is deliberately broad; wrap only the reading calls, never our own logic.
    """
    try:
        yield
    except ModelFileError:
        raise
    except MemoryError as exc:
        raise ModelFileError(f"{path}: ran out of memory reading it as {what}; free memory, "
                             "or check that the file is not corrupt") from exc
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot read it as {what} ({type(exc).__name__}: {exc}); "
                             "the file is truncated, corrupt or of another format — re-download it") from exc


def require(mapping: Mapping[str, Any], key: str, path: Path, hint: str) -> Any:
    """``mapping[key]``, or a :class:`ModelFileError` naming the missing key."""
    try:
        return mapping[key]
    except KeyError:
        raise error(path, f"missing key {key!r}", hint) from None


def _shape_text(shape: Shape) -> str:
    text = ", ".join("any" if s is None else str(s) for s in shape)
    return f"({text},)" if len(shape) == 1 else f"({text})"


def numeric(value: Any, name: str, shape: Shape, path: Path, hint: str) -> np.ndarray:
    """``value`` as a finite real numeric array of ``shape`` (checked, not copied)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        kind = type(value).__name__ if not isinstance(value, np.ndarray) else f"dtype {value.dtype}"
        raise error(path, f"{name!r} is a {kind}, expected a numeric array", hint)
    if value.ndim != len(shape) or any(w not in (None, s) for s, w in zip(value.shape, shape, strict=True)):
        raise error(path, f"{name!r} has shape {value.shape}, expected {_shape_text(shape)}", hint)
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise error(path, f"{name!r} contains NaN or infinite values", hint)
    return value


def vector(value: Any, name: str, size: int | None, path: Path, hint: str) -> np.ndarray:
    """A 1-D view of a vector stored as (n,), (n, 1) or (1, n) (MATLAB has no 1-D arrays)."""
    if isinstance(value, np.ndarray) and value.ndim == 2 and 1 in value.shape:
        value = value.reshape(-1)
    return numeric(value, name, (size,), path, hint)


def vertices(flat: np.ndarray, name: str, scale: float, path: Path, hint: str) -> np.ndarray:
    """(3V,) interleaved xyzxyz… → (V, 3) float32, multiplied by ``scale`` (unit conversion)."""
    if flat.shape[0] % 3:
        raise error(path, f"{name!r} has {flat.shape[0]} values, not a multiple of 3 (x, y, z per vertex)",
                    hint)
    return (flat.reshape(-1, 3) * scale).astype(np.float32)


def basis(columns: Any, scale: np.ndarray | float, name: str, n_vertices: int, path: Path, hint: str,
          n_components: int | None = None) -> np.ndarray:
    """(3V, K) interleaved basis columns → (K, V, 3) float32, column k multiplied by ``scale[k]``.

    One output allocation and one pass over the (often 130 MB) input: the
    transpose and the scaling (std, unit conversion) happen in the same ufunc.
    """
    columns = numeric(columns, name, (3 * n_vertices, n_components), path, hint)
    k = columns.shape[1]
    factors = np.broadcast_to(np.asarray(scale, dtype=np.float64).reshape(-1), (k,))[:, None]
    out = np.empty((k, 3 * n_vertices), dtype=np.float32)
    np.multiply(columns.T, factors, out=out, casting="same_kind")
    return out.reshape(k, n_vertices, 3)


def indices(table: Any, name: str, shape: Shape, n_vertices: int, base: int, path: Path,
            hint: str) -> np.ndarray:
    """An index table in the file's ``base`` (0 or 1) → 0-based int64, range-checked.

    Accepts integer tables and float tables holding whole numbers (MATLAB stores
    most integers as double).
    """
    table = numeric(table, name, shape, path, hint)
    if table.dtype.kind == "f":
        if (table != np.round(table)).any():
            raise error(path, f"{name!r} holds non-integer vertex indices", hint)
    out = table.astype(np.int64) - base
    if out.size and (out.min() < 0 or out.max() >= n_vertices):
        lo, hi = int(out.min()) + base, int(out.max()) + base
        raise error(path, f"{name!r} has vertex indices in [{lo}, {hi}], expected {base}-based indices in "
                          f"[{base}, {n_vertices - 1 + base}] for {n_vertices} vertices", hint)
    return out


def triangles(table: Any, name: str, n_vertices: int, base: int, path: Path, hint: str) -> np.ndarray:
    """(F, 3) triangle table in the file's index ``base`` → (F, 3) int32, 0-based."""
    return indices(table, name, (None, 3), n_vertices, base, path, hint).astype(np.int32)


def signed_volume(verts: np.ndarray, tris: np.ndarray) -> float:
    """Volume enclosed by the triangles, seen from their vertices' centroid (> 0: outward winding).

    For a closed mesh this is its volume whatever the reference point; for an open
    face mask it is the volume of the cone from the centroid, positive when the
    faces are counter-clockwise seen from outside (normals point away from it).
    """
    used = verts[np.unique(tris)].astype(np.float64)
    a, b, c = (verts[tris[:, i]].astype(np.float64) - used.mean(axis=0) for i in range(3))
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)


def orient_outward(verts: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, bool]:
    """Triangles wound counter-clockwise seen from outside, and whether they had to be flipped.

    Files disagree on winding; renderers' back-face culling and normals need it
    outward. Flips all triangles (swap two corners) when the signed volume is negative.
    """
    if tris.size == 0 or signed_volume(verts, tris) >= 0.0:
        return tris, False
    return np.ascontiguousarray(tris[:, [0, 2, 1]]), True


def pc_names(count: int) -> tuple[str, ...]:
    """``pc0``, ``pc1``… — the names of PCA expression components."""
    return tuple(f"pc{i}" for i in range(count))


def pca_model(*, name: str, path: Path, sha256: str, fmt: str, mean_shape: np.ndarray,
              identity_basis: np.ndarray, identity_std: np.ndarray, triangles: np.ndarray,
              albedo_mean: np.ndarray, albedo_basis: np.ndarray, expression_basis: np.ndarray | None = None,
              landmarks: np.ndarray | None = None, metadata: Mapping[str, Any]) -> MorphableModel:
    """A PCA model from a file's converted arrays: orients triangles, names components, records counts."""
    n_vertices = len(mean_shape)
    if expression_basis is None:
        expression_basis = np.zeros((0, n_vertices, 3), np.float32)
    tris, flipped = orient_outward(mean_shape, triangles)
    return MorphableModel(
        name=name, mean_shape=mean_shape, identity_basis=identity_basis,
        identity_std=identity_std.astype(np.float32), expression_basis=expression_basis,
        expression_kind="pca", expression_names=pc_names(expression_basis.shape[0]), triangles=tris,
        albedo_mean=albedo_mean, albedo_basis=albedo_basis, landmark_indices=landmarks,
        sha256=sha256, source=str(path),
        metadata={"format": fmt, **metadata, "n_vertices": n_vertices, "n_triangles": len(tris),
                  "n_identity": identity_basis.shape[0], "n_expression": expression_basis.shape[0],
                  "n_albedo": albedo_basis.shape[0], "triangles_flipped": flipped},
    )
