"""Does a render pushed through the photo path reach the networks as the generator framed it?

Part 1 (always): where each face detector (dlib's HOG detector when installed, OpenCV's Haar cascade)
and the box of the 68 landmarks put their boxes on the face frame of ``synthface.framing`` — the frame
centre's offset from the box centre and the frame's extent, in box sides — over N renders of the
bundled model at 256 px (|yaw| <= 25°, |pitch| <= 15°, the generator's defaults otherwise). The
medians are ``framing.DETECTOR_FRAMES``; the table also shows where the crops built from the
detectors' boxes put the true frame (centre off by, extent / side), against the generator's range.

Part 2 (``--checkpoint``): landmark error of the checkpoint's reconstruction on the same samples fed two
ways: rendered at the networks' image size with their own framing (what training and ``evaluate`` see),
and rendered at 256 px, saved as PNG, then read, detected and cropped as ``reconstruct`` does a photo.
The error is the mean distance of the 68 projected landmarks from the truth over the outer-eye-corner
distance (ibug 36–45), per sample; medians and means are printed for both paths.

    python benchmarks/bench_framing.py [--n 300] [--checkpoint runs/fine/checkpoints/latest.pt --look recipe]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import cv2
import numpy as np
from common import print_machine
from PIL import Image

import synthface
from synthface.errors import ReconstructError
from synthface.evaluate_photos import nme as nme68_51
from synthface.framing import DETECTOR_FRAMES, crop_window, face_frame, image_frame
from synthface.photo import crop_square, detect_face, read_image, resolve_detector
from synthface.render import FaceRenderer, RenderSettings

POSE = {"pose.yaw_deg": [-25, 25], "pose.pitch_deg": [-15, 15]}
LOOKS = {  # --look: the generator settings of the renders (the checkpoint's training data's look)
    "defaults": {},
    "recipe": {"background.mode": "random", "antialias": "off", "material.specular": [0.0, 0.0],
               "material.occlusion": [0.0, 0.0], "light.directional": [0.0, 0.6], "background.brightness": [0.0, 1.0]},
}


def nme(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(B,) mean landmark distance over all 68 points, by the truth's outer-eye-corner distance."""
    return nme68_51(pred, truth)[0]


def render(model, overrides: dict, n: int, size: int, seed: int = 0):
    cfg = synthface.load_config(overrides={"image_size": size, **POSE, **overrides})
    params = synthface.sample_params(model, seed=seed, indices=range(n), config=cfg)
    settings = RenderSettings(size, faces_per_draw=16, antialias=cfg.antialias, msaa_samples=cfg.msaa_samples)
    with FaceRenderer(model, settings) as renderer:
        return params, renderer.render(params), cfg


def as_photo(image: np.ndarray, folder: Path, i: int) -> np.ndarray:
    """The render written as a PNG and read back through the photo reader."""
    path = folder / f"render-{i:04d}.png"
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return read_image(path)


def frame_constants(name: str, boxes: dict[int, tuple[float, ...]], centre: np.ndarray, extent: np.ndarray) -> None:
    """Print the medians (and IQRs) of where ``boxes`` (sample → x, y, w, h) sit on the true frames."""
    rows = []
    for i, (x, y, w, h) in boxes.items():
        s = max(w, h)
        off = (centre[i] - [x + w / 2, y + h / 2]) / s
        if abs(off).max() <= 0.5:  # else a box elsewhere (not this face)
            rows.append((off[0], off[1], extent[i] / s))
    r = np.array(rows)
    print(f"# {name}: boxes on {len(r)} of {len(centre)} renders")
    for label, col in zip(("dx (frame centre - box centre) / side", "dy", "scale (frame extent / side)"), r.T,
                          strict=True):
        q = np.percentile(col, [25, 50, 75])
        print(f"{label:<40} median {q[1]:+.4f}   IQR [{q[0]:+.4f}, {q[2]:+.4f}]")


def detector_names() -> list[str]:
    """The detectors installed here: Haar always, dlib when its extra is."""
    return ["haar"] + (["dlib"] if resolve_detector() == "dlib" else [])


