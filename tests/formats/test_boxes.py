"""`formats.boxes`: one function per box convention, exact values, round trips, per-box image sizes; the
device twin agrees; the one IoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.device_ops import cxcywh_to_xyxy as cxcywh_to_xyxy_t
from formats import boxes as B

XYXY = np.array([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 640.0, 480.0]])


def test_each_convention_has_its_exact_values():
    assert B.xyxy_to_xywh(XYXY).tolist() == [[10, 20, 40, 80], [0, 0, 640, 480]]
    assert B.xywh_to_xyxy([10, 20, 40, 80]).tolist() == [[10, 20, 50, 100]]  # one box: shape (1, 4)
    assert B.xyxy_to_cxcywh(XYXY, 640, 480).tolist() == [[30 / 640, 60 / 480, 40 / 640, 80 / 480], [0.5, 0.5, 1, 1]]
    assert B.xyxy_to_relative_xywh(XYXY, 640, 480).tolist() == [[10 / 640, 20 / 480, 40 / 640, 80 / 480], [0, 0, 1, 1]]
    assert B.normalized_to_pixels([[0.25, 0.5, 0.75, 1.0]], 640, 480).tolist() == [[160, 240, 480, 480]]


@pytest.mark.parametrize(("to", "back"), [
    (B.xyxy_to_cxcywh, B.cxcywh_to_xyxy), (B.xyxy_to_relative_xywh, B.relative_xywh_to_xyxy)])
def test_normalised_conventions_round_trip_with_one_size_per_box(to, back):
    rng = np.random.default_rng(0)
    w, h = np.array([640.0, 300.0, 1.0, 4000.0]), np.array([480.0, 900.0, 1.0, 3000.0])
    x1, y1 = rng.uniform(0, 0.5, 4) * w, rng.uniform(0, 0.5, 4) * h
    b = np.stack([x1, y1, x1 + rng.uniform(0, 0.5, 4) * w, y1 + rng.uniform(0, 0.5, 4) * h], 1)
    n = to(b, w, h)
    assert n.shape == (4, 4) and n.min() >= 0 and n.max() <= 1
    np.testing.assert_allclose(back(n, w, h), b, rtol=1e-12, atol=1e-9)
    # a size per box is that box's own: the same as converting each box alone
    np.testing.assert_array_equal(n, np.concatenate([to(b[i], w[i], h[i]) for i in range(4)]))


def test_absolute_xywh_round_trips_exactly_on_integers():
    assert B.xywh_to_xyxy(B.xyxy_to_xywh(XYXY)).tolist() == XYXY.tolist()


def test_the_device_twin_agrees_with_the_array_version():
    c = np.array([[0.5, 0.25, 0.2, 0.1], [0.1, 0.9, 0.2, 0.2]])
    got = cxcywh_to_xyxy_t(torch.tensor(c, dtype=torch.float64)) * torch.tensor([640.0, 480, 640, 480], dtype=torch.float64)
    np.testing.assert_allclose(got.numpy(), B.cxcywh_to_xyxy(c, 640, 480), rtol=1e-15)


def test_iou_of_every_pair():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [10, 10, 10, 20]])  # half overlap, identical, no area
    np.testing.assert_allclose(B.iou_matrix(a, b), [[50 / 150, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert B.iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


def test_the_sql_macros_compute_what_the_array_functions_do():
    from formats.query import connect

    con = connect()
    row = con.sql("SELECT xyxy_to_xywh([10.0, 20.0, 50.0, 100.0]), xyxy_area([10.0, 20.0, 50.0, 100.0]), "
                  "normalized_to_pixels([0.25, 0.5, 0.75, 1.0], 640, 480)").fetchall()[0]
    assert list(row[0]) == B.xyxy_to_xywh(XYXY[0])[0].tolist() == [10, 20, 40, 80]
    assert row[1] == 3200
    assert list(row[2]) == B.normalized_to_pixels([0.25, 0.5, 0.75, 1.0], 640, 480)[0].tolist()
