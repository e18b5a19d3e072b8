"""Would a face detector trained on real photos take the renders for photos of faces?

OpenCV's Haar frontal-face cascade (trained on real photos; ``synthface reconstruct``'s fallback detector)
runs on N renders of the bundled model at 256 px with |yaw| ≤ 25°, |pitch| ≤ 15° — poses at which it
finds nearly every face in real photos. A render counts as found when a detected box overlaps the
face's landmark box (IoU ≥ 0.3); boxes elsewhere (on background clutter) are counted apart. The last
column does the same with dlib's HOG face detector (``reconstruct``'s default, when installed).

Rows: format 1's look on today's head model (flat random-colour background, no anti-aliasing,
Lambertian only, format 1's light strengths — now as a clamped-cosine key: the first-order lobe of formats
1–4 is gone —, no hair, brows, stubble or clothes drawn), today's defaults, and the
defaults with one feature off at a time. Every row renders
the same samples (seed, indices): only the named setting differs.

    python benchmarks/bench_realism.py [--n 300] [--size 256] [--seed 0] [--only TEXT] [--save-grid DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import print_machine
from PIL import Image

import synthface
from synthface.errors import ReconstructError
from synthface.photo import box_iou, detect_face, detect_faces, resolve_detector
from synthface.render import FaceRenderer, RenderSettings

POSE = {"pose.yaw_deg": [-25, 25], "pose.pitch_deg": [-15, 15]}
NO_HAIR = {"hair.bald_prob": 1.0}
NO_FACIAL_HAIR = {"facial_hair.brow_density": [0.0, 0.0], "facial_hair.beard_prob": 0.0}
NO_CLOTHES = {"clothes.bare_prob": 1.0}
OLD_LOOK = {"background.mode": "random", "background.brightness": [0.0, 1.0], "material.specular": [0.0, 0.0],
            "material.occlusion": [0.0, 0.0], "light.directional": [0.0, 0.6], "light.above_prob": 0.0,
            "antialias": "off", **NO_HAIR, **NO_FACIAL_HAIR, **NO_CLOTHES}
VARIANTS: dict[str, dict] = {  # name → config overrides
    "format 1 look (flat background, aliased, Lambertian, bald)": OLD_LOOK,
    "defaults": {},
    "  without procedural background (flat colour)": {"background.mode": "random"},
    "  without clutter shapes": {"background.shapes": 0},
    "  without anti-aliasing": {"antialias": "off"},
    "  with MSAA (4 samples) instead of the edge blend": {"antialias": "msaa"},
    "  without specular": {"material.specular": [0.0, 0.0]},
    "  without ambient occlusion": {"material.occlusion": [0.0, 0.0]},
    "  without cast shadows": {"light.shadow": [0.0, 0.0]},
    "  with a softer key light (share 0.2–0.5 of the level, not 0.45–0.85)": {"light.directional": [0.2, 0.5]},
    "  with light from any side, not mostly a key light above": {"light.above_prob": 0.0},
    "  with the roll range of 2026-12-03 (±20°, not ±15°)": {"pose.roll_deg": [-20.0, 20.0]},
    "  without hair (bald)": NO_HAIR,
    "  without brows and stubble": NO_FACIAL_HAIR,
    "  without clothes (bare shoulders)": NO_CLOTHES,
}
ROLL_SPLIT_DEG = 10.0
"""The table also gives the rate over samples with |roll| <= this (the default roll range is ±15°, and
the frontal cascade was trained on upright faces)."""


def detection_rate(model, overrides: dict, n: int, size: int, grid: Path | None, name: str,
                   seed: int = 0) -> tuple[float, float, float, float, float | None]:
    """(fraction Haar found on the face, the same over |roll| <= ROLL_SPLIT_DEG, fraction with a Haar box
    elsewhere only, seconds per render, fraction dlib found — None when dlib is not installed)."""
    cfg = synthface.load_config(overrides={"image_size": size, **POSE, **overrides})
    params = synthface.sample_params(model, seed=seed, indices=range(n), config=cfg)
    settings = RenderSettings(size, faces_per_draw=16, antialias=cfg.antialias, msaa_samples=cfg.msaa_samples)
    with FaceRenderer(model, settings) as renderer:
        t0 = time.perf_counter()
        out = renderer.render(params)
        seconds = (time.perf_counter() - t0) / n
    found = np.zeros(n, bool)
    found_dlib = np.zeros(n, bool) if resolve_detector() == "dlib" else None
    elsewhere = 0
    for i, (image, xy) in enumerate(zip(out.image, out.landmarks_xy, strict=True)):
        face = (xy[:, 0].min(), xy[:, 1].min(), np.ptp(xy[:, 0]), np.ptp(xy[:, 1]))
        if found_dlib is not None:
            boxes = detect_faces(image, "dlib")
            found_dlib[i] = bool(boxes) and box_iou(boxes[0], face) >= 0.3
        try:
            box = detect_face(image, "haar")
        except ReconstructError:
            continue
        if box_iou(box, face) >= 0.3:
            found[i] = True
        else:
            elsewhere += 1
    if grid is not None:
        tiles = out.image[:16].reshape(4, 4, size, size, 3).swapaxes(1, 2).reshape(4 * size, 4 * size, 3)
        Image.fromarray(tiles).save(grid / (name.strip().split(" (")[0].replace(" ", "_") + ".png"))
    upright = np.abs(np.degrees(params["pose"][:, 2])) <= ROLL_SPLIT_DEG
    return found.mean(), found[upright].mean(), elsewhere / n, seconds, \
        None if found_dlib is None else found_dlib.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="which renders (default 0, the README's table)")
    parser.add_argument("--save-grid", type=Path, default=None, help="write a 4×4 contact sheet per row here")
    parser.add_argument("--only", action="append", default=None, metavar="TEXT",
                        help="run only the rows whose name contains TEXT (repeatable; default: every row)")
    args = parser.parse_args()
    if args.save_grid is not None:
        args.save_grid.mkdir(parents=True, exist_ok=True)
    print_machine()
    model = synthface.load_model()
    print(f"# {args.n} renders of the bundled model at {args.size} px, |yaw| <= 25°, |pitch| <= 15°, seed {args.seed}")
    print(f"{'variant':<60} {'found':>7} {f'|roll|<={ROLL_SPLIT_DEG:.0f}':>10} {'elsewhere':>10} {'ms/render':>10}"
          f" {'dlib found':>11}")
    for name, overrides in VARIANTS.items():
        if args.only and not any(text in name for text in args.only):
            continue
        found, upright, elsewhere, seconds, dlib = detection_rate(model, overrides, args.n, args.size, args.save_grid,
                                                                  name, args.seed)
        print(f"{name:<60} {100 * found:6.1f}% {100 * upright:9.1f}% {100 * elsewhere:9.1f}% {1000 * seconds:10.2f}"
              f" {'-' if dlib is None else f'{100 * dlib:.1f}%':>11}", flush=True)


if __name__ == "__main__":
    main()