def calibrate(model, params, out, size: int) -> None:
    frame = face_frame(model)
    centre, extent = image_frame(frame, params["pose"], params["intrinsics"])
    found = {}
    for detector in detector_names():
        boxes = {}
        for i, image in enumerate(out.image):
            try:
                boxes[i] = detect_face(image, detector)
            except ReconstructError:
                continue
        frame_constants(f"{detector} detector at {size} px", boxes, centre, extent)
        found[detector] = boxes
    xy = out.landmarks_xy
    frame_constants("box of the 68 landmarks", {i: (*xy[i].min(0), *np.ptp(xy[i], axis=0)) for i in range(len(xy))},
                    centre, extent)
    fraction = 0.75
    for detector, boxes in found.items():
        d = DETECTOR_FRAMES[detector]
        print(f"# crops from DETECTOR_FRAMES[{detector!r}] = {d} at fraction {fraction}: where the true frame lands")
        errs, fracs = [], []
        for i, box in boxes.items():
            x0, y0, side = crop_window(box, fraction, detector)
            c = (centre[i] - [x0 + side / 2, y0 + side / 2]) / side
            if abs(c).max() > 0.5:
                continue
            errs.append(np.abs(c).max())
            fracs.append(extent[i] / side)
        errs, fracs = np.array(errs), np.array(fracs)
        print(f"frame centre off the crop centre (fraction of side): median {np.median(errs):.3f}, "
              f"90th pct {np.percentile(errs, 90):.3f}  (the generator: up to 0.05)")
        print(f"frame extent / side: median {np.median(fracs):.3f}, 5–95 pct [{np.percentile(fracs, 5):.3f}, "
              f"{np.percentile(fracs, 95):.3f}]  (the generator: 0.6–0.9)")


def compare(model, checkpoint: Path, overrides: dict, n: int, photo_size: int, folder: Path) -> None:
    from synthface.framing import training_fraction
    from synthface.predict import Predictor, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    size = ckpt.image_size
    fraction = training_fraction(ckpt.data)
    own_params, own, _ = render(model, overrides, n, size)
    big_params, big, _ = render(model, overrides, n, photo_size)
    true_fov = np.degrees(2 * np.arctan(photo_size / 2 / big_params["intrinsics"][:, 0, 0]))
    with Predictor(ckpt, model) as predictor:
        def run(images: np.ndarray, k: np.ndarray):
            return predictor.predict(images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0, k)

        rows = {f"own framing, rendered at {size} px": nme(run(own.image, own_params["intrinsics"]).landmarks_xy,
                                                         own.landmarks_xy)}
        # The same framing, but the {photo_size} px render area-resized to {size} px (as a photo crop is).
        scale = size / photo_size
        small = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in big.image])
        k_small = big_params["intrinsics"] * [[scale], [scale], [1.0]]
        rows[f"own framing, {photo_size} px resized"] = nme(run(small, k_small).landmarks_xy * (1 / scale),
                                                           big.landmarks_xy)
        photos = [as_photo(big.image[i], folder, i) for i in range(n)]
        paths = {}  # name → (fov per sample, crop fraction, detector, the box's frame convention)
        for detector in detector_names():
            paths[f"photo path ({detector}), true field of view"] = (true_fov, fraction, detector, detector)
            paths[f"photo path ({detector}), assumed 50°"] = (np.full(n, 50.0), fraction, detector, detector)
        paths["before: 1.8 × Haar's box, true fov"] = (true_fov, 1 / 1.8, "haar", "frame")
        errors: dict[str, dict[int, float]] = {}
        for name, (fov, crop_fraction, detector, convention) in paths.items():
            errors[name] = {}
            for i, photo in enumerate(photos):
                try:
                    box = detect_face(photo, detector)
                except ReconstructError:
                    continue
                crop = crop_square(photo, box, size, crop_fraction, float(fov[i]), convention)
                vertices = run(crop.image[None], crop.intrinsics[None]).vertices[0]
                xy = crop.to_photo(vertices[model.landmark_indices])
                errors[name][i] = nme(xy[None], big.landmarks_xy[i:i + 1])[0]
        for name, errs in errors.items():
            rows[f"{name} ({n - len(errs)} missed)"] = np.array(list(errs.values()))
        found = sorted(set.intersection(*(set(e) for e in errors.values())))
        for name in list(rows)[:2]:  # on the faces every photo row found
            rows[f"{name}, found by all"] = rows[name][found]
    print(f"# {checkpoint} ({size} px, crop fraction {fraction:.3f}); {n} renders, photos at {photo_size} px "
          "(a photo row leaves out the renders its detector missed)")
    print(f"{'path':<56} {'median NME':>11} {'mean NME':>9} {'samples':>8}")
    for name, err in rows.items():
        print(f"{name:<56} {np.median(err):11.4f} {err.mean():9.4f} {len(err):8d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=256, help="size of the renders the detector sees")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--look", choices=LOOKS, default="defaults", help="generator settings of the renders")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_framing"), help="where the PNGs go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print_machine()
    model = synthface.load_model()
    params, out, _ = render(model, LOOKS[args.look], args.n, args.size)
    calibrate(model, params, out, args.size)
    if args.checkpoint is not None:
        compare(model, args.checkpoint, LOOKS[args.look], args.n, args.size, args.out)


if __name__ == "__main__":
    main()
