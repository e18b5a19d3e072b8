"""Where does FineNet's shape-from-shading loss point? Per-image depth optimisation on shard faces.

Not a network: per face, a per-pixel depth offset is optimised directly (Adam, or L-BFGS with
``--optimizer lbfgs``) under ``synthface.nets.sfs_loss`` as training calls it (the trainer's
weights and masks unless ``--weights`` / ``--margin`` / ``--albedo-tolerance``), i.e. what a FineNet
that fitted the loss perfectly would output. Albedo and lighting: ``--albedo true --light true`` —
the sample's own, drawn at the start's geometry, and its ``material``'s highlights in the loss
(``sfs_appearance="shard"``, the trainer's default on shards; the probe left the material out
until 2026-12-08, so its earlier figures on images with highlights overstate the drift);
``--albedo mean --light solved`` — the model's mean albedo
(``synthface.feedback.render_mean_albedo``) and lighting solved from the current depth, what photos
(and ``sfs_appearance="estimated"``) get. The defaults follow the trainer's ``sfs_appearance``.
The depth error (``synthface.evaluate.depth_error_percent``, aligned, % of the face's depth
range) is measured at the start and after ``--steps`` steps, from three starts:

* **truth** — the ground-truth depth: how far the loss's optimum lies from the truth;
* **mean face, true pose** — the mean shape at the sample's pose: only the shape is wrong;
* **CoarseNet** (``--checkpoint``) — the start FineNet is actually given.

Each start is run twice: the loss over the start's own mask (as in training), and over its
intersection with the ground-truth mask (an oracle that drops the pixels the start covers but the
image shows as background; pixels it drops keep the start's depth). ``Δ²`` is the mean squared
Laplacian of the change (mm²/pixel⁴): large values mean a pixel-by-pixel oscillation, which
central-difference normals do not see.

    python benchmarks/sfs_probe.py recipe/data --checkpoint recipe/coarse/checkpoints/latest.pt

The data must be of the bundled model (as the recipe's is).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import print_machine

import synthface
from synthface.data import ShardDataset
from synthface.evaluate import depth_error_percent
from synthface.feedback import render_mean_albedo
from synthface.nets import sfs_loss
from synthface.nets.fine import normalize_depth
from synthface.nets.rendering_layer import laplacian, laplacian_mask, masked_mean
from synthface.predict import Predictor, load_checkpoint, mean_face_prediction
from synthface.render import FaceRenderer, RenderSettings
from synthface.shading import srgb_to_linear
from synthface.train import TrainConfig

FIELDS = ("image", "depth", "mask", "identity", "expression", "albedo", "pose", "light", "material", "intrinsics")


def load(data: Path, n: int, split: str) -> dict[str, torch.Tensor]:
    ds = ShardDataset([data], split=split, fields=FIELDS, normalize=None)
    rows = [ds[i] for i in range(min(n, len(ds)))]
    return {k: torch.stack([torch.as_tensor(r[k]) for r in rows]) for k in FIELDS}


def optimise(start: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, k: torch.Tensor, rho: torch.Tensor,
             options: dict, steps: int, lr: float, light: torch.Tensor | None = None,
             method: str = "adam", material: torch.Tensor | None = None) -> torch.Tensor:
    """Depth after ``steps`` steps on the SfS loss (``options``: its keyword arguments, as
    ``TrainConfig.sfs_options``) over ``mask`` (pixels off it keep the start's depth); the offset
    is in pixel footprints, as FineNet's residual.

    ``adam``: what training does to a network's weights, here applied per pixel — Adam moves every
    pixel by about ``lr`` per step whatever its gradient's size, so directions the loss barely sees
    move as fast as the rest. ``lbfgs``: L-BFGS with a strong-Wolfe line search and ``steps``
    iterations, i.e. (close to) the loss's own minimum near the start.
    """
    _, _, footprint = normalize_depth(start, k, mask)
    offset = torch.zeros_like(start, requires_grad=True)

    def loss() -> torch.Tensor:
        return sfs_loss(start + mask * footprint * offset, start, image, k, mask, rho, **options, light=light,
                        material=material)[0]

    if method == "lbfgs":
        opt = torch.optim.LBFGS([offset], max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            value = 1e4 * loss()  # the loss is ~1e-4: scaled so L-BFGS's default tolerances do not stop it at once
            value.backward()
            return value

        opt.step(closure)
    else:
        opt = torch.optim.Adam([offset], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss().backward()
            opt.step()
    return (start + mask * footprint * offset).detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--checkpoint", type=Path, help="a coarse (or fine) checkpoint: adds the CoarseNet start")
    ap.add_argument("--n", type=int, default=32, help="faces (the first of the split)")
    ap.add_argument("--split", default="val", choices=("train", "val", "all"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.05, help="Adam's step (pixel footprints)")
    ap.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam",
                    help="adam: per-pixel Adam steps; lbfgs: the loss's minimum near the start (see optimise)")
    trainer = TrainConfig()
    ap.add_argument("--weights", type=float, nargs=3, metavar=("SH", "F", "SM"), default=trainer.sfs_weights,
                    help="(λ_sh, λ_f, λ_sm) of sfs_loss; default: the trainer's")
    ap.add_argument("--margin", type=int, default=trainer.sfs_margin,
                    help="silhouette pixels left out of the shading term; default: the trainer's")
    ap.add_argument("--albedo-tolerance", type=float, default=trainer.sfs_albedo_tolerance,
                    help="albedo-edge pixels left out of the shading term (0: keep); default: the trainer's")
    own = trainer.sfs_appearance == "shard"
    ap.add_argument("--albedo", choices=("mean", "true"), default="true" if own else "mean",
                    help="ρ: the model's mean albedo or the sample's own; default: as the trainer on shards")
    ap.add_argument("--light", choices=("solved", "true"), default="true" if own else "solved",
                    help="lighting: solved from the current depth or the sample's own; default: as the trainer")
    args = ap.parse_args()
    torch.set_num_threads(1)  # per-image work is small; more threads only contend with other jobs
    print_machine()
    b = load(args.data, args.n, args.split)
    model = synthface.load_model()
    size = b["image"].shape[-1]
    renderer = FaceRenderer(model, RenderSettings(image_size=size))
    k_np = b["intrinsics"].numpy()
    k = b["intrinsics"].float()
    gt, gt_mask = b["depth"][:, 0].numpy(), b["mask"][:, 0].numpy()
    image = srgb_to_linear(b["image"].float())

    starts: dict[str, tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]] = {}
    truth = {n: b[n].numpy() for n in ("identity", "expression", "pose")}
    starts["truth"] = (b["depth"].float(), b["mask"].float(), truth)
    mean = mean_face_prediction(renderer, truth["pose"], k_np)
    starts["mean face, true pose"] = (torch.from_numpy(mean.coarse_depth)[:, None],
                                      torch.from_numpy(mean.mask)[:, None].float(), mean.params)
    if args.checkpoint is not None:
        with Predictor(load_checkpoint(args.checkpoint), model) as predictor:
            pred = predictor.predict(b["image"].float(), k_np)
        starts["CoarseNet"] = (torch.from_numpy(pred.coarse_depth)[:, None],
                               torch.from_numpy(pred.mask)[:, None].float(), pred.params)

    def error(depth: torch.Tensor) -> float:
        return float(np.nanmean(depth_error_percent(depth[:, 0].numpy(), gt, gt_mask).percent))

    options = TrainConfig(sfs_weights=tuple(args.weights), sfs_margin=args.margin,
                          sfs_albedo_tolerance=args.albedo_tolerance).sfs_options
    print(f"\n{len(k)} faces of {args.data} ({args.split}), {size} px; {args.steps} {args.optimizer} steps, "
          f"lr {args.lr}, weights {tuple(args.weights)}, margin {args.margin}, albedo tolerance "
          f"{args.albedo_tolerance}; albedo {args.albedo}, light {args.light}")
    print(f"{'start':<22} {'loss over':<22} {'error before':>12} {'after':>7} {'rms change':>11} {'Δ²':>8}")
    look = {"albedo": b["albedo"].numpy()} if args.albedo == "true" else {}  # replaces the mean albedo
    light = b["light"].float() if args.light == "true" else None
    material = b["material"].float() if args.light == "true" else None  # as training: the highlights with the light
    for name, (depth, mask, params) in starts.items():
        _, rho = render_mean_albedo(renderer, {**params, **look}, k_np)
        variants = [("its mask", mask)]
        if name != "truth":  # the truth's mask is the truth mask
            variants.append(("∩ truth mask (oracle)", mask * b["mask"].float()))
        for label, loss_mask in variants:
            t = time.perf_counter()
            after = optimise(depth, loss_mask, image, k, rho, options, args.steps, args.lr, light, args.optimizer,
                             material)
            change = after - depth
            rms = masked_mean(change**2, mask).sqrt().item()
            wiggle = masked_mean(laplacian(change, mask) ** 2, laplacian_mask(mask)).item()
            print(f"{name:<22} {label:<22} {error(depth):>11.2f}% {error(after):>6.2f}% {rms:>8.2f} mm "
                  f"{wiggle:>8.2f}   ({time.perf_counter() - t:.0f} s)", flush=True)
    renderer.release()


if __name__ == "__main__":
    main()
