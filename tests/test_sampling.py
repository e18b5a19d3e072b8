"""Sampler: per-sample seeding, layout, distributions, framing."""

from __future__ import annotations

import numpy as np
import pytest

from synthface import camera_vertices, param_layout, project, sample_params
from synthface.config import load_config
from synthface.errors import ConfigError
from synthface.params import BACKGROUND, BACKGROUND_SOURCES, CLOTHES, EYES, MATERIAL, SHAPE
from synthface.sampling import EYE_COLOURS, ParameterSampler, typical_eyes
from synthface.shading import directional_light


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("model_name", ["sphere_model", "blend_model"])
def test_any_split_of_indices_gives_identical_samples(model_name, request):
    model = request.getfixturevalue(model_name)
    whole = sample_params(model, seed=7, indices=range(40))
    rng = np.random.default_rng(0)
    perm = rng.permutation(40)
    parts = [sample_params(model, seed=7, indices=perm[i:j]) for i, j in [(0, 1), (1, 13), (13, 40)]]
    joined = {k: np.concatenate([p[k] for p in parts]) for k in whole}
    order = np.argsort(joined["index"])
    _equal(whole, {k: v[order] for k, v in joined.items()})


def test_seed_changes_samples_and_same_seed_repeats(sphere_model):
    a = sample_params(sphere_model, seed=1, indices=range(5))
    b = sample_params(sphere_model, seed=1, indices=range(5))
    c = sample_params(sphere_model, seed=2, indices=range(5))
    _equal(a, b)
    assert not np.allclose(a["identity"], c["identity"])
    assert not np.allclose(a["identity"][0], a["identity"][1])  # samples differ from each other


def test_keys_shapes_and_dtypes_follow_the_layout(blend_model):
    params = sample_params(blend_model, seed=0, indices=[3, 9, 4])
    layout = param_layout(blend_model)
    assert list(params) == list(layout)
    for key, fld in layout.items():
        assert params[key].shape == (3, *fld.shape), key
        assert params[key].dtype == fld.dtype, key
    np.testing.assert_array_equal(params["index"], [3, 9, 4])


def test_distributions_follow_the_config(sphere_model, blend_model):
    cfg = load_config(overrides={"identity.std": 0.5, "pose.yaw_deg": [-10, 20],
                                 "expression.neutral_prob": 0.0})
    p = sample_params(sphere_model, seed=3, indices=range(3000), config=cfg)
    assert abs(p["identity"].mean()) < 0.03
    assert p["identity"].std() == pytest.approx(0.5, rel=0.05)
    assert p["expression"].std() == pytest.approx(1.0, rel=0.05)
    yaw = np.degrees(p["pose"][:, 0])
    assert yaw.min() >= -10 and yaw.max() <= 20 and yaw.min() < -9 and yaw.max() > 19
    q = sample_params(blend_model, seed=3, indices=range(3000), config=cfg)
    w = q["expression"]
    assert w.min() >= 0 and w.max() <= 1
    assert (w > 0).mean() == pytest.approx(cfg.expression.active_prob, abs=0.02)  # sparse
    neutral = sample_params(blend_model, seed=3, indices=range(500),
                            config=load_config(overrides={"expression.neutral_prob": 1.0}))
    assert not neutral["expression"].any()


def test_clip_bounds_coefficients(sphere_model):
    cfg = load_config(overrides={"identity.std": 3.0, "identity.clip": 1.5})
    p = sample_params(sphere_model, seed=0, indices=range(500), config=cfg)
    assert np.abs(p["identity"]).max() == pytest.approx(1.5)


def test_face_is_framed_at_the_image_centre(sphere_model):
    cfg = load_config(overrides={"image_size": 64, "camera.center_jitter": 0.0,
                                 "camera.face_fraction": [0.5, 0.5], "pose.yaw_deg": [0, 0],
                                 "pose.pitch_deg": [0, 0], "pose.roll_deg": [0, 0], "identity.clip": 0.0,
                                 "expression.clip": 0.0})
    p = sample_params(sphere_model, seed=0, indices=range(6), config=cfg)
    verts = camera_vertices(sphere_model, p)
    uv = project(verts, p["intrinsics"])
    centre = (uv.max(axis=1) + uv.min(axis=1)) / 2
    np.testing.assert_allclose(centre, 32.0, atol=0.05)
    width = uv[:, :, 0].max(axis=1) - uv[:, :, 0].min(axis=1)
    # The sphere's silhouette at finite distance is slightly wider than its extent at the centre plane.
    assert np.all((width > 0.5 * 64 * 0.98) & (width < 0.5 * 64 * 1.15))


def test_light_is_ambient_when_strengths_are_zero(sphere_model):
    cfg = load_config(overrides={"light.ambient": [0.7, 0.7], "light.directional": [0, 0],
                                 "light.second_order": 0.0, "light.tint": 0.0})
    light = sample_params(sphere_model, seed=0, indices=range(4), config=cfg)["light"]
    expect = np.zeros((4, 9, 3), np.float32)
    expect[:, 0, :] = 0.7
    np.testing.assert_allclose(light, expect, atol=1e-6)


