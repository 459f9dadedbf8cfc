"""fv2v networks: shapes at the CPU configs (tiny, small), identity warp, keypoint-transform equivariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.fv2v.config import get_config
from models.fv2v.discriminator import MultiScaleDiscriminator
from models.fv2v.model import Fv2vModel, select_runtime
from models.fv2v.motion import warp_volume
from models.fv2v.transform import (
    euler_angles,
    random_affine,
    rotation_matrix,
    transform_keypoints,
    warp_image,
    warp_points,
)
from models.mesh.pose import rotation_matrix as mesh_rotation

BATCH = 2
IDENTITY_TOL = 1e-4  # fp32 rounding in grid_sample: 2.4e-5 max at small, 5.1e-5 at base; a 1-voxel shift is ~1
BF16_TOL = 0.1  # mean abs difference of bf16 vs fp32 renders, [0, 1] scale


pytestmark = pytest.mark.usefixtures("one_torch_thread")


CPU_CONFIGS = ("tiny", "small")  # base (~0.7-3.5 s per M+G frame on CPU) is timed by benchmarks/fv2v_speed.py


@pytest.fixture(scope="module", params=CPU_CONFIGS)
def model(request: pytest.FixtureRequest) -> Fv2vModel:
    torch.manual_seed(0)
    return Fv2vModel(get_config(request.param)).eval().place(select_runtime("cpu", "fp32"))


def test_shapes(model: Fv2vModel) -> None:
    cfg = model.cfg
    s, k = cfg.image_size, cfg.num_kp
    img = torch.rand(BATCH, 3, s, s)
    side = cfg.volume_side
    with torch.no_grad():
        vol = model.appearance(img)
        assert vol.shape == (BATCH, cfg.appearance.feat_ch, cfg.appearance.depth, side, side)
        kp_c = model.canonical(img)
        assert kp_c.shape == (BATCH, k, 3)
        assert float(kp_c.abs().max()) <= 1.0  # expectations over the [-1, 1] grid
        pose = model.head_pose(img)
        assert pose.logits.shape == (BATCH, 3, cfg.head_pose.n_bins)
        assert pose.angles.shape == (BATCH, 3) and pose.translation.shape == (BATCH, 3)
        half_range = cfg.head_pose.n_bins * cfg.head_pose.bin_deg / 2
        assert float(pose.angles.abs().max()) < half_range
        delta = model.expression(img)
        assert delta.shape == (BATCH, k, 3)
        kp = transform_keypoints(kp_c, rotation_matrix(pose.angles), pose.translation, delta)
        motion = model.motion(vol, kp, kp.flip(0), None)
        assert motion.deformation.shape == (BATCH, cfg.appearance.depth, side, side, 3)
        assert motion.mask.shape[:2] == (BATCH, k + 1)
        assert torch.allclose(motion.mask.sum(1), torch.ones(()), atol=1e-5)
        assert motion.occlusion.shape == (BATCH, 1, side, side)
        out = model.generator(warp_volume(vol, motion.deformation), motion.occlusion)
        assert out.shape == (BATCH, 3, s, s)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        scales = MultiScaleDiscriminator(cfg)(out)
        assert len(scales) == cfg.discriminator.n_scales
        for i, (feats, logits) in enumerate(scales):
            assert len(feats) == cfg.discriminator.n_layers
            assert logits.shape[0] == BATCH and logits.shape[-1] == s // 2 ** (i + cfg.discriminator.n_layers)


def test_inference_api(model: Fv2vModel) -> None:
    s, k = model.cfg.image_size, model.cfg.num_kp
    img = np.random.default_rng(0).integers(0, 256, (s, s, 3), dtype=np.uint8)
    cache = model.keyframe(img)
    angles, t, delta = model.estimate(img)
    assert angles.shape == (1, 3) and t.shape == (1, 3) and delta.shape == (1, k, 3)
    pose = np.concatenate([angles[0].numpy(), t[0].numpy()])
    out = model.render(cache, pose, delta[0].numpy())
    assert out.shape == (s, s, 3) and out.dtype == np.uint8
    batched = model.render(cache, pose[None], delta.numpy())
    assert batched.shape == (1, s, s, 3)
    np.testing.assert_array_equal(batched[0], out)


@pytest.mark.parametrize("jacobian", [False, True])
def test_identity_keypoints_give_identity_warp(model: Fv2vModel, jacobian: bool) -> None:
    cfg = model.cfg
    torch.manual_seed(1)
    vol = torch.randn(BATCH, cfg.appearance.feat_ch, cfg.appearance.depth, cfg.volume_side, cfg.volume_side)
    kp = torch.rand(BATCH, cfg.num_kp, 3) * 1.6 - 0.8
    jac = torch.eye(3).expand(BATCH, cfg.num_kp, 3, 3) if jacobian else None
    with torch.no_grad():
        motion = model.motion(vol, kp, kp.clone(), jac)
        warped = warp_volume(vol, motion.deformation)
    assert torch.allclose(warped, vol, atol=IDENTITY_TOL)
    # and a real driving motion does move the volume
    with torch.no_grad():
        moved = warp_volume(vol, model.motion(vol, kp, kp + 0.3, None).deformation)
    assert float((moved - vol).abs().mean()) > 0.1


def test_rotation_matches_teacher_convention() -> None:
    angles = torch.tensor([[20.0, -10.0, 5.0], [-35.0, 15.0, -25.0]])
    rot = rotation_matrix(angles)
    for a, r in zip(angles, rot, strict=True):
        np.testing.assert_allclose(r.numpy(), mesh_rotation(*a.tolist()), atol=1e-5)
    torch.testing.assert_close(euler_angles(rot), angles, atol=1e-3, rtol=0)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3).expand(2, 3, 3), atol=1e-5, rtol=0)


def test_keypoint_transform_equivariant_under_rotation() -> None:
    g = torch.Generator().manual_seed(2)
    kp_c = torch.rand(BATCH, 8, 3, generator=g) - 0.5
    delta = (torch.rand(BATCH, 8, 3, generator=g) - 0.5) * 0.1
    t = (torch.rand(BATCH, 3, generator=g) - 0.5) * 0.2
    r1 = rotation_matrix(torch.tensor([[10.0, 20.0, -5.0], [-30.0, 5.0, 12.0]]))
    ru = rotation_matrix(torch.tensor([[25.0, -8.0, 3.0], [0.0, 0.0, 90.0]]))  # a known extra rotation
    x = transform_keypoints(kp_c, r1, t, delta)
    # Rotating the transformed keypoints = transforming with the composed rotation (free view: R_u R_d).
    composed = transform_keypoints(kp_c, ru @ r1, (ru @ t[..., None])[..., 0], (delta @ ru.transpose(1, 2)))
    torch.testing.assert_close(x @ ru.transpose(1, 2), composed, atol=1e-5, rtol=0)
    # A 90 degree roll maps (x, y) -> (-y, x) in image coordinates (y down: clockwise on screen).
    rolled = transform_keypoints(
        kp_c,
        rotation_matrix(torch.tensor([[0.0, 0.0, 90.0]]).expand(BATCH, 3)),
        torch.zeros(BATCH, 3),
        torch.zeros_like(kp_c),
    )
    torch.testing.assert_close(rolled[..., 0], -kp_c[..., 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(rolled[..., 1], kp_c[..., 0], atol=1e-5, rtol=0)


def test_affine_warp_moves_points_consistently() -> None:
    """A bright dot in a warped image sits where warp_points says (the equivariance loss's geometry)."""
    size = 65
    img = torch.zeros(1, 1, size, size)
    px, py = 40, 22
    img[0, 0, py, px] = 1.0
    theta = random_affine(1, 20.0, 0.1, 0.1, generator=torch.Generator().manual_seed(3))
    warped = warp_image(img, theta)
    iy, ix = divmod(int(warped[0, 0].argmax()), size)
    q = torch.tensor([[[ix / (size - 1) * 2 - 1, iy / (size - 1) * 2 - 1]]])
    back = warp_points(q, theta)[0, 0]
    orig = torch.tensor([px / (size - 1) * 2 - 1, py / (size - 1) * 2 - 1])
    assert float((back - orig).abs().max()) < 2.5 * 2 / (size - 1)  # within ~2 pixels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for the bf16 / channels_last path")
def test_cuda_bf16_path() -> None:
    torch.manual_seed(0)
    cfg = get_config("tiny")
    gpu = Fv2vModel(cfg).eval().place(select_runtime())
    assert gpu.runtime.device.type == "cuda" and gpu.runtime.dtype == torch.bfloat16
    assert gpu.runtime.channels_last
    cpu = Fv2vModel(cfg).eval().place(select_runtime("cpu", "fp32"))
    cpu.load_state_dict({k: v.cpu() for k, v in gpu.state_dict().items()})
    img = np.random.default_rng(0).integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    outs = []
    for m in (gpu, cpu):
        cache = m.keyframe(img)
        angles, t, delta = m.estimate(img)
        pose = np.concatenate([angles[0].cpu().numpy(), t[0].cpu().numpy()])
        outs.append(m.render(cache, pose, delta[0].cpu().numpy()).astype(np.float32) / 255.0)
    assert outs[0].shape == (cfg.image_size, cfg.image_size, 3)
    assert float(np.abs(outs[0] - outs[1]).mean()) < BF16_TOL
