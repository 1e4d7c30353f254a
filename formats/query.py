"""duckdb over dataset directories: one place that opens records as a SQL view, plus `ovlabel stats`.

Datasets on an object store (``s3://``, ``gs://``) are read through their fsspec filesystem, registered on the
connection (`formats.storage.Folder.register`, duckdb's ``register_filesystem``), so no duckdb extension or
second set of credentials is needed."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from formats import schema as S
from formats.boxes import register_sql_macros
from formats.dataset import RECORDS, Dataset

_DUCK = {pa.float64(): "DOUBLE", pa.float32(): "FLOAT", pa.int32(): "INTEGER", pa.int16(): "SMALLINT",
         pa.string(): "VARCHAR"}


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory duckdb connection, with the box macros of `formats.boxes.SQL_MACROS`."""
    con = duckdb.connect()
    register_sql_macros(con)  # xyxy_to_xywh, xyxy_area, normalized_to_pixels (formats.boxes)
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def sql_list(paths) -> str:
    """A duckdb list literal of file paths."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def register_records(con: duckdb.DuckDBPyConnection, ds: Dataset, name: str = "records", *,
                     with_order: bool = False) -> None:
    """Creates view `name` over the dataset's records.

    Rows come in stored order (duckdb preserves insertion order across the listed parts); `with_order`
    adds `_ord`, the 0-based record position, for queries that reorder and need the position itself.
    Parts of an older format version are seen in the current layout (`upgrade_regions_sql`).
    """
    paths = ds.part_paths
    if not paths:
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM (SELECT NULL::VARCHAR AS image_id, "
                    "0::BIGINT AS _ord) WHERE false")
        return
    ds.folder.register(con)
    upgrade = upgrade_regions_sql(ds.folder.parquet_schema(f"{RECORDS}/{ds.manifest.parts[0]['name']}"))
    if not with_order:
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT *{upgrade} FROM read_parquet({sql_list(paths)})")
        return
    offsets, at = [], 0
    for p, part in zip(paths, ds.manifest.parts):
        offsets.append(f"('{str(p).replace(chr(39), chr(39) * 2)}', {at})")
        at += int(part["rows"])
    con.execute(f"CREATE OR REPLACE TEMP TABLE _{name}_parts AS SELECT * FROM (VALUES {', '.join(offsets)}) t(filename, first)")
    con.execute(
        f"""CREATE OR REPLACE VIEW {name} AS
        SELECT r.* EXCLUDE (filename, file_row_number){upgrade}, p.first + r.file_row_number AS _ord
        FROM read_parquet({sql_list(paths)}, filename = true, file_row_number = true) r
        JOIN _{name}_parts p USING (filename)"""
    )


def upgrade_regions_sql(schema: pa.Schema) -> str:
    """A ``REPLACE (...)`` clause giving an older layout's `regions` the fields it lacks (null), or ""."""
    if "regions" not in schema.names:
        return ""
    missing = S.missing_region_fields(schema.field("regions").type)
    if not missing:
        return ""
    added = ", ".join(f"{f.name} := NULL::{_DUCK[f.type]}" for f in missing)
    return f" REPLACE (list_transform(regions, lambda g: struct_insert(g, {added})) AS regions)"


def register_rejects(con: duckdb.DuckDBPyConnection, ds: Dataset, name: str = "rejects") -> None:
    """Creates view `name` over the dataset's rejects (file, record, reason, detail)."""
    paths = ds.reject_paths
    if paths:
        ds.folder.register(con)
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({sql_list(paths)})")
    else:
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT NULL::VARCHAR AS file, NULL::VARCHAR AS record, "
                    "NULL::VARCHAR AS reason, NULL::VARCHAR AS detail WHERE false")


