"""The one place ovlabel writes FiftyOne's documents itself: sample and label documents in bulk.

FiftyOne's public bulk path (``Dataset.add_samples(samples, validate=False)``) still builds a mongoengine
document per detection; measured on the review benchmark (`benchmarks/review_build.py`, docs/benchmarks.md)
it is several times slower than inserting the documents FiftyOne would write, well past the 1.5x the review
build may cost. So the review build writes raw documents, and everything that depends on FiftyOne's storage
layout is here, small and checked:

- `check_version` refuses a FiftyOne outside the versions whose layout this module was checked against
  (`TESTED`, the range pyproject.toml allows);
- the contract test (tests/workflows/test_fiftyone_docs.py) builds the same sample through FiftyOne's public
  ``add_samples`` and through this module and requires equal samples, fields and schema, read back through
  the public API: a FiftyOne upgrade that changes the layout fails there, not in a reviewer's App.

Everything else (loading datasets, views, tags, evaluation, the App) uses FiftyOne's public API.
"""

from __future__ import annotations

import datetime as dt
import random

from formats.boxes import xyxy_to_relative_xywh

# the FiftyOne versions whose document layout the contract test checks: [low, high)
TESTED = ((1, 22), (2, 0))

# detection attributes ovlabel adds to FiftyOne's Detection (declared so the App can filter on them)
DETECTION_ATTRS = {"phrase": "str", "category": "str", "det_score": "float", "clip_score": "float", "origin": "str",
                   "round": "int", "region_id": "str", "ovl_box": "list", "ovl_label": "str"}
SAMPLE_FIELDS = (("image_id", "str"), ("caption", "str"), ("source", "str"), ("width", "int"), ("height", "int"))


class FiftyOneVersionError(RuntimeError):
    """The installed FiftyOne is outside `TESTED`."""


def check_version(version: str | None = None) -> None:
    """Raises FiftyOneVersionError when FiftyOne `version` (default: the installed one) is outside `TESTED`."""
    if version is None:
        import fiftyone

        version = fiftyone.__version__
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    (lo, hi) = TESTED
    if len(parts) < 2 or not lo <= parts < hi:
        raise FiftyOneVersionError(
            f"FiftyOne {version} is not one ovlabel's review documents were checked against "
            f"({'.'.join(map(str, lo))} <= version < {'.'.join(map(str, hi))}); install a version in that range "
            "(pip install 'fiftyone>=1.22,<2')")


def detections_doc(regions: list[dict], keys: list[str], width: int, height: int) -> dict:
    """A ``Detections`` label document as FiftyOne stores it, from regions (``bbox`` xyxy pixels of an image
    `width` x `height`) and their region keys: one ``Detection`` per region, ``bounding_box`` relative
    ``[x, y, w, h]`` in 0..1 (`formats.boxes.xyxy_to_relative_xywh`), label the phrase, else the category,
    else ``object``, ``confidence`` the region's score, and `DETECTION_ATTRS`. ``ovl_box`` / ``ovl_label``
    keep the box and label as built, so a reviewer's edit is seen against them."""
    from bson import ObjectId

    dets = []
    for reg, key in zip(regions or [], keys):
        box = xyxy_to_relative_xywh(reg["bbox"], width, height)[0].tolist()
        label = reg.get("phrase") or reg.get("category") or "object"
        dets.append({"_id": ObjectId(), "_cls": "Detection", "tags": [], "attributes": {}, "label": label,
                     "bounding_box": box, "confidence": reg.get("score"), "phrase": reg.get("phrase"),
                     "category": reg.get("category"), "det_score": reg.get("det_score"),
                     "clip_score": reg.get("clip_score"), "origin": reg.get("origin"), "round": reg.get("round"),
                     "region_id": key, "ovl_box": box, "ovl_label": label})
    return {"_cls": "Detections", "detections": dets}


def declare_fields(fds, label_fields: list[str]) -> None:
    """Declares on FiftyOne dataset `fds` (public API) the sample fields (`SAMPLE_FIELDS`) and, for each of
    `label_fields`, a ``Detections`` field with `DETECTION_ATTRS`, so the App can filter on them."""
    import fiftyone as fo

    check_version()
    kinds = {"str": fo.StringField, "float": fo.FloatField, "int": fo.IntField, "list": fo.ListField}
    schema = fds.get_field_schema()
    for name, kind in SAMPLE_FIELDS:
        if name not in schema:
            fds.add_sample_field(name, kinds[kind])
    for f in label_fields:
        if f not in schema:
            fds.add_sample_field(f, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
        for attr, kind in DETECTION_ATTRS.items():
            path = f"{f}.detections.{attr}"
            if fds.get_field(path) is None:
                if kind == "list":
                    fds.add_sample_field(path, fo.ListField, subfield=fo.FloatField)
                else:
                    fds.add_sample_field(path, kinds[kind])


def insert_samples(fds, docs: list[dict]) -> None:
    """Bulk-inserts sample documents into `fds` in one round trip: each doc holds ``filepath``, the
    declared sample fields and label fields as `detections_doc` makes them; the bookkeeping fields FiftyOne
    sets on every sample are added here. The fields must be declared first (`declare_fields`)."""
    check_version()
    now_ = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for d in docs:
        d.update({"_dataset_id": fds._doc.id, "_media_type": "image", "_rand": random.random(), "tags": [],
                  "metadata": None, "created_at": now_, "last_modified_at": now_})
    fds._sample_collection.insert_many(docs, ordered=False)


def set_label_field(fds, field: str, values: dict[str, dict]) -> None:
    """Sets label `field` (declared) on existing samples of `fds`, by their ``image_id`` (bulk, 5,000
    updates a round trip); `values` maps image id -> a `detections_doc`."""
    from pymongo import UpdateOne

    check_version()
    now_ = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    ops = [UpdateOne({"image_id": k}, {"$set": {field: v, "last_modified_at": now_}}) for k, v in values.items()]
    for a in range(0, len(ops), 5000):
        fds._sample_collection.bulk_write(ops[a:a + 5000], ordered=False)
