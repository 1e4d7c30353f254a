"""workflows/render.py: the seeded choice of images to draw (the drawing itself: test_review.py, `slow`)."""

from __future__ import annotations

import hashlib

from workflows.render import choose

IDS = [f"img/{i}" for i in range(6)]


def test_choose_picks_by_a_seeded_hash_the_same_ones_for_the_same_seed():
    assert choose(IDS, 3, 0) == ["img/2", "img/1", "img/0"]
    assert choose(IDS, 3, 1) == ["img/1", "img/2", "img/0"]
    assert choose(list(reversed(IDS)), 3, 0) == choose(IDS, 3, 0)  # the input order does not matter
    assert choose(IDS, -1, 0) == ["img/2", "img/1", "img/0", "img/4", "img/3", "img/5"]  # -1: all, ranked
    assert choose(IDS, 10, 0) == choose(IDS, -1, 0) and choose(IDS, 0, 0) == []
    assert choose(IDS, -1, 7) == sorted(IDS, key=lambda i: hashlib.md5(f"7:{i}".encode()).hexdigest())