def test_key_light_comes_from_above_and_in_front_within_its_ranges(sphere_model):
    cfg = load_config(overrides={"light.above_prob": 1.0, "light.key_azimuth_deg": [-30, 50],
                                 "light.key_elevation_deg": [20, 40], "light.tint": 0.0,
                                 "light.directional": [0.5, 1.0]})
    d = directional_light(sample_params(sphere_model, seed=3, indices=range(400), config=cfg)["light"])[0]
    azimuth, elevation = np.degrees(np.arctan2(d[:, 0], -d[:, 2])), np.degrees(np.arcsin(-d[:, 1]))
    assert azimuth.min() >= -30 - 1e-3 and azimuth.max() <= 50 + 1e-3 and np.ptp(azimuth) > 70
    assert elevation.min() >= 20 - 1e-3 and elevation.max() <= 40 + 1e-3 and np.ptp(elevation) > 17
    anywhere = load_config(overrides={"light.above_prob": 0.0, "light.tint": 0.0, "light.directional": [0.5, 1.0]})
    d = directional_light(sample_params(sphere_model, seed=3, indices=range(400), config=anywhere)["light"])[0]
    assert (d[:, 2] <= 0).all() and 0.3 < (d[:, 1] > 0).mean() < 0.7  # the camera's hemisphere, below too


def test_background_modes(sphere_model):
    colour = slice(BACKGROUND["r0"], BACKGROUND["b0"] + 1)
    solid = load_config(overrides={"background.mode": "solid", "background.colour": [0.1, 0.2, 0.3]})
    p = sample_params(sphere_model, seed=0, indices=range(3), config=solid)
    np.testing.assert_allclose(p["background"][:, colour], [[0.1, 0.2, 0.3]] * 3, atol=1e-7)
    assert (p["background"][:, BACKGROUND["source"]] == BACKGROUND_SOURCES.index("solid")).all()
    assert (p["background_shapes"] == 0).all() and (p["background_sha256"] == b"").all()
    rnd = load_config(overrides={"background.mode": "random", "background.brightness": [0.4, 0.6]})
    bg = sample_params(sphere_model, seed=0, indices=range(200), config=rnd)["background"][:, colour]
    assert bg.min() >= 0.4 and bg.max() <= 0.6 and bg.std() > 0.03
    proc = load_config(overrides={"background.shapes": 5, "background.blur": [1.0, 2.0]})
    p = sample_params(sphere_model, seed=0, indices=range(200), config=proc)
    bg, shapes = p["background"], p["background_shapes"]
    assert (bg[:, BACKGROUND["source"]] == BACKGROUND_SOURCES.index("procedural")).all()
    colours = bg[:, BACKGROUND["r0"]:BACKGROUND["b2"] + 1]
    assert colours.min() >= 0.0 and colours.max() <= 0.8  # the default brightness range
    assert 1.0 <= bg[:, BACKGROUND["blur"]].min() and bg[:, BACKGROUND["blur"]].max() <= 2.0
    used = (shapes[..., SHAPE["kind"]] > 0).sum(axis=1)
    assert used.max() == 5 and used.min() == 0 and (shapes[:, 5:] == 0).all()
    # Every draw is recorded: the same (seed, index) gives the same scene, another index another one.
    again = sample_params(sphere_model, seed=0, indices=[7, 3], config=proc)
    np.testing.assert_array_equal(again["background"], bg[[7, 3]])
    np.testing.assert_array_equal(again["background_shapes"], shapes[[7, 3]])
    assert not np.array_equal(bg[3], bg[7])


def test_material_ranges(sphere_model):
    cfg = load_config(overrides={"material.specular": [0.1, 0.2], "material.shininess": [10, 40],
                                 "material.occlusion": [0.5, 0.5]})
    m = sample_params(sphere_model, seed=1, indices=range(300), config=cfg)["material"]
    specular, shininess, occlusion = (m[:, MATERIAL[k]] for k in ("specular", "shininess", "occlusion"))
    assert 0.1 <= specular.min() and specular.max() <= 0.2 and specular.std() > 0.02
    assert 10 <= shininess.min() and shininess.max() <= 40 + 1e-4
    assert np.median(shininess) < 25  # log-uniform: the geometric mean 20, not the midpoint 25
    np.testing.assert_allclose(occlusion, 0.5)


