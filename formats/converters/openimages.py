"""Open Images v6 box CSVs -> ODVG OD dataset (duckdb over the CSVs).

Inputs in ANN_DIR: ``*{split}-annotations-bbox.csv`` (ImageID, LabelName, XMin, XMax, YMin, YMax,
IsGroupOf, ...; coordinates in 0..1) and ``class-descriptions-boxable.csv`` (LabelName, DisplayName; with
or without a header). Labels follow the class-description order. Boxes are grouped by ImageID in SQL, so
an unsorted CSV still gives one record per image (MMDetection's ``openimages2odvg.py`` writes one record
per run of equal ImageIDs). Image sizes come from a sizes file (ImageID,width,height) or from the image
headers, read in parallel without decoding the pixels.

A CSV line is a record: a malformed line (missing or extra fields, bytes that are not UTF-8) is rejected
with its line number (the physical line where the record starts, blank lines and quoted newlines
counted) and duckdb's reason (``read_csv(..., store_rejects=true)``) and the rest converts.
Coordinates outside 0..1 are clipped to the image and counted (``boxes_clipped``) and a box with no area
inside the image is dropped (``no overlap with image``), by the rule of every converter
(`formats.boxes.clip_to_image`); an inverted or non-numeric box is rejected (``invalid box``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats import schema as S
from formats.arrow_np import from_numpy
from formats.boxes import NO_OVERLAP, clip_to_image
from formats.converters.coco import ConversionError
from formats.converters.common import Rejects
from formats.dataset import DatasetWriter, Manifest, input_entry, part_ranges, prior_run, provenance
from formats.images import image_size_under
from formats.query import connect
from formats.storage import Folder, display, shown, split_location

log = logging.getLogger("ovlabel.openimages")

GROUP_OF = ("keep", "drop")
_VALID_ID = "regexp_full_match(image_id, '[0-9A-Za-z_-]+')"  # an ImageID is a file name: no path parts


@dataclass
class OpenImagesConvertConfig:
    """Settings of an Open Images conversion; recorded in the manifest."""

    source: str = "openimages_v6"
    image_root: str | None = None
    split: str = "train"
    group_of: str = "keep"
    sizes: str | None = None
    part_images: int = 100_000


def find_inputs(ann_dir: Folder, split: str) -> tuple[str, str]:
    """The names of the box CSV of `split` and of the class descriptions in `ann_dir` (local or on a store).

    Raises `ConversionError` unless there is exactly one box CSV of `split` and a class-descriptions file."""
    names = ann_dir.list()
    boxes = fnmatch.filter(names, f"*{split}-annotations-bbox.csv")
    classes = fnmatch.filter(names, "*class-descriptions-boxable.csv") or fnmatch.filter(names, "*class-descriptions.csv")
    if len(boxes) != 1:
        raise ConversionError(f"{ann_dir.url}: expected one *{split}-annotations-bbox.csv, found {len(boxes)}")
    if not classes:
        raise ConversionError(f"{ann_dir.url}: no class-descriptions-boxable.csv")
    return boxes[0], classes[0]


def convert_openimages(ann_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: OpenImagesConvertConfig, *,
                       overwrite: bool = False) -> Manifest:
    """Converts Open Images box annotations of one split into an ODVG OD dataset directory.

    `ann_dir`, ``cfg.image_root``, ``cfg.sizes`` and `out_dir` may be local paths or object-store URLs
    (`formats.storage`): CSVs on a store are copied to local temp files for duckdb, image headers are read
    with range requests. Raises `ConversionError` (bad settings or CSVs; a message names the file by its path
    or URL), `formats.storage.StorageError` (an unusable location)."""
    folder = Folder(ann_dir)
    if cfg.group_of not in GROUP_OF:
        raise ConversionError(f"--group-of must be one of {GROUP_OF}, not {cfg.group_of!r}")
    if cfg.image_root is None and cfg.sizes is None:
        raise ConversionError("give --image-root (sizes are read from the image headers) or --sizes")
    image_root_at = cfg.image_root  # read from where it was given (a URL's credentials kept for reading)
    cfg.image_root = display(cfg.image_root) if cfg.image_root else None
    box_name, class_name = find_inputs(folder, cfg.split)
    files = [(folder, box_name), (folder, class_name)] + ([split_location(cfg.sizes)] if cfg.sizes else [])
    with ExitStack() as stack:
        local = [stack.enter_context(f.local_copy(n)) for f, n in files]
        shown_as = {str(p): (str(Path(f.path) / n) if f.is_local else f.url_of(n)) for p, (f, n) in zip(local, files)}
        inputs = [input_entry(p) | ({} if f.is_local else {"path": f.url_of(n)}) for p, (f, n) in zip(local, files)]
        if cfg.sizes:
            cfg.sizes = str(shown(cfg.sizes))  # recorded without credentials
        try:
            return _convert(local, shown_as[str(local[0])], inputs, out_dir, cfg, image_root_at, overwrite)
        except ConversionError as e:  # name the inputs as given, not their temp copies
            message = str(e)
            for tmp, name in shown_as.items():
                message = message.replace(tmp, name)
            raise ConversionError(message) from None


def _convert(local: list[Path], box_name: str, inputs: list[dict], out_dir, cfg: OpenImagesConvertConfig, image_root_at,
             overwrite: bool) -> Manifest:
    """`convert_openimages` once its CSVs are local files (`local`: boxes, classes, sizes when given;
    `box_name`: the box CSV as rejects name it)."""
    box_csv, class_csv = local[0], local[1]
    resume_key = {"config": asdict(cfg), "inputs": [(i["path"], i["sha256"]) for i in inputs]}
    done = prior_run(out_dir, resume_key, overwrite)
    if done is not None:
        return done

    con = connect()  # with the box macros (formats.boxes.SQL_MACROS)
    cats = _categories(con, class_csv)
    con.execute("CREATE TABLE classes AS SELECT * FROM (VALUES " + ", ".join(
        f"({c['label']}, '{c['id']}')" for c in cats) + ") t(label, mid)")
    rej = Rejects(box_name)
    _load_boxes(con, box_csv, rej)
    clipped = _reject_boxes(con, cfg, rej)
    images = con.sql("SELECT image_id FROM good GROUP BY image_id ORDER BY image_id").to_arrow_table()
    ids = images.column("image_id").to_pylist()
    sizes = _sizes(con, ids, local[2] if cfg.sizes else None, image_root_at, rej)
    con.register("sizes_t", sizes)
    t = con.sql("""
        SELECT g.image_id, s.width, s.height,
               list(g.label ORDER BY g.line) AS labels, list(g.mid ORDER BY g.line) AS mids,
               list(normalized_to_pixels([g.xmin, g.ymin, g.xmax, g.ymax], s.width, s.height) ORDER BY g.line) AS boxes
        FROM good g JOIN sizes_t s USING (image_id)
        GROUP BY g.image_id, s.width, s.height ORDER BY g.image_id""").to_arrow_table()

    manifest = Manifest(kind="od", source=cfg.source, image_root=cfg.image_root, categories=cats,
                        config=asdict(cfg), provenance=provenance(inputs))
    writer = DatasetWriter(out_dir, manifest, overwrite=True, resume_key=resume_key)
    names = pa.array([c["name"] for c in cats], pa.string())
    for p, (a, b) in enumerate(part_ranges(t.num_rows, cfg.part_images)):
        part = t.slice(a, b - a)
        labels = part.column("labels").combine_chunks()
        lab = labels.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
        boxes = part.column("boxes").combine_chunks().flatten().flatten().to_numpy(zero_copy_only=False)
        offsets = labels.offsets.to_numpy() - labels.offsets.to_numpy()[0]
        regions = S.regions_from_columns(offsets, boxes.reshape(-1, 4), label=lab,
                                         category=names.take(from_numpy(lab)), origin="gold")
        n = part.num_rows
        ids_p = part.column("image_id")
        table = pa.table({
            "image_id": pc.binary_join_element_wise(f"{cfg.source}/", ids_p, ""),
            "source": pa.repeat(pa.scalar(cfg.source), n),
            "file_name": pc.binary_join_element_wise(ids_p, ".jpg", ""),
            "width": part.column("width"), "height": part.column("height"),
            "caption": pa.nulls(n, pa.string()), "regions": regions,
        })
        writer.write_part(f"part-{p:05d}.parquet", S.conform(table, []))
    writer.write_rejects("part-00000.parquet", rej.rows)
    n_in = con.execute("SELECT count(*), count(DISTINCT image_id) FROM boxes").fetchone()
    malformed = rej.rejected.get("malformed CSV line", 0)
    return writer.finish({
        "images_in": int(n_in[1]), "images": t.num_rows, "boxes_in": int(n_in[0]) + malformed,
        "boxes_clipped": clipped,
        "boxes": int(sum(p["boxes"] for p in writer.manifest.parts)), "categories": len(cats),
        "dropped": dict(sorted(rej.dropped.items())), "rejected": dict(sorted(rej.rejected.items())),
    })


def _categories(con: duckdb.DuckDBPyConnection, class_csv: Path) -> list[dict]:
    with class_csv.open(encoding="utf-8-sig") as f:  # a BOM is no part of the header (duckdb drops it too)
        first = f.readline()
    header = first.lower().startswith("labelname")
    try:
        rows = con.execute(f"""SELECT * FROM read_csv('{class_csv}', header={str(header).lower()},
                               columns={{'mid': 'VARCHAR', 'name': 'VARCHAR'}})""").fetchall()
    except duckdb.Error as e:
        raise ConversionError(f"{class_csv}: not a LabelName,DisplayName CSV: {_short(e)}") from None
    seen: set[str] = set()
    cats = []
    for mid, name in rows:
        if mid is None or name is None or mid in seen or "'" in mid:
            raise ConversionError(f"{class_csv}: row {len(cats) + 1 + header}: invalid or repeated class {mid!r}")
        seen.add(mid)
        cats.append({"label": len(cats), "name": name, "id": mid})
    return cats


def _short(e: Exception) -> str:
    """The first line of a duckdb error (its CSV errors carry a 30-line parser dump after it)."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _load_boxes(con: duckdb.DuckDBPyConnection, box_csv: Path, rej: Rejects) -> None:
    """Table `boxes` (line, image_id, mid, coordinates, group_of); malformed lines rejected with their number."""
    try:
        con.execute(f"""CREATE TABLE raw AS SELECT row_number() OVER () - 1 AS k, *
                        FROM read_csv('{box_csv}', header=true, all_varchar=true, store_rejects=true)""")
    except duckdb.Error as e:
        raise ConversionError(f"{box_csv}: unreadable CSV: {_short(e)}") from None
    cols = {r[0].lower(): r[0] for r in con.execute("DESCRIBE raw").fetchall() if r[0] != "k"}
    need = ["imageid", "labelname", "xmin", "xmax", "ymin", "ymax", "isgroupof"]
    missing = [c for c in need if c not in cols]
    if missing:
        raise ConversionError(f"{box_csv}: not an Open Images box CSV (missing {', '.join(missing)})")
    bad = con.execute("""SELECT min(line_byte_position), arg_min(error_type::VARCHAR, column_idx),
                                arg_min(error_message, column_idx), line
                         FROM reject_errors GROUP BY line ORDER BY line""").fetchall()
    n_good = con.execute("SELECT count(*) FROM raw").fetchall()[0][0]
    newlines = _newline_offsets(box_csv)
    # duckdb's `line` counts rows, not the blank lines it skips nor newlines inside quoted fields: the
    # physical line is found from the byte position where the rejected row starts
    bad = [(int(np.searchsorted(newlines, pos)) + 1 if pos is not None else line, kind, msg)
           for pos, kind, msg, line in bad]
    if bad and n_good == 0:
        line, kind, msg = bad[0]
        raise ConversionError(f"{box_csv}: line {line}: {kind.lower()}: {msg} (no line of the file could be read)")
    if bad:
        rej.add_records([f"line {b[0]}" for b in bad], "malformed CSV line", [f"{b[1].lower()}: {b[2]}" for b in bad])
    n_lines = len(newlines) + int(box_csv.stat().st_size > (int(newlines[-1]) + 1 if len(newlines) else 0))
    if n_lines == 1 + n_good + len(bad):  # every line is the header, a row or a rejected row
        rejected = np.array([b[0] for b in bad], dtype=np.int64)
        lines = np.setdiff1d(np.arange(2, 2 + n_good + len(rejected), dtype=np.int64), rejected)[:n_good]
    else:  # blank lines or quoted newlines: number the rows by where each CSV record starts
        lines = np.setdiff1d(_record_start_lines(box_csv)[1:], np.array([b[0] for b in bad], dtype=np.int64))
        if len(lines) != n_good:
            raise ConversionError(f"{box_csv}: cannot number its lines ({len(lines)} records but {n_good} rows read); "
                                  "remove blank lines and newlines inside quoted fields")
    if bad or n_lines != 1 + n_good:
        con.register("good_lines", pa.table({"k": pa.array(np.arange(n_good, dtype=np.int64)), "line": pa.array(lines)}))
        line_sql, join = "l.line", "JOIN good_lines l ON l.k = raw.k"
    else:
        line_sql, join = "raw.k + 2", ""
    con.execute(f"""CREATE TABLE boxes AS SELECT {line_sql} AS line, "{cols['imageid']}" AS image_id,
        "{cols['labelname']}" AS mid,
        TRY_CAST("{cols['xmin']}" AS DOUBLE) AS xmin, TRY_CAST("{cols['xmax']}" AS DOUBLE) AS xmax,
        TRY_CAST("{cols['ymin']}" AS DOUBLE) AS ymin, TRY_CAST("{cols['ymax']}" AS DOUBLE) AS ymax,
        TRY_CAST("{cols['isgroupof']}" AS INTEGER) = 1 AS group_of FROM raw {join}""")


