"""Trainer networks: the rendering layer against closed-form surfaces, gradients, and the nets training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthface.feedback import FeedbackRenderer, last, refine
from synthface.geometry import project
from synthface.nets import CoarseNet, FineNet, coarse_step, normalize_depth
from synthface.nets.rendering_layer import (
    albedo_flat,
    depth_to_normals,
    depth_to_points,
    erode,
    laplacian_mask,
    normal_mask,
    sfs_loss,
    shade_depth,
    solve_lighting,
    unsaturated,
)
from synthface.shading import linear_to_srgb, shade, srgb_to_linear
from synthface.targets import ParameterNormalizer

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def intrinsics(size: int, f: float = 60.0, batch: int = 1) -> torch.Tensor:
    k = torch.tensor([[f, 0.0, 0.47 * size], [0.0, 1.1 * f, 0.52 * size], [0.0, 0.0, 1.0]], dtype=F64)
    return k.expand(batch, 3, 3)


def rays(size: int, k: torch.Tensor) -> torch.Tensor:
    """(3, H, W) rays K⁻¹·(u + 0.5, v + 0.5, 1) with z = 1, so a hit at ray·t has depth t."""
    v, u = torch.meshgrid(torch.arange(size, dtype=F64) + 0.5, torch.arange(size, dtype=F64) + 0.5, indexing="ij")
    return torch.einsum("ij,jhw->ihw", torch.linalg.inv(k[0]), torch.stack([u, v, torch.ones_like(u)]))


def sphere(size: int, k: torch.Tensor, centre=(5.0, -8.0, 300.0), radius: float = 80.0):
    """Closed-form depth (1, 1, H, W), mask and outward unit normals (1, 3, H, W) of a sphere's near side."""
    r = rays(size, k)
    c = torch.tensor(centre, dtype=F64)[:, None, None]
    rc, rr = (r * c).sum(0), (r * r).sum(0)
    disc = rc**2 - rr * ((c * c).sum() - radius**2)
    mask = disc > 0
    t = torch.where(mask, (rc - disc.clamp_min(0).sqrt()) / rr, torch.zeros_like(rc))
    normals = (r * t - c) / radius * mask
    return t[None, None], mask[None, None].to(F64), normals[None]


def interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose whole 3 × 3 neighbourhood is on the mask."""
    full = torch.nn.functional.max_pool2d(1 - mask, 3, 1, 1) == 0
    return full & (mask > 0)


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.acos((a * b).sum(1).clamp(-1, 1)))


LIGHT = torch.tensor([0.7, 0.1, -0.4, 0.2, 0.03, -0.05, 0.04, 0.02, -0.03], dtype=F64)


def light(batch: int = 1) -> torch.Tensor:
    """(B, 9, 3): a frontal light, a bit different per channel and per image; positive on a frontal sphere."""
    scale = torch.tensor([1.0, 0.9, 1.1], dtype=F64)
    return torch.stack([LIGHT[:, None] * scale * (1 + 0.2 * b) for b in range(batch)])


def test_points_reproject_to_pixel_centres():
    k = intrinsics(8, batch=2)
    depth = torch.rand(2, 1, 8, 8, dtype=F64) * 100 + 200
    pts = depth_to_points(depth, k)
    assert pts.shape == (2, 3, 8, 8)
    torch.testing.assert_close(pts[:, 2:], depth)
    uv = project(pts.flatten(2).transpose(1, 2), k)  # the geometry module's K·X/z
    v, u = torch.meshgrid(torch.arange(8, dtype=F64) + 0.5, torch.arange(8, dtype=F64) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(1, 64, 2).expand(2, 64, 2))


def test_normals_of_a_plane_are_exact_and_face_the_camera():
    size = 12
    k = intrinsics(size)
    n = torch.tensor([0.3, -0.2, -1.0], dtype=F64)
    n = n / n.norm()
    d = float(n @ torch.tensor([0.0, 0.0, 400.0], dtype=F64))  # the plane n·X = d through (0, 0, 400)
    depth = (d / torch.einsum("i,ihw->hw", n, rays(size, k)))[None, None]
    mask = torch.ones_like(depth)
    mask[..., :3, :4] = 0  # a hole: one-sided differences along its border are still exact on a plane
    normals = depth_to_normals(depth * mask, k, mask)
    valid = normal_mask(mask)[:, 0] > 0
    assert valid.sum() == size * size - 12
    torch.testing.assert_close(normals.permute(0, 2, 3, 1)[valid], n.expand(int(valid.sum()), 3))
    assert (normals.permute(0, 2, 3, 1)[~valid] == 0).all()


def test_normals_of_a_sphere_match_the_closed_form():
    size = 48
    k = intrinsics(size)
    depth, mask, want = sphere(size, k)
    got = depth_to_normals(depth, k, mask)
    inner = interior(mask)[:, 0]
    err = angle_deg(got, want)
    facing = inner & (want[:, 2] < -0.7)  # within 45° of the view: central differences lose accuracy
    assert facing.sum() > 500 and err[facing].max() < 1.0 and err[inner].median() < 0.2  # towards the rim
    # On the border, one-sided differences still give normals within a few degrees (the steep rim aside).
    rim = (mask[:, 0] > 0) & ~inner & (want[:, 2] < -0.5)
    assert angle_deg(got, want)[rim].max() < 10.0
    assert torch.isfinite(got).all() and (got[:, 2][mask[:, 0] > 0] < 0).all()  # facing the camera
    # mask=None means depth > 0
    torch.testing.assert_close(depth_to_normals(depth, k), got)


def test_solve_lighting_recovers_known_coefficients():
    size, batch = 32, 2
    k = intrinsics(size)
    _, mask, normals = sphere(size, k)
    normals, mask = normals.expand(batch, 3, size, size), mask.expand(batch, 1, size, size)
    truth = light(batch)
    gen = torch.Generator().manual_seed(0)
    for albedo in (torch.rand(batch, 3, size, size, generator=gen, dtype=F64) * 0.6 + 0.2,
                   torch.tensor([0.5, 0.6, 0.7], dtype=F64).reshape(1, 3, 1, 1).expand(batch, 3, 1, 1)):
        image = shade(albedo.expand(batch, 3, size, size).permute(0, 2, 3, 1), normals.permute(0, 2, 3, 1), truth)
        assert image[mask[:, 0] > 0].min() > 0.05  # no clamping: the model is exactly linear in l
        image = image.permute(0, 3, 1, 2) * mask + 5.0 * (1 - mask)  # junk off the mask must not matter
        got = solve_lighting(image, normals, albedo, mask)
        assert got.shape == (batch, 9, 3)
        torch.testing.assert_close(got, truth, atol=1e-4, rtol=0)
    empty = solve_lighting(image, normals, albedo, torch.zeros_like(mask))
    assert (empty == 0).all()  # an empty mask: zero light, never NaN


@pytest.fixture(scope="module")
def rendered(bundled_model, gl_ctx):
    """Two bundled-model faces at 96 px with normals, and the same under unit ambient light (= albedo)."""
    from synthface import load_config, sample_params
    from synthface.render import FaceRenderer, RenderSettings

    cfg = load_config(overrides={"image_size": 96, "pose.yaw_deg": [-20, 20], "pose.pitch_deg": [-10, 10],
                                 "camera.distance_mm": [400, 600],
                                 "light.directional": [0.0, 0.6]})  # no shadowed side: the SH model is linear there
    params = sample_params(bundled_model, seed=3, indices=range(2), config=cfg)
    params["material"] = np.zeros_like(params["material"])  # Lambertian: what solve_lighting models
    params["shadow"] = np.zeros_like(params["shadow"])  # and no cast shadows
    ambient = np.zeros_like(params["light"])
    ambient[:, 0] = 1.0
    with FaceRenderer(bundled_model, RenderSettings(96, normals=True, antialias="off"), ctx=gl_ctx) as r:
        return params, r.render(params), r.render(dict(params, light=ambient))


def as_linear(image: np.ndarray) -> torch.Tensor:
    return srgb_to_linear(torch.as_tensor(image, dtype=F64).permute(0, 3, 1, 2) / 255)


def test_normals_agree_with_the_renderer(rendered):
    """The renderer's per-pixel normals and ours from its depth map: same convention (−z facing)."""
    params, out, _ = rendered
    depth = torch.as_tensor(out.depth, dtype=F64)[:, None]
    mask = torch.as_tensor(out.mask, dtype=F64)[:, None]
    ours = depth_to_normals(depth, torch.as_tensor(params["intrinsics"], dtype=F64), mask)
    theirs = torch.as_tensor(out.normals, dtype=F64).permute(0, 3, 1, 2)
    err = angle_deg(ours, theirs)[interior(mask)[:, 0]]  # facets vs interpolated normals; self-occlusions
    assert err.median() < 5.0 and (err < 20).double().mean() > 0.9


