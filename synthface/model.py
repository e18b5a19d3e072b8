"""The morphable model: one small class, one batched method per stage.

Bases are stored scaled by their standard deviations, so identity, albedo and
(PCA) expression coefficients are N(0, 1) and can be sampled and regressed in
the same units. Blendshape expressions are weights in [0, 1] instead.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import ModelFileError

SEGMENTATION_CLASSES: tuple[str, ...] = (
    "background", "face", "nose", "brows", "eyes", "lips", "mouth", "ears", "neck", "scalp", "hair", "occluder",
    "clothes",
)
"""Class ids of the ``segmentation`` dataset (its index here; stored with the dataset as the attribute
``classes``): ``face`` is the skin of the face, ``eyes`` the eyeballs and lashes, ``mouth`` the mouth's
interior with teeth and tongue. A model's per-vertex ``regions`` use the same ids; models without them
(the BFM files, format 1's bundled face) are ``face`` throughout."""
FACE_CLASSES: tuple[str, ...] = ("face", "nose", "brows", "eyes", "lips", "mouth")
"""The classes ``mask`` covers: the face region, as in format 1."""

N_CLASSES = len(SEGMENTATION_CLASSES)

N_LANDMARKS = 68
"""ibug-68 layout (0-16 jaw contour, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth)."""

ExpressionKind = Literal["pca", "blendshape"]

NATIVE_FORMAT = "synthface-morphable-model"
NATIVE_VERSION = 1


@dataclass(frozen=True, eq=False)
class MorphableModel:
    """A linear face model in millimetres (model space: y up, +z out of the face).

    ``shape = mean_shape + identity·identity_basis + expression·expression_basis``
    and ``albedo = albedo_mean + albedo·albedo_basis``; all arrays are read-only.
    """

    name: str
    mean_shape: np.ndarray
    """(V, 3) float32, mm."""
    identity_basis: np.ndarray
    """(K_id, V, 3) float32, mm per unit (N(0,1)) coefficient."""
    identity_std: np.ndarray
    """(K_id,) float32, mm: each component's std before scaling (for reference)."""
    expression_basis: np.ndarray
    """(K_exp, V, 3) float32, mm per unit coefficient (PCA) or per full blendshape weight."""
    expression_kind: ExpressionKind
    expression_names: tuple[str, ...]
    """(K_exp,) component names, e.g. ARKit blendshape names or ``pc0``, ``pc1``…"""
    triangles: np.ndarray
    """(F, 3) int32, 0-based, counter-clockwise when seen from outside the face."""
    albedo_mean: np.ndarray
    """(V, 3) float32 linear RGB in [0, 1]."""
    albedo_basis: np.ndarray
    """(K_alb, V, 3) float32 per unit coefficient; K_alb may be 0."""
    landmark_indices: np.ndarray | None
    """(68,) int64 ibug-68 vertex indices, 0-based; None if the file has none."""
    sha256: str = ""
    """sha256 of the file the model was read from (recorded in every shard)."""
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    regions: np.ndarray | None = None
    """(V,) uint8 class ids of :data:`SEGMENTATION_CLASSES` per vertex; None: all face."""
    iris_coordinates: np.ndarray | None = None
    """(V, 2) float32: where each eyeball vertex lies on its eyeball, in iris radii from the pupil's
    centre (x towards the model's +x, y up; an azimuthal equidistant map about the eye's axis), NaN off
    the eyeballs. The renderer draws iris, pupil and limbus per pixel from it, in the sample's iris
    colour (``params/eyes``); None (the BFM files): the eyes are the albedo's."""
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    """torch copies of the bases per (device, dtype), made on first use; not an argument, so
    ``dataclasses.replace`` gives every derived model a cache of its own."""

    def __post_init__(self) -> None:
        v = self.mean_shape.shape[0]
        checks = {
            "mean_shape": (self.mean_shape, (v, 3)),
            "identity_basis": (self.identity_basis, (None, v, 3)),
            "identity_std": (self.identity_std, (self.identity_basis.shape[0],)),
            "expression_basis": (self.expression_basis, (None, v, 3)),
            "albedo_mean": (self.albedo_mean, (v, 3)),
            "albedo_basis": (self.albedo_basis, (None, v, 3)),
            "triangles": (self.triangles, (None, 3)),
        }
        for name, (arr, want) in checks.items():
            if arr.ndim != len(want) or any(w not in (None, s) for s, w in zip(arr.shape, want, strict=True)):
                raise ModelFileError(f"model {self.name!r}: {name} has shape {arr.shape}, expected {want}")
        if self.expression_kind not in ("pca", "blendshape"):
            raise ModelFileError(f"model {self.name!r}: unknown expression kind {self.expression_kind!r}")
        if len(self.expression_names) != self.expression_basis.shape[0]:
            raise ModelFileError(f"model {self.name!r}: {len(self.expression_names)} expression names "
                                 f"for {self.expression_basis.shape[0]} components")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= v):
            raise ModelFileError(f"model {self.name!r}: triangle indices outside [0, {v})")
        if self.landmark_indices is not None:
            lm = self.landmark_indices
            if lm.shape != (N_LANDMARKS,) or lm.min() < 0 or lm.max() >= v:
                raise ModelFileError(f"model {self.name!r}: landmark indices must be {N_LANDMARKS} "
                                     f"vertex indices in [0, {v})")
        if self.regions is not None and (self.regions.shape != (v,) or self.regions.dtype != np.uint8
                                         or self.regions.max(initial=0) >= N_CLASSES):
            raise ModelFileError(f"model {self.name!r}: regions must be ({v},) uint8 class ids below {N_CLASSES}")
        iris = self.iris_coordinates
        if iris is not None and (iris.shape != (v, 2) or iris.dtype != np.float32 or np.isinf(iris).any()
                                 or np.isnan(iris).any(axis=1).sum() == v):
            raise ModelFileError(f"model {self.name!r}: iris_coordinates must be ({v}, 2) float32, finite on the "
                                 "eyeballs' vertices and NaN elsewhere")
        for arr in (self.mean_shape, self.identity_basis, self.identity_std, self.expression_basis,
                    self.triangles, self.albedo_mean, self.albedo_basis, self.landmark_indices, self.regions,
                    iris):
            if arr is not None:
                arr.flags.writeable = False

    @property
    def n_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    @property
    def n_albedo(self) -> int:
        return int(self.albedo_basis.shape[0])

    @property
    def face_region(self) -> np.ndarray:
        """(V,) bool: vertices of the face region (:data:`FACE_CLASSES`; every vertex without ``regions``)."""
        if self.regions is None:
            return np.ones(self.n_vertices, bool)
        return np.isin(self.regions, [SEGMENTATION_CLASSES.index(c) for c in FACE_CLASSES])

    @property
    def has_landmarks(self) -> bool:
        return self.landmark_indices is not None

    def shape(self, identity, expression):
        """Model-space vertices (B, V, 3) in mm from (B, K_id) and (B, K_exp) coefficients.

        numpy in, numpy out; torch tensors in, torch out on their device (one GEMM per basis).
        """
        mean, id_b, ex_b = self._bases(identity, "mean_shape", "identity_basis", "expression_basis")
        offsets = identity @ id_b + expression @ ex_b  # (B, 3V)
        return (mean + offsets).reshape(offsets.shape[0], self.n_vertices, 3)

    def albedo(self, coefficients):
        """Per-vertex linear-RGB albedo (B, V, 3), clipped to [0, 1], from (B, K_alb) coefficients."""
        mean, basis = self._bases(coefficients, "albedo_mean", "albedo_basis")
        colour = (mean + coefficients @ basis).reshape(coefficients.shape[0], self.n_vertices, 3)
        return colour.clip(0.0, 1.0)

    def _bases(self, like, *names: str) -> list:
        """Bases flattened to (K, 3V) / (3V,), as numpy or as cached torch tensors matching ``like``."""
        def flat(name: str) -> np.ndarray:  # explicit width: a basis may have 0 components (BFM2009)
            arr = getattr(self, name)
            return arr.reshape(arr.shape[0], 3 * self.n_vertices) if name.endswith("basis") else arr.reshape(-1)

        if isinstance(like, np.ndarray):
            return [flat(n) for n in names]
        import torch

        cached = self._cache.setdefault((like.device, like.dtype), {})
        for n in names:
            if n not in cached:
                cached[n] = torch.as_tensor(np.array(flat(n)), device=like.device, dtype=like.dtype)
        return [cached[n] for n in names]