def test_clothes_follow_the_config(sphere_model):
    """Coverage, neckline, V necks and patterns by their probabilities and ranges; colours mostly muted;
    a config whose pattern probabilities are all zero is refused."""
    cfg = load_config(overrides={"clothes.bare_prob": 0.2, "clothes.neckline_mm": [5, 25],
                                 "clothes.v_neck_prob": 0.5, "clothes.pattern_probs": [0.0, 1.0, 1.0, 0.0]})
    c = sample_params(sphere_model, seed=2, indices=range(600), config=cfg)["clothes"]
    assert 0.15 < 1 - c[:, CLOTHES["coverage"]].mean() < 0.25
    assert 5 <= c[:, CLOTHES["neckline_mm"]].min() and c[:, CLOTHES["neckline_mm"]].max() <= 25
    v = c[:, CLOTHES["v_neck_mm"]]
    assert 0.4 < (v > 0).mean() < 0.6 and v[v > 0].min() >= 20 and v.max() <= 90
    assert set(np.unique(c[:, CLOTHES["pattern"]])) == {1.0, 2.0}  # stripes and checks only
    rgb = c[:, CLOTHES["r"]:CLOTHES["b"] + 1]
    assert 0 <= rgb.min() and rgb.max() <= 1
    spread = (rgb.max(axis=1) - rgb.min(axis=1)) / np.maximum(rgb.max(axis=1), 1e-6)
    assert np.median(spread) < 0.5 and spread.max() > 0.7  # mostly muted, some vivid
    with pytest.raises(ConfigError, match="pattern_probs"):
        load_config(overrides={"clothes.pattern_probs": [0, 0, 0, 0]})


def test_eyes_follow_the_config(sphere_model):
    """Natural iris colours come in the palette's shares (brown, hazel, green: red over blue), pupil and
    fibres within their ranges; 'any' draws every hue; the typical eye is brown."""
    e = sample_params(sphere_model, seed=4, indices=range(800))["eyes"]
    rgb = e[:, EYES["r"]:EYES["b"] + 1]
    brownish = rgb[:, 0] > rgb[:, 2]
    share = sum(w for name, (_, w) in EYE_COLOURS.items() if name not in ("blue", "grey"))
    assert abs(brownish.mean() - share / sum(w for _, w in EYE_COLOURS.values())) < 0.05
    assert 0.0 <= rgb.min() and rgb.max() < 0.45
    assert 0.3 <= e[:, EYES["pupil"]].min() and e[:, EYES["pupil"]].max() <= 0.5
    cfg = load_config(overrides={"eyes.colours": "any", "eyes.pupil": [0.2, 0.25], "eyes.fibres": [0.0, 0.0]})
    f = sample_params(sphere_model, seed=4, indices=range(800), config=cfg)["eyes"]
    assert (f[:, EYES["b"]] > f[:, EYES["r"]]).mean() > 0.4 and (f[:, EYES["fibres"]] == 0).all()
    assert 0.2 <= f[:, EYES["pupil"]].min() and f[:, EYES["pupil"]].max() <= 0.25
    typical = typical_eyes()
    assert typical[EYES["r"]] > typical[EYES["b"]] and typical[EYES["pupil"]] == pytest.approx(0.4)


def test_palette_colours_vary_along_the_warm_line_not_into_magenta(sphere_model):
    """Natural hair colours vary redder ↔ bluer by up to ±7.5 % but greener ↔ more magenta by at most
    ±2.5 %: grey and white hair stay grey (equal per-channel jitter once turned them lilac)."""
    from synthface.params import HAIR

    h = sample_params(sphere_model, seed=6, indices=range(800))["hair"]
    rgb = h[:, HAIR["r"]:HAIR["b"] + 1].astype(float)
    light = rgb.mean(axis=1) > 0.15  # the grey and white entries (black is dark and a little warm)
    grey = rgb[light & np.isclose(rgb / rgb.mean(axis=1, keepdims=True), 1.0, atol=0.1).all(axis=1)]
    assert len(grey) > 20
    warm, magenta = np.log(grey[:, 0] / grey[:, 2]), np.log(grey[:, 0] * grey[:, 2] / grey[:, 1] ** 2)
    assert np.abs(magenta).max() < 0.12 and np.abs(warm).max() > 0.1  # per-channel ±7.5 % reached 0.3


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, True, "3"])
def test_bad_seeds_are_rejected(sphere_model, bad):
    with pytest.raises(ConfigError, match="seed"):
        ParameterSampler(sphere_model, seed=bad)


def test_bad_indices_are_rejected(sphere_model):
    with pytest.raises(ConfigError, match="indices"):
        sample_params(sphere_model, indices=[-1, 2])
    with pytest.raises(ConfigError, match="indices"):
        sample_params(sphere_model, indices=np.zeros((2, 2), int))


def test_model_blendshape_caps_hold(bundled_model):
    names = bundled_model.expression_names
    assert bundled_model.metadata["blendshape_caps"] == {"mouthClose": "jawOpen"}
    cfg = load_config(overrides={"expression.active_prob": 0.5, "expression.neutral_prob": 0.0})
    w = sample_params(bundled_model, seed=0, indices=range(400), config=cfg)["expression"]
    close, jaw = w[:, names.index("mouthClose")], w[:, names.index("jawOpen")]
    assert (close <= jaw).all() and (close > 0).mean() > 0.1  # capped, not switched off


@pytest.mark.parametrize("indices", [[2**63], [2**64], [-1], [[0, 1]], [0.5]])
def test_indices_outside_int64_or_not_integers_are_a_clear_error(sphere_model, indices):
    """Sample indices are int64 seeds: anything else is a ConfigError naming the rule, not numpy's error."""
    with pytest.raises(ConfigError, match=r"integers in \[0, 2\*\*63\)"):
        sample_params(sphere_model, seed=0, indices=indices)
