"""How clean are the image's edges, and what does each anti-aliasing method cost?

Renders N samples of the bundled model with today's defaults at SIZE px with each method of
``synthface.config.ANTIALIAS`` (the ``edges`` blend, ``msaa`` with 4 samples, ``off``) and compares
each with a reference: the same samples rendered at 4 × SIZE without anti-aliasing (the intrinsics
scaled by 4, so the same scene) and averaged over 4 × 4 blocks — 16 samples per pixel. Errors are
mean absolute differences in 8-bit sRGB levels over *edge pixels* (where the reference's 16
samples see more than one segmentation class) and over all other pixels (where a method should
change nothing). Draw time per sample is measured in the same process, side by side.

    python benchmarks/bench_antialias.py [--n 64] [--size 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import print_machine

import synthface
from synthface.config import ANTIALIAS
from synthface.render import FaceRenderer, RenderSettings

SCALE = 4


def render(model, params: dict, size: int, method: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(images, segmentation, draw seconds per sample) for one method (profiled: draw = the GL work)."""
    with FaceRenderer(model, RenderSettings(size, faces_per_draw=16, antialias=method, profile=True)) as r:
        r.render({k: v[:1] for k, v in params.items()})  # warm-up: shader compilation
        r.timings.clear()
        t0 = time.perf_counter()
        out = r.render(params)
        wall = time.perf_counter() - t0
    return out.image, out.segmentation, r.timings.get("draw", wall) / len(params["pose"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args()
    print_machine()
    model = synthface.load_model()
    params = synthface.sample_params(model, seed=0, indices=range(args.n),
                                     config=synthface.SamplingConfig(image_size=args.size))
    big = dict(params, intrinsics=params["intrinsics"] * np.array([SCALE, SCALE, 1.0], np.float32)[:, None])
    fine, classes, _ = render(model, big, args.size * SCALE, "off")
    n, s = args.n, args.size
    reference = fine.reshape(n, s, SCALE, s, SCALE, 3).astype(np.float64).mean(axis=(2, 4))
    blocks = classes.reshape(n, s, SCALE, s, SCALE).swapaxes(2, 3).reshape(n, s, s, SCALE * SCALE)
    edge = (blocks != blocks[..., :1]).any(axis=-1)
    print(f"# {n} samples of the bundled model, defaults, {s} px; reference: {SCALE * SCALE} samples/pixel "
          f"({s * SCALE} px, box-filtered); edge pixels: {100 * edge.mean():.1f}% of all")
    print(f"{'method':<8} {'error on edges':>15} {'error elsewhere':>16} {'draw ms/sample':>15} {'vs off':>7}")
    rows = {}
    for method in ANTIALIAS * 2:  # twice, interleaved: the second round is timed (the first warms caches)
        image, _, seconds = render(model, params, s, method)
        err = np.abs(image.astype(np.float64) - reference).mean(axis=-1)
        rows[method] = (err[edge].mean(), err[~edge].mean(), 1000 * seconds)
    for method, (on_edges, elsewhere, ms) in rows.items():
        print(f"{method:<8} {on_edges:15.2f} {elsewhere:16.2f} {ms:15.2f} {ms / rows['off'][2]:6.2f}×")


if __name__ == "__main__":
    main()
