"""Sampling configuration: frozen dataclasses, read from TOML, validated strictly.

Every field carries its bounds in its metadata, so the validator, the TOML
reader and ``--set section.key=value`` overrides share one definition. Angles
are given in degrees here (``*_deg``) for people; samples store radians.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

Range = tuple[float, float]

ANTIALIAS = ("edges", "msaa", "off")
"""How the image's edges are anti-aliased (``synthface.render``): blend across the exact buffers' edges
(one pass, cheap everywhere), a second multisampled colour pass (cheap on a GPU only), or not at all."""


def _f(default: Any, lo: float, hi: float, doc: str, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"bounds": (lo, hi), "doc": doc, "choices": choices})


@dataclass(frozen=True)
class CoefficientConfig:
    """N(0, std) coefficients, clipped to ±clip (in std units of the model)."""

    std: float = _f(1.0, 0.0, 5.0, "standard deviation, in the model's std units")
    clip: float = _f(3.0, 0.0, 10.0, "clip draws to ±clip; 0 draws all zeros")


@dataclass(frozen=True)
class ExpressionConfig:
    """PCA models: N(0, std) clipped; blendshape models: sparse weights in [0, max_weight]."""

    std: float = _f(1.0, 0.0, 5.0, "PCA expression std")
    clip: float = _f(3.0, 0.0, 10.0, "PCA expression clip")
    active_prob: float = _f(0.08, 0.0, 1.0, "blendshapes: probability that each blendshape is active")
    max_weight: float = _f(1.0, 0.0, 1.0, "blendshapes: active weights are U(0, max_weight)")
    neutral_prob: float = _f(0.1, 0.0, 1.0, "probability of a neutral expression (all zero)")


@dataclass(frozen=True)
class PoseConfig:
    """Head rotation ranges, uniform, in degrees (signs: see synthface.geometry)."""

    yaw_deg: Range = _f((-60.0, 60.0), -180.0, 180.0, "yaw range; + turns the face to image left")
    pitch_deg: Range = _f((-30.0, 30.0), -90.0, 90.0, "pitch range; + tilts the face down")
    roll_deg: Range = _f((-15.0, 15.0), -180.0, 180.0, "roll range; + turns the head clockwise in the image "
                         "(people in photos hold their heads near upright; widen it for rotation robustness)")


@dataclass(frozen=True)
class CameraConfig:
    """Pinhole camera looking at the face: distance and framing drawn per sample."""

    distance_mm: Range = _f((400.0, 1500.0), 50.0, 100000.0, "camera-to-face-centre distance")
    face_fraction: Range = _f((0.6, 0.9), 0.05, 2.0,
                              "fraction of the image width the face's extent spans (sets the focal length)")
    center_jitter: float = _f(0.05, 0.0, 0.5, "face centre offset, uniform ±, as a fraction of image size")


@dataclass(frozen=True)
class LightConfig:
    """SH lighting in camera space: a fill from all around plus one key light (a clamped cosine, as far as
    second-order SH hold it), second-order noise, tinted."""

    ambient: Range = _f((0.75, 1.25), 0.0, 10.0, "overall level: the irradiance facing the key light "
                        "(1 = albedo shown as is there)")
    directional: Range = _f((0.45, 0.85), 0.0, 1.0, "the key light's share of that level, the rest is fill "
                            "(at 90° to the key: 1 − 0.91·share; 0.85 ≈ a 4:1 key-to-side ratio)")
    above_prob: float = _f(0.9, 0.0, 1.0, "probability that the directional light is a key light from above and "
                           "in front, as in most photos (key_azimuth_deg, key_elevation_deg); else it comes from "
                           "any side of the camera's hemisphere")
    key_azimuth_deg: Range = _f((-45.0, 45.0), -90.0, 90.0, "key light: angle beside the camera, about the "
                                "vertical (+ = from the image's right), uniform")
    key_elevation_deg: Range = _f((10.0, 55.0), -90.0, 90.0, "key light: angle above the horizontal through "
                                  "the face, uniform")
    second_order: float = _f(0.1, 0.0, 2.0, "std of second-order coefficients relative to ambient")
    tint: float = _f(0.08, 0.0, 1.0, "std of the light's warm-cool colour tint (log red/blue over √2); "
                     "green-magenta and grey-level parts are a quarter of it")
    shadow: Range = _f((0.6, 1.0), 0.0, 1.0, "strength of the shadows the head and hair cast in the directional "
                       "light (0 = none, 1 = that light fully blocked; the ambient part stays)")


@dataclass(frozen=True)
class BackgroundConfig:
    """What lies behind the head: a procedural scene by default (see synthface.params.BACKGROUND_FIELDS)."""

    mode: str = _f("procedural", 0, 0, "'procedural' (gradient, fractal noise and clutter shapes), 'images' "
                   "(crops of the files in directory), 'random' (one random colour) or 'solid' (colour)",
                   choices=("procedural", "images", "random", "solid"))
    colour: tuple[float, float, float] = _f((0.0, 0.0, 0.0), 0.0, 1.0, "solid colour, linear RGB")
    brightness: Range = _f((0.0, 0.8), 0.0, 1.0, "random/procedural: per-channel colour range, linear RGB")
    shapes: int = _f(8, 0, 12, "procedural: at most this many clutter shapes (rectangles, ellipses)")
    blur: Range = _f((0.0, 3.0), 0.0, 16.0, "procedural/images: defocus of the background, pixels")
    directory: str = _f("", 0, 0, "images: folder of background images (every file must be an image)")
    crop: Range = _f((0.3, 1.0), 0.01, 1.0, "images: crop side as a fraction of the image's shorter side")
    jitter: float = _f(0.2, 0.0, 1.0, "images: brightness/contrast/saturation factors drawn in 1 ± jitter")


@dataclass(frozen=True)
class HairConfig:
    """Procedural hair on the scalp of models that have one (see synthface.params.HAIR_FIELDS)."""

    bald_prob: float = _f(0.08, 0.0, 1.0, "probability of no hair")
    hairline_mm: Range = _f((-40.0, 5.0), -60.0, 150.0, "hairline offset from the face/scalp border (- = lower)")
    recession_mm: Range = _f((0.0, 25.0), 0.0, 150.0, "extra recession at the temples")
    thickness_mm: Range = _f((3.0, 28.0), 0.0, 80.0, "hair thickness above the scalp (3 ≈ a buzz cut)")
    colours: str = _f("natural", 0, 0, "'natural' (black, browns, blond, red, grey, by how common they are) or "
                      "'any' (every colour uniformly)", choices=("natural", "any"))
    strands: Range = _f((0.15, 0.5), 0.0, 1.0, "contrast of the strand pattern")
    sheen: Range = _f((0.0, 0.25), 0.0, 2.0, "strength of the hair's highlight")


@dataclass(frozen=True)
class FacialHairConfig:
    """Procedural brows and stubble on models with regions and landmarks (synthface.params.FACIAL_HAIR_FIELDS)."""

    brow_thickness_mm: Range = _f((7.0, 13.0), 0.0, 30.0, "brow thickness at its inner end")
    brow_taper: Range = _f((0.25, 0.8), 0.0, 2.0, "outer end's thickness / inner end's")
    brow_arch_mm: Range = _f((-1.0, 4.0), -20.0, 20.0, "extra lift of the brow's apex")
    brow_lift_mm: Range = _f((-8.0, -3.0), -20.0, 20.0, "shift of the whole brow (+ = up) from the landmarks' "
                             "brow line; lower than the line, brows sit on the brow ridge as in photos "
                             "(measured: a photo-trained detector found 70 % of renders at 0 mm, 78 % here)")
    brow_length: Range = _f((0.8, 1.1), 0.0, 2.0, "brow length, fraction of the landmarks' brow")
    brow_density: Range = _f((0.55, 1.0), 0.0, 1.0, "brow density (0 = none)")
    beard_prob: float = _f(0.3, 0.0, 1.0, "probability of stubble or a beard")
    beard_density: Range = _f((0.2, 0.9), 0.0, 1.0, "stubble/beard density where drawn")
    beard_reach: Range = _f((0.4, 1.1), 0.0, 2.0, "how far up the cheeks (chin → nose-base heights)")
    darkness: Range = _f((0.45, 1.0), 0.0, 2.0, "brow/beard colour = the hair colour × this")


@dataclass(frozen=True)
class ClothesConfig:
    """Procedural clothes on the bust of models that have one (see synthface.params.CLOTHES_FIELDS)."""

    bare_prob: float = _f(0.05, 0.0, 1.0, "probability of bare shoulders (no clothes)")
    neckline_mm: Range = _f((-5.0, 40.0), -60.0, 200.0, "neckline depth below the neck's base (- = a high collar)")
    v_neck_prob: float = _f(0.25, 0.0, 1.0, "probability of a V or scoop neck")
    v_neck_mm: Range = _f((20.0, 90.0), 0.0, 300.0, "extra depth of a V neck at the front centre")
    pattern_probs: tuple[float, float, float, float] = _f((0.55, 0.2, 0.1, 0.15), 0.0, 1.0,
                                                        "probabilities of plain, stripes, checks, heather")
    pattern_mm: Range = _f((4.0, 30.0), 0.5, 500.0, "period of stripes and checks")
    folds: Range = _f((0.1, 0.45), 0.0, 1.0, "contrast of the cloth's soft folds")

    def __post_init__(self) -> None:
        if sum(self.pattern_probs) <= 0.0:
            raise ConfigError("config clothes.pattern_probs: all four are 0; give at least one a weight > 0")


@dataclass(frozen=True)
class EyesConfig:
    """The iris of models with ``iris_coordinates`` (see synthface.params.EYES_FIELDS)."""

    colours: str = _f("natural", 0, 0, "'natural' (browns, hazel, green, blue, grey, by how common they are) "
                      "or 'any' (every colour uniformly)", choices=("natural", "any"))
    pupil: Range = _f((0.3, 0.5), 0.05, 0.95, "pupil radius, fraction of the iris's")
    fibres: Range = _f((0.2, 0.6), 0.0, 1.0, "contrast of the iris's radial fibres")


@dataclass(frozen=True)
class OccluderConfig:
    """Flat shapes (cards, discs) held in front of the face; off unless ``count`` > 0."""

    count: int = _f(0, 0, 4, "at most this many occluders per sample (uniform 0..count); 0 = off")
    size: Range = _f((0.15, 0.45), 0.01, 2.0, "width and height, fractions of the image size")
    gap_mm: Range = _f((120.0, 250.0), 10.0, 10000.0, "how far in front of the face's centre they are")
    texture: Range = _f((0.0, 0.3), 0.0, 1.0, "contrast of their mottled texture")


@dataclass(frozen=True)
class MaterialConfig:
    """Skin reflectance beyond the Lambertian SH term: a specular lobe and ambient occlusion."""

    specular: Range = _f((0.0, 0.3), 0.0, 2.0, "Blinn-Phong specular strength (relative to the directional light)")
    shininess: Range = _f((8.0, 48.0), 1.0, 1000.0, "Blinn-Phong exponent (higher = smaller, sharper highlight)")
    occlusion: Range = _f((0.6, 1.0), 0.0, 1.0, "ambient-occlusion strength (0 = none, 1 = full)")


@dataclass(frozen=True)
class SamplingConfig:
    """Everything that decides a sample's parameters (seeded per sample elsewhere)."""

    image_size: int = _f(200, 16, 4096, "output image width = height, pixels")
    antialias: str = _f("edges", 0, 0, "anti-aliasing of the image's edges: edges (blend across the exact "
                        "edges, cheap), msaa (second pass with msaa_samples, for GPUs) or off; depth, mask "
                        "and landmarks are always exact at pixel centres", choices=ANTIALIAS)
    msaa_samples: int = _f(4, 2, 16, "samples per pixel when antialias = msaa")
    identity: CoefficientConfig = field(default_factory=CoefficientConfig)
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)
    albedo: CoefficientConfig = field(default_factory=CoefficientConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    light: LightConfig = field(default_factory=LightConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    occluders: OccluderConfig = field(default_factory=OccluderConfig)
    hair: HairConfig = field(default_factory=HairConfig)
    facial_hair: FacialHairConfig = field(default_factory=FacialHairConfig)
    clothes: ClothesConfig = field(default_factory=ClothesConfig)
    eyes: EyesConfig = field(default_factory=EyesConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_toml(self) -> str:
        """A complete TOML file of this config (what ``--config`` reads)."""
        lines = []
        sections = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                sections.append((f.name, value))
            else:
                lines.append(f"{f.name} = {_toml_value(value)}  # {f.metadata['doc']}")
        for name, section in sections:
            lines.append(f"\n[{name}]")
            for f in dataclasses.fields(section):
                lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}  # {f.metadata['doc']}")
        return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _check_number(name: str, value: Any, kind: type, bounds: tuple[float, float]) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config {name}: expected a number, got {value!r}; write it as e.g. 1.0")
    if kind is int and not float(value).is_integer():
        raise ConfigError(f"config {name}: expected an integer, got {value!r}; write it without a fraction")
    if not math.isfinite(value) or not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"config {name}: {value!r} is outside [{bounds[0]:g}, {bounds[1]:g}]; "
                          "choose a value in that range")
    return kind(value)


def _check_value(name: str, f: dataclasses.Field, hint: Any, value: Any) -> Any:
    bounds = f.metadata["bounds"]
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config {name}: expected a string, got {value!r}; write it in quotes")
        if f.metadata["choices"] and value not in f.metadata["choices"]:
            raise ConfigError(f"config {name}: {value!r} is not one of {', '.join(f.metadata['choices'])}; "
                              "pick one of those")
        return value
    if typing.get_origin(hint) is tuple:
        n = len(typing.get_args(hint))
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise ConfigError(f"config {name}: expected a list of {n} numbers, got {value!r}; write it as "
                              f"[{', '.join(['0.0'] * n)}]")
        out = tuple(_check_number(name, v, float, bounds) for v in value)
        if n == 2 and out[0] > out[1]:
            raise ConfigError(f"config {name}: range [{out[0]:g}, {out[1]:g}] has min > max; "
                              "give it as [min, max]")
        return out
    return _check_number(name, value, hint, bounds)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config {prefix.rstrip('.') or 'file'}: expected a table, got {data!r}; "
                          "give its keys under a [section] header")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s}; known keys: {', '.join(fields)}")
    kwargs = {}
    for key, value in data.items():
        f, hint = fields[key], hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_value(prefix + key, f, hint, value)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> SamplingConfig:
    """Validate a nested dict (as read from TOML/JSON); unknown keys and bad values raise ConfigError.

    Configs written before ``antialias`` named a method gave MSAA samples (``antialias = 4``; 1 = off):
    they read as the same rendering, so their runs resume and their files keep working."""
    samples = data.get("antialias")
    if isinstance(samples, int) and not isinstance(samples, bool):
        data = {**data, "antialias": "off"} if samples == 1 else \
            {**data, "antialias": "msaa", "msaa_samples": samples}
    return _build(SamplingConfig, data, "")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SamplingConfig:
    """Defaults, updated by a TOML file, then by ``{"section.key": value}`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}; "
                              "check the --config path") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config {p} is not valid TOML: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config {dotted}: {part} is not a section")
            node = child
        node[leaf] = value
    return config_from_dict(data)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"pose.yaw_deg=[-30, 30]"`` → ``("pose.yaw_deg", (-30, 30))``; values are TOML literals."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. pose.yaw_deg=[-30,30]")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: treat as a string (e.g. background.mode=solid)
    return key.strip(), value
