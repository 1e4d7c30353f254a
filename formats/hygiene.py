"""Dataset hygiene across dataset directories, in duckdb: exact-duplicate images, evaluation leakage, samples.

An image is known by *keys*, all computed from what records carry:

- ``sha256:<hex>`` when the record has the image's sha256 (img2dataset sources);
- ``coco:<id>`` for COCO photos: COCO 2017 / LVIS image ids, MDETR ``original_id`` of COCO-sourced captions
  (RefCOCO/+/g, gRefCOCO, the mixed set's ``data_source = 'coco'``), and file names such as
  ``COCO_train2014_000000123456.jpg`` or ``train2017/000000123456.jpg``;
- ``vg:<id>`` for Visual Genome / GQA photos (``data_source = 'vg'``);
- ``flickr:<id>`` for Flickr30k photos (``original_img_id``, or ``<id>.jpg`` names in Flickr sources);
- ``file:<image_root>/<file_name>`` always (file identity).

`leakage` removes training records sharing any key with an evaluation set. `dedup` keeps each image in
the first dataset (argument order) that has it, by its primary key (sha256 where known, else file
identity), and within one dataset drops later records repeating an earlier one's image and caption.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from formats.dataset import (
    Dataset,
    DatasetError,
    DatasetWriter,
    Manifest,
    atomic_write_json,
    derived_manifest,
    prior_run,
)
from formats.query import connect, register_records

log = logging.getLogger("ovlabel.hygiene")

COCO_SOURCES = ("coco2017", "lvis_v1")
REFCOCO_NAMES = ("refcoco", "refcoco+", "refcocog", "grefcoco")
_COCO_NAME = r"(?:COCO_(?:train|val|test)2014_|(?:train|val|test)2017/)0*([0-9]+)\.jpg$"


def _q(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def key_sql(ds: Dataset, view: str) -> str:
    """SQL selecting (image_id, key) for every identity key of every record in `view`."""
    cols = set(ds.manifest.extra_columns)
    root = ds.manifest.image_root or str(ds.root.resolve())
    src = ds.manifest.source.lower()
    parts = [f"SELECT image_id, 'file:' || {_q(root)} || '/' || file_name AS key FROM {view}"]
    if "sha256" in cols:
        parts.append(f"SELECT image_id, 'sha256:' || sha256 FROM {view} WHERE sha256 IS NOT NULL")
    parts.append(f"""SELECT image_id, 'coco:' || CAST(CAST(regexp_extract(file_name, '{_COCO_NAME}', 1) AS BIGINT) AS VARCHAR)
                     FROM {view} WHERE regexp_matches(file_name, '{_COCO_NAME}')""")
    if src in COCO_SOURCES:
        parts.append(f"SELECT image_id, 'coco:' || split_part(image_id, '/', -1) FROM {view}")
    if "original_id" in cols:
        ds_src = "data_source" if "data_source" in cols else "NULL"
        ds_name = "lower(dataset_name)" if "dataset_name" in cols else "NULL"
        refcoco = ", ".join(_q(n) for n in REFCOCO_NAMES)
        parts.append(f"""SELECT image_id, coalesce({ds_src}, CASE WHEN {ds_name} IN ({refcoco}) THEN 'coco' END)
                                 || ':' || CAST(original_id AS VARCHAR)
                         FROM {view} WHERE original_id IS NOT NULL
                           AND coalesce({ds_src}, CASE WHEN {ds_name} IN ({refcoco}) THEN 'coco' END) IS NOT NULL""")
    if "original_img_id" in cols:
        parts.append(f"SELECT image_id, 'flickr:' || CAST(original_img_id AS VARCHAR) FROM {view} "
                     "WHERE original_img_id IS NOT NULL")
    if "flickr" in src:
        parts.append(f"""SELECT image_id, 'flickr:' || regexp_extract(file_name, '^([0-9]+)\\.jpg$', 1) FROM {view}
                         WHERE regexp_matches(file_name, '^[0-9]+\\.jpg$')""")
    return " UNION ALL ".join(parts)


def primary_key_sql(ds: Dataset, view: str) -> str:
    """SQL selecting (image_id, key, caption, ord): the dedup key, sha256 where known, else file identity."""
    root = ds.manifest.image_root or str(ds.root.resolve())
    file_key = f"'file:' || {_q(root)} || '/' || file_name"
    key = f"coalesce('sha256:' || sha256, {file_key})" if "sha256" in ds.manifest.extra_columns else file_key
    return f"SELECT image_id, {key} AS key, caption, _ord FROM {view}"


def write_filtered(src: Dataset, out: str | os.PathLike, keep_sql: str, con: duckdb.DuckDBPyConnection,
                   config: dict, resume_key: dict, report: dict, *, overwrite: bool = False) -> Manifest:
    """Writes the records of `src` whose image_id is in ``keep_sql`` (a query over `con`) as a new dataset."""
    m = src.manifest
    writer = DatasetWriter(out, derived_manifest(src, config, derived_from=m.provenance), overwrite=overwrite,
                           resume_key=resume_key)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _keep AS {keep_sql}")
    for path, part in zip(src.part_paths, m.parts):
        name = part["name"]
        if writer.is_done(name):
            continue
        t = con.sql(f"""SELECT r.* FROM read_parquet({_q(path)}, file_row_number = true) r
                        SEMI JOIN _keep k USING (image_id) ORDER BY r.file_row_number""").to_arrow_table()
        t = t.drop_columns(["file_row_number"])
        writer.write_part(name, t.cast(pq_schema(path)), validate=False)
    atomic_write_json(Path(out) / "report.json", report)
    return writer.finish({"images_in": m.totals()["images"], "images": writer.manifest.totals()["images"],
                          "removed": report.get("removed", 0)})


def pq_schema(path: Path) -> pa.Schema:
    import pyarrow.parquet as pq

    return pq.read_schema(path).remove_metadata()


def _dataset(path: str | os.PathLike) -> Dataset:
    return Dataset(path).require_complete()


def _fingerprint_inputs(dsets: list[Dataset]) -> list:
    return [(str(d.root.resolve()), d.manifest.config.get("_resume_key"), [p["name"] for p in d.manifest.parts])
            for d in dsets]


# -- leakage ---------------------------------------------------------------------------------------------

def leakage(train_dir: str | os.PathLike, eval_dirs: list[str | os.PathLike], out: str | os.PathLike, *,
            overwrite: bool = False, examples: int = 20) -> dict:
    """Writes `train_dir` without the records whose image is in any evaluation set; returns the report."""
    train = _dataset(train_dir)
    evals = [_dataset(e) for e in eval_dirs]
    resume_key = {"op": "leakage", "inputs": _fingerprint_inputs([train, *evals])}
    done = prior_run(out, resume_key, overwrite)
    if done is not None:
        return json.loads((Path(out) / "report.json").read_text())
    con = connect()
    register_records(con, train, "train")
    con.execute(f"CREATE TEMP TABLE train_keys AS {key_sql(train, 'train')}")
    per_eval = []
    for k, e in enumerate(evals):
        register_records(con, e, f"eval{k}")
        con.execute(f"CREATE TEMP TABLE eval{k}_keys AS SELECT DISTINCT key FROM ({key_sql(e, f'eval{k}')})")
        hits = con.execute(f"""SELECT t.key, count(DISTINCT t.image_id) FROM train_keys t
                               SEMI JOIN eval{k}_keys USING (key)
                               GROUP BY split_part(t.key, ':', 1), t.key""").fetchall()
        by_kind: dict[str, int] = {}
        for key, _ in hits:
            kind = key.split(":", 1)[0]
            by_kind[kind] = by_kind.get(kind, 0) + 1
        leaked = con.execute(f"""SELECT count(DISTINCT image_id) FROM train_keys
                                 SEMI JOIN eval{k}_keys USING (key)""").fetchone()[0]
        per_eval.append({"eval": str(e.root.resolve()), "records_removed": int(leaked),
                         "images_matched_by": dict(sorted(by_kind.items()))})
    union = " UNION ".join(f"SELECT key FROM eval{k}_keys" for k in range(len(evals)))
    con.execute(f"CREATE TEMP TABLE leaked AS SELECT DISTINCT image_id FROM train_keys WHERE key IN ({union})")
    removed = con.execute("SELECT count(*) FROM leaked").fetchone()[0]
    sample = [r[0] for r in con.execute(f"SELECT image_id FROM leaked ORDER BY image_id LIMIT {int(examples)}").fetchall()]
    report = {"train": str(train.root.resolve()), "removed": int(removed), "per_eval": per_eval, "examples": sample}
    keep = "SELECT image_id FROM train ANTI JOIN leaked USING (image_id)"
    write_filtered(train, out, keep, con, {"op": "leakage", "against": [str(e.root.resolve()) for e in evals]},
                   resume_key, report, overwrite=overwrite)
    return report


# -- dedup -----------------------------------------------------------------------------------------------

def dedup(dirs: list[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Writes each dataset under `out/<name>/` without duplicate images; returns the report (also report.json)."""
    dsets = [_dataset(d) for d in dirs]
    out = Path(out)
    names = _unique_names(dsets)
    con = connect()
    for k, d in enumerate(dsets):
        register_records(con, d, f"d{k}", with_order=True)
    union = " UNION ALL ".join(f"SELECT {k} AS src, * FROM ({primary_key_sql(d, f'd{k}')})"
                               for k, d in enumerate(dsets))
    con.execute(f"CREATE TEMP TABLE keys AS {union}")
    # the first dataset holding an image keeps it; inside it, the first record of each (image, caption)
    con.execute("""CREATE TEMP TABLE ranked AS SELECT src, image_id, key,
                   min(src) OVER (PARTITION BY key) AS owner,
                   row_number() OVER (PARTITION BY src, key, caption ORDER BY _ord) AS nth FROM keys""")
    report = {"inputs": [], "removed": 0}
    for k, d in enumerate(dsets):
        across = con.execute(f"SELECT count(*) FROM ranked WHERE src = {k} AND owner < {k}").fetchone()[0]
        within = con.execute(f"SELECT count(*) FROM ranked WHERE src = {k} AND owner = {k} AND nth > 1").fetchone()[0]
        report["inputs"].append({"dataset": str(d.root.resolve()), "out": str(out / names[k]),
                                 "records": d.manifest.totals()["images"],
                                 "removed_seen_in_earlier_dataset": int(across), "removed_repeated_within": int(within)})
        report["removed"] += int(across + within)
    for k, d in enumerate(dsets):
        sub = out / names[k]
        resume_key = {"op": "dedup", "inputs": _fingerprint_inputs(dsets), "index": k}
        if prior_run(sub, resume_key, overwrite) is not None:
            continue
        r = report["inputs"][k]
        keep = f"SELECT image_id FROM ranked WHERE src = {k} AND owner = {k} AND nth = 1"
        write_filtered(d, sub, keep, con, {"op": "dedup", "inputs": [str(x.root.resolve()) for x in dsets]},
                       resume_key, {**r, "removed": r["removed_seen_in_earlier_dataset"] + r["removed_repeated_within"]},
                       overwrite=overwrite)
    atomic_write_json(out / "report.json", report)
    return report