def _newline_offsets(path: Path, chunk: int = 1 << 24) -> np.ndarray:
    """Byte offsets of every ``\\n`` in the file (line k+1 starts after the k-th)."""
    out, at = [], 0
    with path.open("rb") as f:
        while block := f.read(chunk):
            out.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + at)
            at += len(block)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _record_start_lines(path: Path) -> np.ndarray:
    """The physical line (1-based) where each non-blank CSV record starts, the header first (Python's csv
    reader over the bytes as latin-1, so an invalid UTF-8 byte is no error and quotes are parsed as duckdb
    does)."""
    import csv

    csv.field_size_limit(1 << 30)
    starts, prev = [], 0
    with path.open(encoding="latin-1", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            if row:
                starts.append(prev + 1)
            prev = reader.line_num
    return np.asarray(starts, dtype=np.int64)


_FINITE = "isfinite(xmin) AND isfinite(xmax) AND isfinite(ymin) AND isfinite(ymax)"
_OUTSIDE = "xmin < 0 OR ymin < 0 OR xmax > 1 OR ymax > 1"  # the boxes `clip_to_image` can change or empty


def _reject_boxes(con: duckdb.DuckDBPyConnection, cfg: OpenImagesConvertConfig, rej: Rejects) -> int:
    """Table `good` (boxes clipped to 0..1 by `formats.boxes.clip_to_image`); bad boxes rejected or dropped by
    reason, in line order within each reason. Returns how many were clipped."""
    checks = [
        ("invalid ImageID", f"image_id IS NULL OR NOT ({_VALID_ID})", False),
        ("unknown LabelName", "mid NOT IN (SELECT mid FROM classes) OR mid IS NULL", False),
        ("invalid box", f"xmin IS NULL OR xmax IS NULL OR ymin IS NULL OR ymax IS NULL OR NOT ({_FINITE})"
                        " OR NOT (xmin < xmax AND ymin < ymax)", False),
        (NO_OVERLAP, "line IN (SELECT line FROM edge WHERE empty)", True),
    ]
    if cfg.group_of == "drop":
        checks.append(("group-of", "coalesce(group_of, false)", True))

    def passing(conds: list[str]) -> str:
        return " AND ".join(f"NOT coalesce(({c}), false)" for c in conds) or "true"

    bad_sql = []
    for reason, cond, dropped in checks:
        if reason == NO_OVERLAP:  # the converters' one box rule, on the valid boxes that reach past a side
            edge = con.sql(f"SELECT line, xmin, ymin, xmax, ymax FROM boxes WHERE ({_OUTSIDE}) AND "
                           f"{passing(bad_sql)}").to_arrow_table()
            fit = clip_to_image(np.stack([edge.column(c).to_numpy() for c in ("xmin", "ymin", "xmax", "ymax")], axis=1)
                                if edge.num_rows else np.zeros((0, 4)), 1.0, 1.0)
            con.register("edge", pa.table({"line": edge.column("line"), "xmin": fit.xyxy[:, 0], "ymin": fit.xyxy[:, 1],
                                           "xmax": fit.xyxy[:, 2], "ymax": fit.xyxy[:, 3], "empty": fit.empty,
                                           "clipped": fit.clipped}))
        rows = con.execute(f"SELECT line, image_id, mid FROM boxes WHERE coalesce(({cond}), false) AND "
                           f"{passing(bad_sql)} ORDER BY line").fetchall()
        if rows:
            rej.add_records([f"line {r[0]}" for r in rows], reason,
                            [f"ImageID={r[1]} LabelName={r[2]}" for r in rows], dropped=dropped)
        bad_sql.append(cond)
    con.execute(f"""CREATE TABLE good AS SELECT b.line, b.image_id, c.label, b.mid,
                    coalesce(e.xmin, b.xmin) AS xmin, coalesce(e.ymin, b.ymin) AS ymin,
                    coalesce(e.xmax, b.xmax) AS xmax, coalesce(e.ymax, b.ymax) AS ymax,
                    coalesce(e.clipped, false) AS clipped
                    FROM (SELECT * FROM boxes WHERE {passing(bad_sql)}) b JOIN classes c ON c.mid = b.mid
                    LEFT JOIN edge e ON e.line = b.line""")
    gone = con.execute(f"""SELECT DISTINCT image_id FROM boxes WHERE image_id NOT IN (SELECT image_id FROM good)
                          AND image_id IS NOT NULL AND {_VALID_ID} ORDER BY image_id""").fetchall()
    if gone:
        rej.add_records([f"ImageID={g[0]}" for g in gone], "no box left", "every box of the image was dropped or rejected",
                        dropped=True)
    return int(con.execute("SELECT count(*) FROM good WHERE clipped").fetchall()[0][0])


def _sizes(con: duckdb.DuckDBPyConnection, ids: list[str], sizes: Path | None, image_root: str | None,
           rej: Rejects) -> pa.Table:
    """width/height of each image: from the (local) sizes file, else from the image headers under `image_root`
    (a local folder or on an object store; parallel)."""
    if sizes:
        try:
            t = con.sql(f"""SELECT ImageID AS image_id, CAST(width AS INTEGER) AS width, CAST(height AS INTEGER) AS height
                                FROM read_csv('{sizes}', header=true)""").to_arrow_table()
        except duckdb.Error as e:
            raise ConversionError(f"{sizes}: not an ImageID,width,height CSV: {_short(e)}") from None
        lut = dict(zip(t.column("image_id").to_pylist(), zip(t.column("width").to_pylist(), t.column("height").to_pylist())))
        found = {i: lut.get(i) for i in ids}
    else:
        from concurrent.futures import ThreadPoolExecutor

        def read(i: str):
            try:
                return i, image_size_under(image_root, f"{i}.jpg")
            except (OSError, ValueError) as e:
                return i, e

        with ThreadPoolExecutor(16) as pool:
            found = dict(pool.map(read, ids))
    ok_ids, w, h, bad = [], [], [], []
    for i in ids:
        v = found.get(i)
        if isinstance(v, tuple) and v[0] and v[1] and v[0] > 0 and v[1] > 0:
            ok_ids.append(i)
            w.append(v[0])
            h.append(v[1])
        else:
            bad.append((i, "not in the sizes file" if v is None or isinstance(v, tuple) else str(v)))
    if bad:
        rej.add_records([f"ImageID={i}" for i, _ in bad], "no image size", [why for _, why in bad])
    return pa.table({"image_id": pa.array(ok_ids, pa.string()), "width": pa.array(w, pa.int32()),
                     "height": pa.array(h, pa.int32())})