def test_solve_lighting_on_a_render(rendered):
    """With the renderer's own normals and the albedo image (unit ambient light), the shard's light comes
    back from the pixels the camera did not clip (a pale face under a bright light saturates)."""
    params, out, albedo = rendered
    normals = torch.as_tensor(out.normals, dtype=F64).permute(0, 3, 1, 2)
    image = as_linear(out.image)
    mask = torch.as_tensor(out.mask, dtype=F64)[:, None] * unsaturated(image)
    assert (mask.sum(dim=(1, 2, 3)) > 500).all()
    got = solve_lighting(image, normals, as_linear(albedo.image), mask)
    torch.testing.assert_close(got, torch.as_tensor(params["light"], dtype=F64), atol=0.02, rtol=0)


def test_srgb_round_trip():
    x = torch.linspace(0, 1, 101, dtype=F64)
    torch.testing.assert_close(srgb_to_linear(linear_to_srgb(x)), x)


def small_surface(size: int = 6):
    gen = torch.Generator().manual_seed(1)
    k = intrinsics(size, f=8.0)
    depth = 300 + 4 * torch.rand(1, 1, size, size, generator=gen, dtype=F64)
    mask = torch.ones(1, 1, size, size, dtype=F64)
    mask[..., 0, 0] = mask[..., -1, 2] = 0  # exercise the one-sided borders too
    return depth, k, mask


def test_shade_depth_gradcheck():
    depth, k, mask = small_surface()
    albedo = torch.full((1, 3, 1, 1), 0.6, dtype=F64)
    assert shade_depth(depth, k, albedo, light(), mask).min() >= 0
    assert (shade_depth(depth, k, albedo, light(), mask)[normal_mask(mask).expand(1, 3, 6, 6) > 0] > 0.05).all()
    depth.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: shade_depth(z, k, albedo, light(), mask), (depth,))


@pytest.mark.parametrize("solved", [False, True])
def test_sfs_loss_gradcheck(solved):
    """With the lighting solved by least squares and detached, the gradient is still the full one
    (envelope theorem: ∂E/∂l = 0 at the optimum), so gradcheck's finite differences, which do
    re-solve the lighting, agree with autograd."""
    depth, k, mask = small_surface()
    albedo = torch.full((1, 3, 1, 1), 0.6, dtype=F64)
    image = shade_depth(depth + torch.randn_like(depth), k, albedo, light(), mask)
    coarse = depth + 1.0
    depth.requires_grad_(True)
    known = None if solved else light()
    assert torch.autograd.gradcheck(
        lambda z: sfs_loss(z, coarse, image, k, mask, albedo, (1.0, 1e-3, 1e-2), light=known)[0], (depth,))