def save_native(model: MorphableModel, path, *, basis_dtype=np.float16) -> None:
    """Write ``model`` in synthface's compact ``.npz`` format (bases as ``basis_dtype``)."""
    arrays = {
        "format": np.array(NATIVE_FORMAT),
        "format_version": np.array(NATIVE_VERSION),
        "name": np.array(model.name),
        "mean_shape": model.mean_shape.astype(np.float32),
        "identity_basis": model.identity_basis.astype(basis_dtype),
        "identity_std": model.identity_std.astype(np.float32),
        "expression_basis": model.expression_basis.astype(basis_dtype),
        "expression_kind": np.array(model.expression_kind),
        "expression_names": np.array(model.expression_names, dtype=str),
        "triangles": model.triangles.astype(np.int32),
        "albedo_mean": model.albedo_mean.astype(np.float32),
        "albedo_basis": model.albedo_basis.astype(basis_dtype),
        "metadata": np.array(json.dumps(dict(model.metadata), sort_keys=True)),
    }
    if model.landmark_indices is not None:
        arrays["landmark_indices"] = model.landmark_indices.astype(np.int32)
    if model.regions is not None:
        arrays["regions"] = model.regions.astype(np.uint8)
    if model.iris_coordinates is not None:
        arrays["iris_coordinates"] = model.iris_coordinates.astype(np.float32)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


