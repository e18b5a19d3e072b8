"""Renderer correctness without trusting it: ray casting, K·X/z, the SH formula, tiling invariance."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from synthface import camera_vertices, load_config, sample_params
from synthface.model import FACE_CLASSES, SEGMENTATION_CLASSES
from synthface.occlusion import vertex_occlusion
from synthface.params import EYES_FIELDS
from synthface.render import FaceRenderer, RenderSettings, landmark_visibility
from synthface.shading import irradiance, key_light, linear_to_srgb, specular

from .conftest import make_model

SIZE = 64
FACE_IDS = [SEGMENTATION_CLASSES.index(c) for c in FACE_CLASSES]


def frontal_config(image_size: int = SIZE, **extra):
    overrides = {"image_size": image_size, "pose.yaw_deg": [-25, 25], "pose.pitch_deg": [-15, 15],
                 "camera.distance_mm": [300, 900]}
    overrides.update(extra)
    return load_config(overrides=overrides)


def neutral_copies(model, n: int, size: int, **extra) -> dict[str, np.ndarray]:
    """``n`` copies of one frontal, upright sample (seed 0) with a neutral expression at ``size`` px:
    tests set one parameter per copy and compare."""
    cfg = frontal_config(image_size=size, **{"pose.yaw_deg": [0, 0], "pose.pitch_deg": [0, 0],
                                             "pose.roll_deg": [0, 0], **extra})
    one = sample_params(model, seed=0, indices=[0], config=cfg)
    params = {k: np.repeat(v, n, axis=0) for k, v in one.items()}
    params["expression"][:] = 0.0
    return params


def ray_cast(vertices: np.ndarray, triangles: np.ndarray, k: np.ndarray, size: int):
    """Nearest hit of the ray through every pixel centre: (depth z or 0, hit point, triangle or -1) per pixel."""
    mesh = trimesh.Trimesh(vertices, triangles, process=False)
    v, u = np.mgrid[0:size, 0:size]
    pix = np.stack([u.ravel() + 0.5, v.ravel() + 0.5, np.ones(u.size)], axis=1)
    dirs = pix @ np.linalg.inv(k).T  # z component 1: the hit's t is its depth
    locs, ray_idx, tri_idx = mesh.ray.intersects_location(np.zeros_like(dirs), dirs, multiple_hits=True)
    depth = np.full(u.size, np.inf)
    np.minimum.at(depth, ray_idx, locs[:, 2])
    hit = np.zeros((u.size, 3))
    tri = np.full(u.size, -1)
    nearest = np.isclose(locs[:, 2], depth[ray_idx])
    hit[ray_idx[nearest]] = locs[nearest]
    tri[ray_idx[nearest]] = tri_idx[nearest]
    depth[~np.isfinite(depth)] = 0
    return depth.reshape(size, size), hit.reshape(size, size, 3), tri.reshape(size, size)


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3 × 3 neighbourhood is all inside (away from silhouettes)."""
    m = np.pad(mask.astype(bool), 1)
    h, w = mask.shape
    return np.all([m[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


@pytest.fixture(scope="module")
def sphere_render(gl_ctx):
    model = make_model("pca")
    params = sample_params(model, seed=5, indices=range(6), config=frontal_config())
    for key in ("identity", "expression"):  # an exact icosphere, so normals have a known truth
        params[key] = np.zeros_like(params[key])
    with FaceRenderer(model, RenderSettings(SIZE, faces_per_draw=4, normals=True), ctx=gl_ctx) as r:
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    return model, params, out


@pytest.mark.parametrize("which", ["sphere", "bundled"])
def test_depth_and_mask_match_ray_casting(which, sphere_render, gl_ctx, request):
    """depth covers every rendered surface; mask the pixels whose surface is of a face class (the bundled
    head's scalp, ears and neck are depth but not mask). Hair is off: its shell is not the model's mesh."""
    if which == "sphere":
        model, params, out = sphere_render
    else:
        model = request.getfixturevalue("bundled_model")
        params = sample_params(model, seed=2, indices=range(2), config=frontal_config(**{"hair.bald_prob": 1.0}))
        with FaceRenderer(model, RenderSettings(SIZE), ctx=gl_ctx) as r:
            out = r.render(params)
    regions = model.regions if model.regions is not None else np.ones(model.n_vertices, np.uint8)
    verts = camera_vertices(model, params)
    for b in range(len(verts)):
        ref, _, tri = ray_cast(verts[b].astype(np.float64), model.triangles, params["intrinsics"][b], SIZE)
        both = interior(out.depth[b] > 0) & interior(ref > 0)
        assert both.sum() > 0.1 * SIZE * SIZE
        err = np.abs(out.depth[b][both] - ref[both])
        assert err.max() < 0.1, f"sample {b}: depth differs by up to {err.max():.3f} mm"
        # Exactly the pixels whose centre ray hits (a face-class triangle, by its provoking = last vertex),
        # except at silhouette and class edges.
        face = np.isin(regions[model.triangles[tri, 2]], FACE_IDS) & (tri >= 0)
        for got, want in ((out.depth[b] > 0, ref > 0), (out.mask[b] > 0, face)):
            differ = got != want
            edge = ~interior(want) & ~interior(~want)
            assert not (differ & ~edge).any()
            assert differ.sum() <= 0.01 * SIZE * SIZE
        assert (out.mask[b][out.depth[b] == 0] == 0).all()  # the face is a rendered surface


def test_landmarks_are_k_x_over_z(sphere_render):
    model, params, out = sphere_render
    lm = camera_vertices(model, params)[:, model.landmark_indices]
    k = params["intrinsics"]
    u = k[:, 0, 0, None] * lm[..., 0] / lm[..., 2] + k[:, 0, 2, None]
    v = k[:, 1, 1, None] * lm[..., 1] / lm[..., 2] + k[:, 1, 2, None]
    np.testing.assert_allclose(out.landmarks_xy, np.stack([u, v], -1), atol=1e-3)


def pixel_points(depth: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) camera-space points at pixel centres from depth (B, H, W) and K (B, 3, 3)."""
    h, w = depth.shape[1:]
    v, u = np.mgrid[0:h, 0:w] + 0.5
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(k).swapaxes(-1, -2)[:, None]
    return rays * depth[..., None]


@pytest.mark.parametrize("antialias", ["off", "edges", "msaa"])
def test_shading_matches_the_sh_formula(sphere_render, gl_ctx, antialias):
    model, params, _ = sphere_render
    params = dict(params, albedo=np.zeros_like(params["albedo"]),  # albedo = mean = 0.5 grey
                  material=np.zeros_like(params["material"]))  # no specular lobe, no occlusion
    with FaceRenderer(model, RenderSettings(SIZE, normals=True, antialias=antialias), ctx=gl_ctx) as r:
        out = r.render(params)
    inside = out.mask.astype(bool) if antialias == "off" else np.stack([interior(m) for m in out.mask])
    want = linear_to_srgb(0.5 * irradiance(out.normals, params["light"])) * 255
    diff = np.abs(out.image.astype(np.float64) - want)[inside]
    # MSAA averages samples that neighbouring triangles shaded at their own pixel centre: a little more slack.
    assert diff.max() <= (2.0 if antialias == "msaa" else 1.0), diff.max()


def test_specular_and_occlusion_match_the_shading_module(sphere_render, gl_ctx):
    """The shader's Blinn-Phong lobe is synthface.shading.specular; occlusion darkens only the albedo term."""
    model, params, _ = sphere_render
    material = np.zeros_like(params["material"])
    material[:, 0] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    material[:, 1] = [4, 8, 16, 24, 32, 64]
    params = dict(params, albedo=np.zeros_like(params["albedo"]), material=material)
    with FaceRenderer(model, RenderSettings(SIZE, normals=True, antialias="off"), ctx=gl_ctx) as r:
        out = r.render(params)
    points = pixel_points(out.depth, params["intrinsics"])
    lobe = specular(out.normals, points, params["light"], material)
    assert lobe[out.mask > 0].max() > 0.2  # the test sees highlights
    want = linear_to_srgb(0.5 * irradiance(out.normals, params["light"]) + lobe) * 255
    diff = np.abs(out.image.astype(np.float64) - want)[out.mask > 0]
    assert np.percentile(diff, 99) <= 2.0 and diff.max() <= 6.0, (np.percentile(diff, 99), diff.max())


def test_occlusion_of_a_convex_shape_changes_nothing(sphere_render, gl_ctx):
    """A sphere is open everywhere: occlusion ≈ 1 at every vertex, and at full strength the image stays."""
    model, params, _ = sphere_render
    assert np.abs(vertex_occlusion(model, gl_ctx) - 1.0).max() < 0.05
    images = []
    for strength in (0.0, 1.0):
        material = np.tile([0.0, 1.0, strength], (len(params["pose"]), 1)).astype(np.float32)
        with FaceRenderer(model, RenderSettings(SIZE, antialias="off"), ctx=gl_ctx) as r:
            images.append(r.render(dict(params, material=material)).image.astype(int))
    assert np.abs(images[0] - images[1]).max() <= 6


def test_bundled_occlusion_darkens_cavities(bundled_model, gl_ctx):
    occlusion = vertex_occlusion(bundled_model, gl_ctx)
    assert occlusion.shape == (bundled_model.n_vertices,) and 0 <= occlusion.min() and occlusion.max() <= 1
    lm = bundled_model.landmark_indices
    nose_tip, mouth_inner, cheek_contour = occlusion[lm[30]], occlusion[lm[60:68]].mean(), occlusion[lm[2]]
    assert nose_tip > 0.9 and cheek_contour > 0.8, (nose_tip, cheek_contour)
    assert mouth_inner < nose_tip - 0.1, (mouth_inner, nose_tip)
    assert gl_ctx.error == "GL_NO_ERROR"


def test_normals_are_unit_and_match_the_surface(sphere_render):
    model, params, out = sphere_render
    verts = camera_vertices(model, params)
    inside = out.mask.astype(bool)
    np.testing.assert_allclose(np.linalg.norm(out.normals[inside], axis=-1), 1.0, atol=1e-4)
    assert out.normals[inside][:, 2].max() < 0.2  # visible surfaces face the camera (−z)
    # On the sphere the true normal at a hit point is radial from its centre.
    for b in range(2):
        _, hit, _ = ray_cast(verts[b].astype(np.float64), model.triangles, params["intrinsics"][b], SIZE)
        centre = verts[b].mean(axis=0)
        radial = hit - centre
        radial /= np.maximum(np.linalg.norm(radial, axis=-1, keepdims=True), 1e-9)
        cos = (out.normals[b] * radial).sum(-1)[interior(out.mask[b])]
        assert cos.min() > 0.97 and cos.mean() > 0.995


def test_tiles_do_not_bleed_and_batching_does_not_matter(gl_ctx):
    model = make_model("blendshape")
    # Faces larger than their tile (fraction > 1) would spill into neighbours without clip distances.
    params = sample_params(model, seed=1, indices=range(7),
                           config=frontal_config(**{"camera.face_fraction": [1.2, 1.4]}))
    with FaceRenderer(model, RenderSettings(SIZE, faces_per_draw=4), ctx=gl_ctx) as r:
        batched = r.render(params)
        singles = [r.render({k: v[i:i + 1] for k, v in params.items()}) for i in range(7)]
    for i, one in enumerate(singles):
        assert (one.mask[0] != batched.mask[i]).mean() < 0.002
        both = (one.mask[0] > 0) & (batched.mask[i] > 0)
        np.testing.assert_allclose(one.depth[0][both], batched.depth[i][both], atol=1e-3)
    assert batched.mask[:, 0, :].any() or batched.mask[:, :, 0].any()  # faces do reach the tile borders


@pytest.mark.parametrize("method", ["edges", "msaa"])
def test_solid_background_and_antialiased_edges(gl_ctx, method):
    """Away from the silhouette the background is exactly its colour; on it, anti-aliased pixels lie
    between the face's colour and the background's (no stair steps), while mask and depth stay exact."""
    model = make_model("pca")
    cfg = frontal_config(**{"background.mode": "solid", "background.colour": [0.0, 0.0, 1.0]})
    params = sample_params(model, seed=5, indices=range(4), config=cfg)
    params["albedo"] = np.zeros_like(params["albedo"])
    outs = {}
    for aa in ("off", method):
        with FaceRenderer(model, RenderSettings(SIZE, antialias=aa), ctx=gl_ctx) as r:
            outs[aa] = r.render(params)
    hard, soft = outs["off"], outs[method]
    np.testing.assert_array_equal(hard.mask, soft.mask)
    np.testing.assert_array_equal(hard.depth, soft.depth)
    np.testing.assert_array_equal(hard.landmarks_xy, soft.landmarks_xy)
    for b in range(4):
        outside = interior(hard.mask[b] == 0)
        assert (soft.image[b][outside] == [0, 0, 255]).all() and (hard.image[b][outside] == [0, 0, 255]).all()
        edge = ~interior(hard.mask[b] > 0) & ~outside
        # Hard edges: every pixel is face (grey, blue ≈ red) or background (pure blue). Anti-aliased: the
        # edge has mixtures, red strictly between the two.
        red_soft = soft.image[b][edge][:, 0].astype(int)
        assert (hard.image[b][edge][:, 0] == 0).sum() + (hard.image[b][edge][:, 0] > 60).sum() == edge.sum()
        assert ((red_soft > 5) & (red_soft < hard.image[b][interior(hard.mask[b] > 0)][:, 0].min() - 5)).sum() > 10


def test_procedural_backgrounds_are_textured_and_differ(gl_ctx):
    model = make_model("pca")
    params = sample_params(model, seed=2, indices=range(8), config=frontal_config(image_size=96))
    with FaceRenderer(model, RenderSettings(96, faces_per_draw=8), ctx=gl_ctx) as r:
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    background = [out.image[b][interior(out.mask[b] == 0)].astype(float) for b in range(8)]
    assert all(bg.std(axis=0).mean() > 4 for bg in background)  # not a flat colour
    means = np.array([bg.mean(axis=0) for bg in background])
    assert means.std(axis=0).mean() > 8  # each sample its own scene
    # Shapes in use come first and lie inside the documented ranges.
    kinds = params["background_shapes"][..., 0]
    assert (np.diff((kinds > 0).astype(int), axis=1) <= 0).all() and set(np.unique(kinds)) <= {0, 1, 2}


def test_bundled_visible_surfaces_face_the_camera(bundled_model, gl_ctx):
    cfg = frontal_config(**{"pose.yaw_deg": [0, 0], "pose.pitch_deg": [0, 0], "pose.roll_deg": [0, 0]})
    params = sample_params(bundled_model, seed=0, indices=[0], config=cfg)
    with FaceRenderer(bundled_model, RenderSettings(128, normals=True), ctx=gl_ctx) as r:
        out = r.render(params)
    facing = out.normals[0][out.mask[0] > 0][:, 2] < 0  # camera z points away from the camera
    assert facing.mean() > 0.97


@pytest.mark.parametrize("size", [SIZE, 200])
def test_bundled_landmarks_visibility(bundled_model, gl_ctx, size):
    cfg = frontal_config(image_size=size, **{"pose.yaw_deg": [0, 0], "pose.pitch_deg": [0, 0],
                                             "pose.roll_deg": [0, 0]})
    frontal = sample_params(bundled_model, seed=0, indices=[0], config=cfg)
    frontal["expression"][:] = 0.0  # the neutral face: an expression may hide the inner lips
    turned = {}
    for sign in (1, -1):
        turned[sign] = dict(frontal, pose=frontal["pose"].copy())
        turned[sign]["pose"][:, 0] = sign * np.radians(75)
    with FaceRenderer(bundled_model, RenderSettings(size), ctx=gl_ctx) as r:
        front = r.render(frontal).landmarks_visible[0]
        right, left = (r.render(turned[s]).landmarks_visible[0] for s in (1, -1))
    hidden = set(np.flatnonzero(~front).tolist())
    # Jaw points 1 and 15 are fixed vertices just behind the frontal outline (bfm_assets/PROVENANCE.md).
    assert hidden <= {1, 15} and (size < 100 or not hidden)
    # yaw +75°: the face turns to the image's left, hiding the subject's right jaw (0-3) and eye (36).
    subject_right, subject_left = [0, 1, 2, 3, 36], [13, 14, 15, 16, 45]
    assert not right[subject_right].any() and right[subject_left].all()
    assert not left[subject_left].any() and left[subject_right].all()


def test_landmark_visibility_rules():
    depth = np.zeros((1, 8, 8), np.float32)
    depth[0, 2:6, 2:6] = 100.0
    xy = np.array([[[3.5, 3.5], [3.5, 3.5], [6.2, 3.5], [7.5, 7.5], [-1.0, 3.0]]], np.float32)
    z = np.array([[100.5, 110.0, 101.0, 100.0, 100.0]])
    # on the surface; 10 mm behind it; just off the silhouette; no surface near; outside the image
    np.testing.assert_array_equal(landmark_visibility(xy, z, depth, 4.0), [[True, False, True, False, False]])


def test_renderer_survives_another_context_being_created(sphere_render, gl_ctx):
    """generate() checks GL by creating and releasing a context; a live renderer must keep working."""
    from synthface.gl import create_context

    model, params, first = sphere_render
    with FaceRenderer(model, RenderSettings(SIZE, faces_per_draw=4, normals=True), ctx=gl_ctx) as r:
        create_context().release()
        again = r.render(params)
    np.testing.assert_array_equal(again.depth, first.depth)


def test_segmentation_follows_the_model_regions_and_mask_is_the_face(gl_ctx):
    """Vertices labelled scalp (the sphere's top half here) are rendered with depth and their class, but
    are not in the mask; a model without regions is face throughout (format 1's mask)."""
    import dataclasses

    from synthface.model import SEGMENTATION_CLASSES

    plain = make_model("pca")
    face, scalp = SEGMENTATION_CLASSES.index("face"), SEGMENTATION_CLASSES.index("scalp")
    regions = np.where(plain.mean_shape[:, 1] > 20.0, scalp, face).astype(np.uint8)
    labelled = dataclasses.replace(plain, regions=regions)
    params = sample_params(plain, seed=1, indices=range(3), config=frontal_config(**{"pose.roll_deg": [0, 0]}))
    params["hair"][:] = 0.0  # bald: the scalp shows (hair: the next test)
    params["facial_hair"][:] = 0.0  # no brows drawn (test_brows_and_stubble_follow_their_parameters)
    outs = []
    for model in (plain, labelled):
        with FaceRenderer(model, RenderSettings(SIZE, antialias="off"), ctx=gl_ctx) as r:
            outs.append(r.render(params))
    before, after = outs
    np.testing.assert_array_equal(before.segmentation, np.where(before.depth > 0, face, 0))
    np.testing.assert_array_equal(after.depth, before.depth)  # every surface keeps its depth
    assert set(np.unique(after.segmentation)) == {0, face, scalp}
    np.testing.assert_array_equal(after.mask, after.segmentation == face)
    rows = np.nonzero(after.segmentation[0] == scalp)[0]
    assert rows.mean() < np.nonzero(after.segmentation[0] == face)[0].mean()  # the scalp is on top (y up)


def test_occluders_hide_the_face_behind_them(gl_ctx):
    """An occluder is a surface: its depth and class at its pixels, out of the mask, and the landmarks
    behind it are not visible. Off by default."""
    from synthface.model import SEGMENTATION_CLASSES
    from synthface.params import OCCLUDER

    model = make_model("pca")
    assert (sample_params(model, seed=0, indices=range(20), config=frontal_config())["occluders"] == 0).all()
    params = sample_params(model, seed=3, indices=range(4), config=frontal_config(**{"occluders.count": 1}))
    occ = np.zeros_like(params["occluders"])
    occ[:, 0, [OCCLUDER["kind"], OCCLUDER["x"], OCCLUDER["y"], OCCLUDER["width"], OCCLUDER["height"]]] = \
        [1, 0.5, 0.5, 0.3, 0.3]  # a square card over the image centre
    occ[:, 0, OCCLUDER["z"]] = params["pose"][:, 5] - 150.0
    occ[:, 0, OCCLUDER["r"]] = 1.0
    assert (params["occluders"][..., OCCLUDER["kind"]] > 0).any()  # the sampler draws some when asked
    with FaceRenderer(model, RenderSettings(SIZE, antialias="off"), ctx=gl_ctx) as r:
        clear = r.render(dict(params, occluders=np.zeros_like(occ)))
        hidden = r.render(dict(params, occluders=occ))
    card = np.zeros((SIZE, SIZE), bool)
    lo, hi = int(0.35 * SIZE) + 1, int(0.65 * SIZE) - 1
    card[lo:hi, lo:hi] = True
    occluder = SEGMENTATION_CLASSES.index("occluder")
    for b in range(4):
        assert (hidden.segmentation[b][card] == occluder).all() and not hidden.mask[b][card].any()
        np.testing.assert_allclose(hidden.depth[b][card], occ[b, 0, OCCLUDER["z"]], rtol=1e-5)
        np.testing.assert_array_equal(hidden.segmentation[b][~card & (hidden.segmentation[b] != occluder)],
                                      clear.segmentation[b][~card & (hidden.segmentation[b] != occluder)])
        xy = clear.landmarks_xy[b]
        under = (xy >= lo + 1).all(-1) & (xy < hi - 1).all(-1) & clear.landmarks_visible[b]
        assert under.any() and not hidden.landmarks_visible[b][under].any()


def test_hair_covers_the_scalp_past_the_hairline(gl_ctx):
    """On a model with a scalp, hair is a shell above it (nearer depth, class hair) from the hairline on;
    bald samples show the scalp; the face and its mask do not change."""
    import dataclasses

    from synthface.model import SEGMENTATION_CLASSES
    from synthface.params import HAIR

    plain = make_model("pca")
    face, scalp, hair = (SEGMENTATION_CLASSES.index(c) for c in ("face", "scalp", "hair"))
    model = dataclasses.replace(plain, regions=np.where(plain.mean_shape[:, 1] > 20.0, scalp, face).astype(np.uint8))
    params = sample_params(model, seed=1, indices=range(4), config=frontal_config(**{"pose.pitch_deg": [15, 15]}))
    params["hair"][:, HAIR["coverage"]] = [1, 1, 1, 0]
    params["hair"][:, HAIR["hairline_mm"]] = [0, 20, 0, 0]
    params["hair"][:, HAIR["recession_mm"]] = 0
    params["hair"][:, HAIR["thickness_mm"]] = [5, 5, 20, 5]
    bald = dict(params, hair=np.zeros_like(params["hair"]))
    with FaceRenderer(model, RenderSettings(SIZE, antialias="off"), ctx=gl_ctx) as r:
        with_hair, without = r.render(params), r.render(bald)
    assert gl_ctx.error == "GL_NO_ERROR"
    covered = [(with_hair.segmentation[b] == hair).sum() for b in range(4)]
    assert covered[0] > 50 and covered[3] == 0
    assert covered[1] < covered[0]  # a hairline 20 mm further back leaves more scalp bare
    assert (without.segmentation == hair).sum() == 0
    for b in range(3):
        on = with_hair.segmentation[b] == hair
        assert ((without.depth[b] - with_hair.depth[b])[on & (without.depth[b] > 0)] >= 0.9).all()  # above the skin
        np.testing.assert_array_equal(with_hair.mask[b] | on, without.mask[b] | on)
    # thicker hair stands further out: a larger silhouette
    assert ((with_hair.depth[2] > 0).sum() > (without.depth[2] > 0).sum())


def test_clothes_follow_their_parameters(bundled_model, gl_ctx):
    """params/clothes dresses the bust: bare shoulders are neck skin; dressed, the cloth's pixels are class
    clothes in its colour, below a neckline that a deeper neckline lowers; depth and mask do not change.
    Models without a bust get no clothes."""
    from synthface.clothes import NO_COLLAR, collar_fields
    from synthface.params import CLOTHES

    size = 96
    params = neutral_copies(bundled_model, 3, size, **{"camera.face_fraction": [0.4, 0.4]})
    c = params["clothes"]
    c[:] = 0.0
    c[:, CLOTHES["coverage"]] = [0.0, 1.0, 1.0]
    c[:, CLOTHES["neckline_mm"]] = [0.0, 0.0, 40.0]
    c[:, CLOTHES["b"]] = 0.6  # blue cloth, plain
    with FaceRenderer(bundled_model, RenderSettings(size, antialias="off"), ctx=gl_ctx) as r:
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    clothes, neck = SEGMENTATION_CLASSES.index("clothes"), SEGMENTATION_CLASSES.index("neck")
    np.testing.assert_allclose(out.depth[1:], out.depth[:1].repeat(2, axis=0), atol=0.05)
    np.testing.assert_array_equal(out.mask[1:], out.mask[:1].repeat(2, axis=0))
    dressed = (out.segmentation == clothes).sum(axis=(1, 2))
    bare_neck = (out.segmentation == neck).sum(axis=(1, 2))
    assert dressed[0] == 0 and dressed[1] > 200 and 0 < dressed[2] < dressed[1]
    assert bare_neck[0] == bare_neck[1] + dressed[1] and bare_neck[2] > bare_neck[1]
    on = out.segmentation[1] == clothes
    rgb = out.image[1][on].astype(float).mean(axis=0)
    assert rgb[2] > rgb[0] + 60 and rgb[2] > rgb[1] + 60  # blue cloth
    assert np.nonzero(on)[0].min() > out.landmarks_xy[1, 8, 1]  # below the chin
    assert (collar_fields(make_model("pca"))[:, 0] == NO_COLLAR).all()


def test_brows_and_stubble_follow_their_parameters(bundled_model, gl_ctx):
    """params/facial_hair draws brows and stubble per sample: none at density 0; brows above the eyes,
    in the brows class; stubble darkens the chin, not the forehead; depth and mask do not change."""
    from synthface.hair import NO_BROW, face_hair_fields
    from synthface.params import FACIAL_HAIR

    size = 128
    params = neutral_copies(bundled_model, 3, size, **{"hair.bald_prob": 1.0})
    fh = params["facial_hair"]
    fh[:, FACIAL_HAIR["brow_density"]] = [0.0, 1.0, 0.0]
    fh[:, FACIAL_HAIR["beard_density"]] = [0.0, 0.0, 1.0]
    fh[:, FACIAL_HAIR["beard_reach"]] = 1.1
    fh[:, FACIAL_HAIR["r"]:FACIAL_HAIR["b"] + 1] = 0.02
    with FaceRenderer(bundled_model, RenderSettings(size, antialias="off"), ctx=gl_ctx) as r:
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    brows = SEGMENTATION_CLASSES.index("brows")
    np.testing.assert_allclose(out.depth[1:], out.depth[:1].repeat(2, axis=0), atol=0.05)  # tiles round apart
    np.testing.assert_array_equal(out.mask[1:], out.mask[:1].repeat(2, axis=0))
    grey = out.image.astype(float).mean(axis=-1)
    xy = out.landmarks_xy[0]
    on = out.segmentation[1] == brows
    assert (out.segmentation[[0, 2]] == brows).sum() == 0 and on.sum() > 40
    rows = np.nonzero(on)[0]
    assert rows.max() < xy[36:48, 1].min() and rows.min() > xy[17:27, 1].min() - 12  # over the eyes
    assert (grey[0] - grey[1])[on].mean() > 30
    chin = np.zeros((size, size), bool)
    chin[int(xy[57, 1]) + 2:int(xy[8, 1]) - 1, int(xy[7, 0]):int(xy[9, 0]) + 1] = True
    assert (grey[0] - grey[2])[chin].mean() > 15
    forehead = np.zeros((size, size), bool)
    forehead[:int(xy[17:27, 1].min()) - 12] = True
    # the same head in another tile of the batch rounds a level apart here and there; stubble darkens by > 15
    np.testing.assert_allclose(out.image[2][forehead], out.image[0][forehead], atol=1)
    # models without regions (BFM files: brows in their albedo) get neither
    fields = face_hair_fields(make_model("pca"))
    assert (fields[:, 0] == NO_BROW).all() and (fields[:, 2] == 0).all()


def test_eyes_follow_their_parameters(bundled_model, gl_ctx):
    """params/eyes draws the iris per pixel inside each eye opening: a dark iris and a wide pupil darken
    the eyes and nothing else; depth, mask and classes do not move. Models without iris coordinates
    (the BFM files) ignore it."""
    from synthface.params import EYES

    size = 160
    params = neutral_copies(bundled_model, 3, size, **{"camera.face_fraction": [0.7, 0.7]})
    e = params["eyes"]
    e[:, EYES["r"]:EYES["b"] + 1] = [[0.02, 0.01, 0.005], [0.3, 0.4, 0.6], [0.3, 0.4, 0.6]]
    e[:, EYES["pupil"]] = [0.3, 0.1, 0.9]
    e[:, EYES["fibres"]] = 0.3
    params["shadow"][:] = 0.0  # a shadow's edge falls a level apart in another tile's shadow map
    with FaceRenderer(bundled_model, RenderSettings(size, antialias="off"), ctx=gl_ctx) as r:
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    np.testing.assert_allclose(out.depth[1:], out.depth[:1].repeat(2, axis=0), atol=0.05)
    np.testing.assert_array_equal(out.segmentation[1:], out.segmentation[:1].repeat(2, axis=0))
    eyes = out.segmentation[0] == SEGMENTATION_CLASSES.index("eyes")
    xy = out.landmarks_xy[0]
    opening = np.zeros((size, size), bool)
    for a in (36, 42):  # inside each eye's contour box: the eyeball between the lids
        lo, hi = xy[a:a + 6].min(axis=0), xy[a:a + 6].max(axis=0)
        opening[int(lo[1]):int(hi[1]) + 1, int(lo[0]):int(hi[0]) + 1] = True
    grey = out.image.astype(float).mean(axis=-1)
    assert (eyes & opening).sum() > 30
    dark, light, wide = (grey[k][eyes & opening].mean() for k in range(3))
    assert light > dark + 15 and light > wide + 10, (dark, light, wide)
    blue = (out.image[1].astype(float) - out.image[0])[eyes & opening].mean(axis=0)
    assert blue[2] > blue[0] + 5  # the blue iris shows
    np.testing.assert_allclose(out.image[1][~eyes], out.image[0][~eyes], atol=1)  # tiles round apart
    sphere = make_model("pca")
    plain = sample_params(sphere, seed=0, indices=[0, 0], config=frontal_config())
    plain["eyes"][1] = plain["eyes"][1] * 0.1 + 0.5
    with FaceRenderer(sphere, RenderSettings(SIZE), ctx=gl_ctx) as r:
        out = r.render(plain)
    np.testing.assert_array_equal(out.image[0], out.image[1])


def _lit_from(direction, strength: float = 1.0) -> np.ndarray:
    """(9, 3) SH light: a fill of 0.5 plus a key light of ``0.5·strength`` from camera-space ``direction``."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    light = 0.5 * strength * key_light(d[None])[0]
    light[0] += 0.5
    return np.repeat(light[:, None], 3, axis=1).astype(np.float32)


def test_cast_shadows_darken_only_what_the_head_hides_from_the_light(bundled_model, gl_ctx):
    """params/shadow: lit from above, the head shades itself (the jaw the neck, the nose the lip) — pixels
    that face the light but are hidden from it go darker, none brighter; geometry outputs do not move. Lit
    from the camera, almost nothing is hidden; at strength 0 the image is as without the pass."""
    size = 128
    params = neutral_copies(bundled_model, 4, size, **{"hair.bald_prob": 1.0})
    params["material"][:] = 0.0
    above = [-0.5, -1.0, -0.4]  # camera space: from the image's upper left, in front of the face
    high, front = _lit_from(above), _lit_from([0.0, 0.0, -1.0])
    params["light"][:] = [high, high, front, front]
    params["shadow"][:] = [0.0, 1.0, 0.0, 1.0]
    with FaceRenderer(bundled_model, RenderSettings(size, antialias="off", normals=True), ctx=gl_ctx) as r:
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    np.testing.assert_allclose(out.depth[1:], out.depth[:1].repeat(3, axis=0), atol=0.05)
    np.testing.assert_array_equal(out.segmentation[1:], out.segmentation[:1].repeat(3, axis=0))
    grey = out.image.astype(float).mean(axis=-1)
    surface = out.segmentation[0] > 0
    shaded = grey[0] - grey[1]
    assert shaded.min() >= -1.0  # a shadow never brightens
    hidden = surface & (shaded > 15)
    assert 30 < hidden.sum() < 0.3 * surface.sum()
    assert (out.normals[1][hidden] @ np.array(above) > 0).mean() > 0.9  # those pixels face the light
    neck = out.segmentation[0] == SEGMENTATION_CLASSES.index("neck")
    assert (hidden & neck).sum() > 0.3 * hidden.sum()  # most of it under the jaw
    frontal = surface & (grey[2] - grey[3] > 15)
    assert frontal.sum() < 0.01 * surface.sum()
    with FaceRenderer(bundled_model, RenderSettings(size, antialias="off"), ctx=gl_ctx) as r:
        again = r.render({k: v[:1] for k, v in params.items()})
    np.testing.assert_array_equal(again.image[0], out.image[0])


def test_slots_place_a_batch_in_a_full_one_and_refuse_what_does_not_fit(gl_ctx):
    """render(slot=s) draws the batch in slots s, s+1, … of a faces_per_draw batch: each sample comes
    out as it does at that slot of a full batch; slots outside the batch are a ConfigError."""
    from synthface.errors import ConfigError

    model = make_model("pca")
    params = sample_params(model, seed=3, indices=range(4), config=frontal_config())
    with FaceRenderer(model, RenderSettings(SIZE, faces_per_draw=4, antialias="off"), ctx=gl_ctx) as r:
        full = r.render(params)
        part = r.render({k: v[1:3] for k, v in params.items()}, slot=1)
        for slot, n in ((2, 3), (-1, 2), (4, 1), (1, 4)):
            with pytest.raises(ConfigError, match="do not fit"):
                r.render({k: v[:n] for k, v in params.items()}, slot=slot)
    assert gl_ctx.error == "GL_NO_ERROR"
    np.testing.assert_array_equal(part.image, full.image[1:3])
    np.testing.assert_array_equal(part.depth, full.depth[1:3])


def test_skin_is_mottled_per_sample_on_models_with_regions(bundled_model, gl_ctx):
    """The bundled head's skin carries a faint mottle placed by the sample's index: the same face at
    another index differs a little on the skin, not on the eyes (whose iris fibres, also placed by the
    index, are off here), and not in depth."""
    cfg = frontal_config(**{"hair.bald_prob": 1.0, "facial_hair.brow_density": [0, 0], "facial_hair.beard_prob": 0})
    one = sample_params(bundled_model, seed=1, indices=[0], config=cfg)
    one["eyes"][:, EYES_FIELDS.index("fibres")] = 0.0
    params = {k: np.repeat(v, 2, axis=0) for k, v in one.items()}
    params["index"] = np.array([0, 7])
    with FaceRenderer(bundled_model, RenderSettings(SIZE, antialias="off"), ctx=gl_ctx) as r:
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    np.testing.assert_allclose(out.depth[0], out.depth[1], atol=0.05)  # (tiles round apart)
    diff = np.abs(out.image[0].astype(int) - out.image[1]).max(axis=-1)
    skin = out.segmentation[0] == SEGMENTATION_CLASSES.index("face")
    eyes = out.segmentation[0] == SEGMENTATION_CLASSES.index("eyes")
    assert 0.5 < diff[skin].mean() < 12 and diff[eyes].max() == 0


def test_a_samples_textures_do_not_depend_on_its_slot(bundled_model, gl_ctx):
    """Brow hairs, stubble, skin, cloth patterns and occluder grain are noise placed per sample (by its
    index): the same sample drawn at another instance of a draw comes out the same."""
    cfg = frontal_config(**{"facial_hair.beard_prob": 1.0, "clothes.pattern_probs": [0, 0, 0, 1],
                            "occluders.count": 2, "occluders.texture": [0.3, 0.3], "camera.face_fraction": [0.5, 0.5]})
    params = sample_params(bundled_model, seed=3, indices=range(8, 12), config=cfg)
    with FaceRenderer(bundled_model, RenderSettings(SIZE, faces_per_draw=4, antialias="off"), ctx=gl_ctx) as r:
        full = r.render(params)
        alone = r.render({k: v[2:3] for k, v in params.items()}, slot=2)  # instance 0 of its draw, not 2
    assert gl_ctx.error == "GL_NO_ERROR"
    np.testing.assert_array_equal(alone.image[0], full.image[2])


@pytest.mark.parametrize("method", ["edges", "msaa"])
def test_antialiasing_blends_the_ragged_hairline(gl_ctx, method):
    """The hairline is a cut in the shader, not a geometric edge: MSAA alone would leave it stair-stepped.
    ``edges`` finds it in the exact class buffer; the MSAA colour pass turns its coverage into samples
    (alpha-to-coverage). Either way hairline pixels are blends of hair and skin, and inside the hair
    the image is what the one-sample render gives."""
    import dataclasses

    from synthface.params import HAIR

    plain = make_model("pca")
    face, scalp, hair = (SEGMENTATION_CLASSES.index(c) for c in ("face", "scalp", "hair"))
    model = dataclasses.replace(plain, regions=np.where(plain.mean_shape[:, 1] > 20.0, scalp, face).astype(np.uint8))
    params = sample_params(model, seed=1, indices=range(2), config=frontal_config(**{"pose.pitch_deg": [15, 15]}))
    params["hair"][:, HAIR["coverage"]] = 1
    params["hair"][:, HAIR["hairline_mm"]] = 0
    params["hair"][:, HAIR["thickness_mm"]] = 5
    outs = {}
    for aa in ("off", method):
        with FaceRenderer(model, RenderSettings(SIZE, antialias=aa), ctx=gl_ctx) as r:
            outs[aa] = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    one, multi = outs["off"], outs[method]
    np.testing.assert_array_equal(multi.segmentation, one.segmentation)  # the geometry is the same
    diff = np.abs(multi.image.astype(int) - one.image.astype(int)).max(axis=-1)

    def inner(masks: np.ndarray) -> np.ndarray:
        return np.stack([interior(m) for m in masks])

    is_hair = one.segmentation == hair
    hairline = (is_hair & ~inner(is_hair)) | (~is_hair & ~inner(~is_hair))
    hairline &= inner(one.depth > 0)  # away from the silhouette (plain MSAA's business)
    assert hairline.sum() > 20
    assert (diff[hairline] > 2).mean() > 0.3
    inside = inner(inner(is_hair))
    assert (diff[inside] <= 1).mean() > 0.95
    if method == "edges":  # only edge pixels change
        assert (diff[inside] == 0).all()


def test_rim_triangles_are_those_near_open_edges(bundled_model):
    """Back faces are culled except within a ring of an open edge, where they can be the nearest surface."""
    from synthface.render import rim_triangles

    tetra = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    assert not rim_triangles(tetra, 4).any()  # closed: every back face hides behind a front face
    assert rim_triangles(tetra[:3], 4).all()  # one face gone: its three edges are open
    strip = np.array([[0, 1, 2], [1, 3, 2], [2, 3, 4], [3, 5, 4], [4, 5, 6], [5, 7, 6], [6, 7, 8], [7, 9, 8]])
    assert rim_triangles(strip, 10, rings=0).all()
    rim = rim_triangles(bundled_model.triangles, bundled_model.n_vertices)
    regions = bundled_model.regions[bundled_model.triangles[rim, 0]]
    names = {SEGMENTATION_CLASSES[c] for c in np.unique(regions)}
    assert {"clothes", "eyes", "mouth"} <= names and "scalp" not in names  # the bust's cut, lash strips, mouth
    assert 0.05 < rim.mean() < 0.3


def test_the_hair_behind_a_head_is_never_shaded(bundled_model, gl_ctx):
    """The heads' depth pre-pass: the hair shell's fragments that pass the depth test (and are shaded)
    are about those the image shows as hair (×1.3: the shell's inside behind its outside), not also the
    back of the shell behind each face (×4 without the pre-pass)."""
    cfg = frontal_config(image_size=64, **{"hair.bald_prob": 0.0})
    params = sample_params(bundled_model, seed=0, indices=np.arange(8), config=cfg)
    with FaceRenderer(bundled_model, RenderSettings(64, antialias="off"), ctx=gl_ctx) as r:
        passed, draw = [], r._hair_vao.render

        def counted(*args, **kwargs) -> None:
            query = gl_ctx.query(samples=True)
            with query:
                draw(*args, **kwargs)
            passed.append(query.samples)  # (moderngl's Query has no release(): freed with the context)

        r._hair_vao.render = counted
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    hair = int((out.segmentation == SEGMENTATION_CLASSES.index("hair")).sum())
    assert hair > 8 * 100 and len(passed) == 1
    assert passed[0] <= 1.6 * hair