@pytest.mark.parametrize("solved", [False, True])
def test_sfs_optimisation_recovers_detail(solved):
    """A smooth coarse sphere plus the shading of the true, bumpy one: descending the loss from the
    coarse depth moves towards the truth, with the known or the solved (as in training) lighting."""
    size = 32
    k = intrinsics(size)
    coarse, mask, _ = sphere(size, k)
    v, u = torch.meshgrid(torch.arange(size, dtype=F64), torch.arange(size, dtype=F64), indexing="ij")
    truth = coarse + 2.0 * torch.sin(2 * math.pi * u / 8) * torch.sin(2 * math.pi * v / 8) * mask  # mm
    albedo = torch.full((1, 3, 1, 1), 0.6, dtype=F64)
    image = shade_depth(truth, k, albedo, light(), mask)
    inner = laplacian_mask(mask) > 0

    def rms(z):
        return (z - truth)[inner].pow(2).mean().sqrt().item()

    delta = torch.zeros_like(coarse, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=0.1)
    losses = []
    for _ in range(60):
        loss, terms = sfs_loss(coarse + delta * mask, coarse, image, k, mask, albedo,
                               light=None if solved else light())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(terms) == {"shading", "fidelity", "smoothness"}
    assert losses[-1] < 0.3 * losses[0]
    assert rms(coarse + delta.detach() * mask) < 0.6 * rms(coarse)


def test_sfs_loss_ignores_clipped_pixels():
    """Pixels the camera clipped at white say only "at least this bright": they must neither pull the
    depth nor bias the solved lighting, so the truth stays a zero-loss, zero-gradient point."""
    size = 32
    k = intrinsics(size)
    truth, mask, _ = sphere(size, k)
    albedo = torch.full((1, 3, 1, 1), 0.6, dtype=F64)
    plain = shade_depth(truth, k, albedo, light(), mask).amax(1)[normal_mask(mask)[:, 0] > 0]
    bright = light() / plain.quantile(0.7)  # the brightest 30 % of the face exceed white
    image = shade_depth(truth, k, albedo, bright, mask).clamp(max=1.0)
    clipped = (1 - unsaturated(image)) * normal_mask(mask)
    assert 0.05 < clipped.sum() / normal_mask(mask).sum() < 0.8
    for known in (bright, None):  # lighting given, and solved as in training
        z = truth.clone().requires_grad_(True)
        loss, terms = sfs_loss(z, truth, image, k, mask, albedo, (1.0, 1e-5, 0.0), light=known)
        loss.backward()  # no smoothness term: the sphere's own curvature would pull it
        assert terms["shading"].item() < 1e-9  # (the lighting solve has a tiny ridge)
        assert z.grad.abs().max().item() < 1e-8


def test_erode_and_albedo_flat():
    mask = torch.zeros(1, 1, 12, 12, dtype=F64)
    mask[..., 2:10, 0:8] = 1  # touches the image's left border
    eroded = erode(mask, 2)
    assert eroded[0, 0, 4:8, 0:6].all() and eroded.sum() == 4 * 6  # the image border is no silhouette
    torch.testing.assert_close(erode(mask.bool(), 0), mask.float())
    assert (albedo_flat(torch.full((1, 3, 1, 1), 0.5), mask, 2, 0.1) == mask).all()
    albedo = torch.full((1, 3, 12, 12), 0.6, dtype=F64) * mask  # zero off the mask: no edge there
    albedo[..., :, 4:] *= 0.5  # a dark region from column 4 on
    flat = albedo_flat(albedo, mask, 2, 0.1)[0, 0]
    assert flat[:, 2:6].sum() == 0  # within 2 pixels of the edge
    torch.testing.assert_close(flat[:, [0, 1, 6, 7]], mask[0, 0][:, [0, 1, 6, 7]])
    assert albedo_flat(albedo, mask, 2, 2.0).sum() == mask.sum()  # a loose tolerance keeps everything