_NATIVE_KEYS = ("format", "format_version", "name", "mean_shape", "identity_basis", "identity_std",
                "expression_basis", "expression_kind", "expression_names", "triangles", "albedo_mean",
                "albedo_basis", "metadata")


def read_native(path, *, sha256: str, source: str) -> MorphableModel:
    """Read a model written by :func:`save_native`; errors name the file and the problem."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _NATIVE_KEYS if k not in z.files]
            if missing:
                raise ModelFileError(f"{path}: not a synthface model file (missing {', '.join(missing)})")
            if str(z["format"]) != NATIVE_FORMAT or int(z["format_version"]) != NATIVE_VERSION:
                raise ModelFileError(f"{path}: format {z['format']} v{z['format_version']} is not "
                                     f"{NATIVE_FORMAT} v{NATIVE_VERSION}; re-convert the model")
            data = {k: z[k] for k in z.files}
    except ModelFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ModelFileError(f"{path}: model file is unreadable, truncated or corrupt "
                             f"({type(exc).__name__}: {exc}); re-download or re-convert it") from exc
    lm, regions, iris = data.get("landmark_indices"), data.get("regions"), data.get("iris_coordinates")
    return MorphableModel(
        name=str(data["name"]),
        mean_shape=data["mean_shape"].astype(np.float32),
        identity_basis=data["identity_basis"].astype(np.float32),
        identity_std=data["identity_std"].astype(np.float32),
        expression_basis=data["expression_basis"].astype(np.float32),
        expression_kind=str(data["expression_kind"]),  # type: ignore[arg-type]
        expression_names=tuple(str(s) for s in data["expression_names"]),
        triangles=data["triangles"].astype(np.int32),
        albedo_mean=data["albedo_mean"].astype(np.float32),
        albedo_basis=data["albedo_basis"].astype(np.float32),
        landmark_indices=None if lm is None else lm.astype(np.int64),
        sha256=sha256,
        source=source,
        metadata=json.loads(str(data["metadata"])),
        regions=None if regions is None else regions.astype(np.uint8),
        iris_coordinates=None if iris is None else iris.astype(np.float32),
    )
