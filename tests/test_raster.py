"""The mesh rasteriser against a per-pixel reference: pixel centres, depth order, inverses."""

from __future__ import annotations

import numpy as np

from models.mesh import raster

TRIANGLES = 300  # random triangles per test, overlapping a lot
BOX = (5, 3, 69, 51)  # (x0, y0, x1, y1) px: offset and not square
EDGE_TOL = 1e-9  # barycentric slack for a centre exactly on an edge


def _triangles(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 3) triangles (x, y, depth) scattered over and around BOX."""
    centre = rng.uniform((0, -5), (80, 60), (n, 1, 2))
    xy = centre + rng.normal(0, 6, (n, 3, 2))
    depth = np.repeat(rng.uniform(-1, 1, (n, 1, 1)), 3, 1)
    return np.concatenate([xy, depth], 2)


def _barycentric(tri: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w, T, 3) barycentric coordinates of every box pixel centre in every triangle."""
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    p = np.stack([xs, ys, np.ones_like(xs)], -1)
    m = np.concatenate([np.transpose(tri[:, :, :2], (0, 2, 1)), np.ones((len(tri), 1, 3))], 1)
    return np.einsum("tij,hwj->hwti", np.linalg.inv(m), p)


def test_each_pixel_gets_the_nearest_triangle_covering_its_centre() -> None:
    rng = np.random.default_rng(7)
    tri = _triangles(rng, TRIANGLES)
    sel, _, ids = raster.rasterize(tri, BOX)
    assert ids.shape == (BOX[3] - BOX[1], BOX[2] - BOX[0])
    bary = _barycentric(tri[sel], BOX)
    inside = bary.min(-1) >= -EDGE_TOL
    strictly = bary.min(-1) > 1e-6
    depth = tri[sel, 0, 2]  # smaller is nearer (MediaPipe's z)
    nearest = np.where(strictly, depth, np.inf).min(-1)  # (h, w): of those a centre is well inside
    for (r, c), k in np.ndenumerate(ids):
        if k == len(sel):
            assert not inside[r, c].any(), (r, c)
            continue
        assert inside[r, c, k], (r, c)
        assert depth[k] <= nearest[r, c], (r, c)
    assert (ids < len(sel)).mean() > 0.8  # the triangles cover most of the box: the test is not vacuous


def test_inverse_maps_vertices_to_the_unit_barycentrics_in_box_coordinates() -> None:
    rng = np.random.default_rng(3)
    tri = _triangles(rng, 50)
    sel, inv, _ = raster.rasterize(tri, BOX)
    m = np.concatenate([np.transpose(tri[sel, :, :2] - BOX[:2], (0, 2, 1)), np.ones((len(sel), 1, 3))], 1)
    np.testing.assert_allclose(inv @ m, np.broadcast_to(np.eye(3), inv.shape), atol=1e-9)


def test_triangles_off_the_box_or_collapsed_are_left_out() -> None:
    tri = np.array(
        [
            [[10, 10, 0], [30, 10, 0], [10, 30, 0]],  # in the box
            [[200, 200, 0], [220, 200, 0], [200, 220, 0]],  # off it
            [[10, 10, 0], [20, 20, 0], [30, 30, 0]],  # collapsed to a line
        ],
        float,
    )
    sel, _, ids = raster.rasterize(tri, BOX)
    assert sel.tolist() == [0]
    assert set(np.unique(ids)) == {0, 1}