def _unique_names(dsets: list[Dataset]) -> list[str]:
    names: list[str] = []
    for d in dsets:
        base = d.root.resolve().name or "dataset"
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}-{i}"
        names.append(name)
    return names


# -- split -----------------------------------------------------------------------------------------------

@dataclass
class SplitConfig:
    """A deterministic sample: `n` records (-1: all) chosen by a seeded hash of the image id."""

    n: int
    seed: int = 0


def split(dataset_dir: str | os.PathLike, out: str | os.PathLike, cfg: SplitConfig, *, overwrite: bool = False) -> dict:
    """Writes a deterministic sample of `dataset_dir` (stored order kept); returns what was chosen.

    Raises `DatasetError` when ``cfg.n`` is below -1 (before anything is read or written)."""
    if cfg.n < -1:
        raise DatasetError(f"--n must be -1 (all) or a count, not {cfg.n}")
    ds = _dataset(dataset_dir)
    total = ds.manifest.totals()["images"]
    n = total if cfg.n == -1 else cfg.n
    if n > total:
        log.warning("%s has %d records; --n %d takes them all", dataset_dir, total, cfg.n)
        n = total
    resume_key = {"op": "split", "config": asdict(cfg), "inputs": _fingerprint_inputs([ds])}
    if prior_run(out, resume_key, overwrite) is not None:
        return json.loads((Path(out) / "report.json").read_text())
    con = connect()
    register_records(con, ds, "src")
    keep = f"SELECT image_id FROM src ORDER BY md5({int(cfg.seed)}::VARCHAR || ':' || image_id), image_id LIMIT {int(n)}"
    report = {"dataset": str(ds.root.resolve()), "records": total, "chosen": n, "seed": cfg.seed,
              "removed": total - n}
    write_filtered(ds, out, keep, con, {"op": "split", **asdict(cfg)}, resume_key, report, overwrite=overwrite)
    return report
