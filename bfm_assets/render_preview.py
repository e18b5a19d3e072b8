"""Draw ``bfm_assets/preview.png``: the bundled model as the generator renders it (README's picture).

Row 1: the mean face turning (yaw −60° … 60°); row 2: sampled identities (neutral); row 3: sampled
identities with sampled expressions. Every tile uses the generator's default scene (procedural
background, lighting, material), so the picture shows what `synthface generate` writes.

    PYTHONPATH=. python bfm_assets/render_preview.py [--model PATH] [--out bfm_assets/preview.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import synthface
from synthface.render import FaceRenderer, RenderSettings

SIZE, COLUMNS = 192, 6


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("preview.png"))
    args = ap.parse_args(argv)
    model = synthface.load_model(args.model)
    cfg = synthface.load_config(overrides={"image_size": SIZE, "pose.yaw_deg": [-30, 30],
                                           "pose.pitch_deg": [-10, 10], "pose.roll_deg": [-8, 8]})
    params = synthface.sample_params(model, seed=7, indices=range(3 * COLUMNS), config=cfg)
    turn = slice(0, COLUMNS)
    params["identity"][turn] = 0.0
    params["expression"][turn] = 0.0
    params["pose"][turn, :3] = np.radians(np.stack([np.linspace(-60, 60, COLUMNS),
                                                    np.zeros(COLUMNS), np.zeros(COLUMNS)], axis=1))
    params["expression"][COLUMNS:2 * COLUMNS] = 0.0
    with FaceRenderer(model, RenderSettings(SIZE, faces_per_draw=3 * COLUMNS)) as renderer:
        images = renderer.render(params).image
    grid = images.reshape(3, COLUMNS, SIZE, SIZE, 3).swapaxes(1, 2).reshape(3 * SIZE, COLUMNS * SIZE, 3)
    Image.fromarray(grid).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