def test_sfs_loss_leaves_out_silhouette_and_albedo_edges():
    """The coarse estimate puts the albedo's dark band and the silhouette a few pixels off the image's:
    with ``margin`` and ``albedo_tolerance`` those pixels leave the shading term and the lighting solve,
    so the true surface stays a zero-loss, zero-gradient point; without them it does not."""
    size = 40
    k = intrinsics(size)
    truth, mask, _ = sphere(size, k, centre=(0.0, 0.0, 330.0))  # inside the image
    u = torch.arange(size, dtype=F64).expand(size, size)  # column index
    band = ((u - 20).abs() <= 2).to(F64)  # a dark band (lips, brows) in the image
    albedo_image = 0.6 * (1 - 0.5 * band)[None, None].expand(1, 3, size, size)
    image = shade_depth(truth, k, albedo_image, light(), mask)
    image = image + 0.3 * (1 - normal_mask(mask))  # background, grey, where the image shows no face
    coarse_mask = torch.nn.functional.max_pool2d(mask, 3, 1, 1)  # the estimate covers 1 px more
    coarse = torch.where(coarse_mask > mask, truth.amax(), truth)  # (its depth there: the rim's)
    albedo_coarse = 0.6 * (1 - 0.5 * band.roll(2, -1))[None, None].expand(1, 3, size, size)  # band 2 px off
    for known in (light(), None):
        for options, clean in (({}, False), ({"margin": 2}, False), ({"albedo_tolerance": 0.1}, False),
                               ({"margin": 2, "albedo_tolerance": 0.1}, True)):
            z = coarse.clone().requires_grad_(True)
            loss, terms = sfs_loss(z, coarse, image, k, coarse_mask, albedo_coarse, (1.0, 0.0, 0.0),
                                   light=known, **options)
            loss.backward()
            grad = z.grad.abs().max().item()
            if clean:
                assert terms["shading"].item() < 1e-9 and grad < 1e-8
            else:
                assert terms["shading"].item() > 1e-5 and grad > 1e-6


def test_sfs_loss_shades_only_shown_pixels():
    """``shown`` (a shard's mask) leaves pixels where something other than the face's skin shows — hair
    over the forehead — out of the shading term and the lighting solve: with it the true surface is a
    zero-loss, zero-gradient point, without it the hair pulls the depth."""
    size = 40
    k = intrinsics(size)
    truth, mask, _ = sphere(size, k, centre=(0.0, 0.0, 330.0))
    albedo = torch.full((1, 3, 1, 1), 0.6, dtype=F64)
    image = shade_depth(truth, k, albedo, light(), mask)
    rows = torch.arange(size, dtype=F64)[:, None].expand(size, size)
    hair = (rows < 14).to(F64) * mask  # the top rows of the face show dark hair
    image = image * (1 - hair) + 0.03 * hair
    for known in (light(), None):
        for shown, clean in ((None, False), (mask * (1 - hair), True)):
            z = truth.clone().requires_grad_(True)
            loss, terms = sfs_loss(z, truth, image, k, mask, albedo, (1.0, 0.0, 0.0), light=known, shown=shown)
            loss.backward()
            if clean:
                assert terms["shading"].item() < 1e-9 and z.grad.abs().max().item() < 1e-8
            else:
                assert terms["shading"].item() > 1e-4 and z.grad.abs().max().item() > 1e-6