def stats(dataset_dir: str, top: int = 20) -> dict:
    """Summary of a dataset directory: images, boxes (every region, crowd / ignore regions included and also
    counted apart in `ignore_regions`), boxes per image, top labels, box sizes (px² of the box), rejects."""
    ds = Dataset(dataset_dir)
    con = connect()
    register_records(con, ds)
    register_rejects(con, ds)
    m = ds.manifest
    base = con.execute("""
        SELECT count(*) AS images,
               coalesce(sum(len(coalesce(regions, []))), 0) AS boxes,
               count(*) FILTER (WHERE len(coalesce(regions, [])) = 0) AS images_without_boxes,
               count(caption) AS captions
        FROM records""").fetchone()
    per = con.execute("""
        SELECT min(n), quantile_cont(n, 0.5), avg(n), quantile_cont(n, 0.99), max(n)
        FROM (SELECT len(coalesce(regions, [])) AS n FROM records)""").fetchone()
    con.execute("""CREATE TEMP TABLE boxes AS
        SELECT r.label AS label, coalesce(r.category, r.phrase) AS name, r.origin AS origin,
               (r.bbox[3] - r.bbox[1]) * (r.bbox[4] - r.bbox[2]) AS area,
               (r.bbox[3] - r.bbox[1]) * (r.bbox[4] - r.bbox[2]) / (width * height) AS rel_area, r.score AS score
        FROM (SELECT width, height, unnest(regions) AS r FROM records)""")
    top_names = con.execute(f"SELECT name, count(*) AS n FROM boxes GROUP BY name ORDER BY n DESC, name LIMIT {int(top)}").fetchall()
    sizes = con.execute("""
        SELECT count(*) FILTER (WHERE area < 32*32), count(*) FILTER (WHERE area >= 32*32 AND area < 96*96),
               count(*) FILTER (WHERE area >= 96*96),
               quantile_cont(rel_area, [0.1, 0.5, 0.9])
        FROM boxes""").fetchone()
    origins = dict(con.execute("SELECT origin, count(*) FROM boxes GROUP BY origin ORDER BY origin").fetchall())
    ignore = {o: origins[o] for o in S.IGNORE_ORIGINS if o in origins}
    rejects = dict(con.execute("SELECT reason, count(*) FROM rejects GROUP BY reason ORDER BY count(*) DESC, reason").fetchall())
    return {
        "dataset": str(ds.root), "kind": m.kind, "source": m.source, "complete": m.complete,
        "images": base[0], "boxes": int(base[1]), "images_without_boxes": base[2], "captions": base[3],
        "categories": len(m.categories),
        "boxes_per_image": dict(zip(["min", "median", "mean", "p99", "max"],
                                    [None if v is None else round(float(v), 3) for v in per])),
        "top": [{"name": n, "boxes": c} for n, c in top_names],
        "box_sizes": {"small (<32^2 px)": sizes[0], "medium": sizes[1], "large (>=96^2 px)": sizes[2],
                      "relative_area_p10_p50_p90": [round(x, 5) for x in (sizes[3] or [])]},
        "origins": origins,
        "ignore_regions": ignore,  # crowd / ignore regions: counted in `boxes`, never trained on
        "rejects": rejects,
        "drops_and_rejects_at_conversion": {k: m.counts[k] for k in ("dropped", "rejected") if k in m.counts},
    }


def format_stats(s: dict) -> str:
    """Human-readable table of `stats()`."""
    lines = [f"dataset  {s['dataset']}  ({s['kind']}, source {s['source']}{'' if s['complete'] else ', INCOMPLETE'})",
             f"images   {s['images']:,}  (without boxes: {s['images_without_boxes']:,}; with captions: {s['captions']:,})",
             f"boxes    {s['boxes']:,}  categories {s['categories']:,}",
             "boxes/image  " + "  ".join(f"{k} {v}" for k, v in s["boxes_per_image"].items()),
             "box sizes    " + "  ".join(f"{k} {v}" for k, v in s["box_sizes"].items()),
             "origins      " + ("  ".join(f"{k} {v:,}" for k, v in s["origins"].items()) or "-"),
             "ignore regions (evaluation only, never trained on)  "
             + ("  ".join(f"{k} {v:,}" for k, v in s["ignore_regions"].items()) or "-"),
             "top categories/phrases:"]
    width = max([len(str(t["name"])) for t in s["top"]] + [4])
    lines += [f"  {str(t['name']):<{width}}  {t['boxes']:,}" for t in s["top"]]
    lines.append("rejects by reason:" if s["rejects"] else "rejects: none")
    lines += [f"  {r}: {n:,}" for r, n in s["rejects"].items()]
    return "\n".join(lines)
