"""The contract of workflows/fiftyone_docs.py: the documents ovlabel writes itself are the samples FiftyOne's
public API writes, read back through the public API; and the FiftyOne version is checked."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="ovlabel-fo-db-"))

from workflows.fiftyone_docs import (  # noqa: E402
    DETECTION_ATTRS,
    FiftyOneVersionError,
    check_version,
    declare_fields,
    detections_doc,
    insert_samples,
    set_label_field,
)

REGIONS = [
    {"bbox": [10.0, 20.0, 110.0, 70.0], "phrase": "a red car", "category": None, "score": 0.5, "det_score": 0.6,
     "clip_score": 0.4, "origin": "pseudo", "round": 2},
    {"bbox": [0.0, 0.0, 200.0, 100.0], "phrase": None, "category": "person", "score": None, "det_score": None,
     "clip_score": None, "origin": "gold", "round": None},
]
KEYS = ["img#r2c0", "img#1"]


def test_version_check():
    for ok in ("1.22.1", "1.22.0", "1.30.2"):
        check_version(ok)
    for bad in ("1.21.9", "2.0.0", "0.9"):
        with pytest.raises(FiftyOneVersionError, match=rf"FiftyOne {bad} is not one .*1\.22 <= version < 2\.0"):
            check_version(bad)


def test_detections_document_boxes_and_labels():
    doc = detections_doc(REGIONS, KEYS, 200, 100)
    d0, d1 = doc["detections"]
    assert doc["_cls"] == "Detections"
    assert d0["bounding_box"] == pytest.approx([0.05, 0.2, 0.5, 0.5])  # relative [x, y, w, h]
    assert d1["bounding_box"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert (d0["label"], d1["label"]) == ("a red car", "person")  # phrase, else category
    assert (d0["region_id"], d1["region_id"], d0["confidence"]) == ("img#r2c0", "img#1", 0.5)
    assert set(DETECTION_ATTRS) <= set(d0)


def _plain(value):
    """A sample's dict without what differs between two writes of the same sample (ids, timestamps)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()
                if k not in ("_id", "id", "_dataset_id", "created_at", "last_modified_at", "_rand")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.mark.slow
def test_raw_documents_read_back_as_the_public_api_writes_them():
    import fiftyone as fo

    fields = {"image_id": "img", "caption": "a red car and a person", "source": "custom", "width": 200,
              "height": 100}
    doc = detections_doc(REGIONS, KEYS, 200, 100)
    public = fo.Dataset()
    dets = [fo.Detection(**{k: v for k, v in d.items() if k not in ("_id", "_cls", "tags", "attributes")})
            for d in doc["detections"]]
    public.add_samples([fo.Sample(filepath="/data/img.jpg", **fields, pseudo=fo.Detections(detections=dets))],
                       validate=True, progress=False)
    ours = fo.Dataset()
    declare_fields(ours, ["pseudo", "gold"])
    insert_samples(ours, [{"filepath": "/data/img.jpg", **fields, "pseudo": doc}])
    ours.reload()

    a, b = public.first(), ours.first()
    assert b.gold is None  # declared, not set
    assert {k: v for k, v in _plain(b.to_dict()).items() if k != "gold"} == _plain(a.to_dict())
    assert isinstance(b.pseudo, fo.Detections) and isinstance(b.pseudo.detections[0], fo.Detection)
    assert b.pseudo.detections[0].bounding_box == pytest.approx([0.05, 0.2, 0.5, 0.5])
    assert b.created_at is not None and b.last_modified_at is not None and b.media_type == "image"
    # the top-level schema FiftyOne made for its own sample is the one declared here (plus the empty 'gold')
    schema_a, schema_b = public.get_field_schema(), ours.get_field_schema()
    assert {k: type(v) for k, v in schema_a.items()} == {k: type(v) for k, v in schema_b.items() if k != "gold"}
    # the declared detection attributes are filterable through the public API
    assert ours.count("pseudo.detections") == 2
    assert ours.filter_labels("pseudo", fo.ViewField("det_score") > 0.5).count("pseudo.detections") == 1
    assert ours.distinct("pseudo.detections.region_id") == sorted(KEYS)
    # a label field set later on existing samples, by image id
    set_label_field(ours, "gold", {"img": detections_doc(REGIONS[1:], KEYS[1:], 200, 100)})
    ours.reload()
    assert [d.label for d in ours.first().gold.detections] == ["person"]
    assert ours.first().last_modified_at >= b.last_modified_at