def test_normalize_depth():
    k = intrinsics(64, batch=2).float()
    depth = torch.full((2, 1, 64, 64), 500.0)
    depth[0] += torch.linspace(-20, 20, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    z, mean, footprint = normalize_depth(depth * mask, k, mask)
    torch.testing.assert_close(mean.flatten(), torch.tensor([500.0, 500.0]))
    torch.testing.assert_close(footprint.flatten(), 500.0 / (0.5 * (k[:, 0, 0] + k[:, 1, 1])))
    assert z[1].abs().max() == 0 and z[0].abs().max() < 0.2 and (z * (1 - mask) == 0).all()


def fine_batch(batch: int = 2, size: int = 64):
    k = intrinsics(size, f=100.0, batch=batch).float()
    depth, mask, _ = sphere(size, k.double(), centre=(0.0, 0.0, 400.0), radius=90.0)
    depth, mask = depth.float().expand(batch, 1, size, size), mask.float().expand(batch, 1, size, size)
    return torch.rand(batch, 3, size, size), depth, k, mask


def test_finenet_shapes_and_gradients():
    image, depth, k, mask = fine_batch()
    net = FineNet()
    out = net(image, depth, k, mask)
    assert out.shape == (2, 1, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, depth)  # zero-initialised head: the coarse depth back
    out.sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net(image[:, :, :50, :37], depth[..., :50, :37], k, mask[..., :50, :37]).shape == (2, 1, 50, 37)


def test_finenet_steps_reduce_the_sfs_loss():
    torch.manual_seed(0)
    _, coarse, k, mask = fine_batch(1)
    v, u = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    truth = coarse + 3.0 * torch.sin(2 * math.pi * u / 12) * torch.sin(2 * math.pi * v / 12) * mask
    albedo = torch.full((1, 3, 1, 1), 0.6)
    image = shade_depth(truth, k, albedo, light().float(), mask)
    net = FineNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        depth = net(linear_to_srgb(image), coarse, k, mask)
        loss, _ = sfs_loss(depth, coarse, image, k, mask, albedo, light=light().float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_coarsenet_shapes_gradients_and_steps():
    net = CoarseNet(12)
    x = torch.rand(3, 3, 64, 64)
    feedback = torch.rand(3, 6, 64, 64)
    params = torch.randn(3, 12)
    out = coarse_step(net, x, feedback, params)
    assert out.shape == (3, 12) and out.dtype == torch.float32
    torch.testing.assert_close(out, params)  # zero-initialised last layer: no update yet
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net(torch.rand(1, 9, 32, 32)).shape == (1, 12)
    assert CoarseNet(12, norm="batch")(torch.rand(2, 9, 40, 40)).shape == (2, 12)
    calls = []
    steps = list(refine(net, x, lambda p: calls.append(p) or feedback, 3))
    assert len(steps) == 3 and len(calls) == 3 and not calls[0].requires_grad
    assert torch.equal(calls[0], torch.zeros(3, 12))  # from the training data's mean


def blobs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, 9, 64, 64) with a coloured blob at a random place; targets (n, 5): its position and colour."""
    gen = torch.Generator().manual_seed(seed)
    centre, colour = torch.rand(n, 2, generator=gen) * 40 + 12, torch.rand(n, 3, generator=gen)
    v, u = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = torch.exp(-((u - centre[:, 0, None, None]) ** 2 + (v - centre[:, 1, None, None]) ** 2) / 50)
    x = torch.cat([colour[:, :, None, None] * blob[:, None], 0.1 * torch.rand(n, 6, 64, 64, generator=gen)], 1)
    return x, torch.cat([(centre - 32) / 12, (colour - 0.5) * 3], 1)


def test_coarsenet_overfits_a_tiny_batch():
    torch.manual_seed(0)
    net = CoarseNet(5)
    x, target = blobs(4)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (net(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses


def test_refine_with_rendered_feedback(bundled_model, gl_ctx):
    """The whole CoarseNet loop on the real renderer: decode the estimate, render PNCC + normals, step."""
    from synthface import SamplingConfig, sample_params
    from synthface.render import FaceRenderer, RenderSettings

    params = sample_params(bundled_model, seed=0, indices=range(3), config=SamplingConfig(image_size=64))
    pv = ParameterNormalizer.fit(params)
    assert pv.dim == bundled_model.n_identity + bundled_model.n_expression + 6
    scene = {k: v for k, v in params.items() if k not in pv.names}
    with FaceRenderer(bundled_model, RenderSettings(64, normals=True, pncc=True), ctx=gl_ctx) as r, \
            FeedbackRenderer(bundled_model, pv, 64, renderer=r) as feedback_renderer:
        feedback = feedback_renderer.feedback(torch.as_tensor(pv.encode(params)), scene)
        assert feedback.shape == (3, 6, 64, 64) and feedback.dtype == torch.float32
        assert feedback[:, :3].max() <= 1 and feedback[:, 3:].abs().max() <= 1.0001
        # Normals face the camera; a full head's smooth normals turn slightly away only at its silhouette.
        nz = feedback[:, 5][feedback[:, :3].sum(1) > 0]
        assert (nz < 0.2).float().mean() > 0.95 and nz.median() < -0.3
        net = CoarseNet(pv.dim)
        final = last(refine(net, torch.rand(3, 3, 64, 64), lambda est: feedback_renderer.feedback(est, scene), 2))
        depth, mask, rho = feedback_renderer.maps(final, scene)
    assert final.shape == (3, pv.dim) and depth.shape == mask.shape == (3, 1, 64, 64) and rho.shape == (3, 3, 64, 64)
    assert (depth[mask > 0] > 0).all() and mask.sum() > 0  # the mean face, where the estimate put it
    with FaceRenderer(bundled_model, RenderSettings(64), ctx=gl_ctx) as plain, \
            pytest.raises(ValueError, match="normals and PNCC"):
        FeedbackRenderer(bundled_model, pv, 64, renderer=plain)


def test_sfs_loss_models_the_renderers_highlights_and_occlusion(bundled_model, gl_ctx):
    """On a render with a strong specular lobe and full ambient occlusion, the SfS shading residual at the
    true depth is small only when the loss is given the material and ρ is drawn with the occlusion."""
    from synthface import load_config, sample_params
    from synthface.render import FaceRenderer, RenderSettings

    cfg = load_config(overrides={"image_size": 96, "pose.yaw_deg": [-20, 20], "pose.pitch_deg": [-10, 10],
                                 "camera.distance_mm": [400, 600], "light.directional": [0.35, 0.45],  # fill for AO
                                 "light.second_order": 0.0, "material.specular": [0.6, 0.6],
                                 "material.shininess": [12, 12], "material.occlusion": [1.0, 1.0],
                                 "light.shadow": [0.0, 0.0]})  # cast shadows: the one term the loss leaves out
    params = sample_params(bundled_model, seed=4, indices=range(3), config=cfg)
    ambient = np.zeros_like(params["light"])
    ambient[:, 0] = 1.0
    with FaceRenderer(bundled_model, RenderSettings(96, antialias="off"), ctx=gl_ctx) as r:
        out = r.render(params)
        with_ao = r.render(dict(params, light=ambient)).image
        without_ao = r.render(dict(params, light=ambient, material=np.zeros_like(params["material"]))).image
    depth = torch.as_tensor(out.depth, dtype=F64)[:, None]
    mask = torch.as_tensor(out.mask, dtype=F64)[:, None]
    k = torch.as_tensor(params["intrinsics"], dtype=F64)
    light = torch.as_tensor(params["light"], dtype=F64)
    image = as_linear(out.image)

    def residual(albedo_image: np.ndarray, material) -> float:
        _, terms = sfs_loss(depth, depth, image, k, mask, as_linear(albedo_image), light=light,
                            material=material, margin=2)
        return float(terms["shading"])

    full = residual(with_ao, torch.as_tensor(params["material"], dtype=F64))
    # The rest is the faceted depth's normals against the renderer's interpolated ones (README, Training).
    assert full < 0.75 * residual(with_ao, None)  # the highlights are the loss's own model
    assert full < 0.75 * residual(without_ao, torch.as_tensor(params["material"], dtype=F64))  # and the occlusion
