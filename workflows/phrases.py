"""`ovlabel phrases`: noun phrases for every caption of a dataset, on Ray Data, one output part per input part.

Output: the same records with an extra ``phrases`` column (``[{phrase, tokens_positive}]``). Each input part
is cut into units of a few thousand rows, so a part's captions spread over every worker; a pool of phrase
actors (spaCy loaded once each, several units queued per actor so none waits between units) reads only
the caption column. The driver joins the phrases back onto each part once all its units are in and
writes the part atomically; a rerun skips finished parts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from formats import storage
from formats.dataset import Dataset, DatasetWriter, derived_manifest, part_ranges, prior_run
from formats.storage import Folder
from labeling.phrases import PhraseConfig
from labeling.stages import CaptionPhrases


def phrase_units(parts: list[dict], rows_per_unit: int) -> list[dict]:
    """Row ranges (`name`, `path`, `start`, `stop`) covering every row of the listed parts."""
    return [{"name": p["name"], "path": p["path"], "start": a, "stop": b}
            for p in parts for a, b in part_ranges(int(p["rows"]), rows_per_unit) if b > a]


def run_phrases(dataset: str | Path, out: str | Path, cfg: PhraseConfig, *, overwrite: bool = False,
                workers: int | None = None, rows_per_unit: int = 1000,
                on_rows: Callable[[int], None] | None = None) -> dict:
    """Adds phrases to every record of `dataset` into the dataset directory `out`.

    `workers`: phrase actors (default: every CPU of the Ray cluster); `on_rows(n)` is called as the
    phrases of n more captions arrive.
    """
    from workflows.ray_runtime import ray_session

    src = Dataset(Folder(dataset).resolve()).require_complete()  # absolute: workers may run elsewhere
    key = {"config": cfg.to_dict(), "input": [(p["name"], p["rows"]) for p in src.manifest.parts],
           "input_path": src.folder.url}
    done = prior_run(out, key, overwrite)
    shown = Folder(out).url  # an object store's URL without credentials
    if done is not None:
        return {"dataset": shown, **done.counts}
    manifest = derived_manifest(src, {"phrases": cfg.to_dict()}, extra_columns=[*src.manifest.extra_columns, "phrases"])
    writer = DatasetWriter(out, manifest, overwrite=overwrite, resume_key=key)
    # workers reopen each part from its location: a local path, or a URL read through the store's filesystem
    todo = [{"name": p["name"], "path": src.folder.url_of(f"records/{p['name']}"), "rows": int(p["rows"])}
            for p in src.manifest.parts if not writer.is_done(p["name"])]
    units = phrase_units(todo, rows_per_unit)
    if units:
        with ray_session():
            _phrase_parts(units, todo, cfg, writer, workers, on_rows)
    return {"dataset": shown, **writer.finish(writer.manifest.totals()).counts}


def _phrase_parts(units: list[dict], todo: list[dict], cfg: PhraseConfig, writer: DatasetWriter,
                  workers: int | None, on_rows: Callable[[int], None] | None) -> None:
    """Runs the actor pool over the units and writes each part as soon as all its rows are back."""
    import ray

    size = max(1, min(len(units), workers or int(ray.cluster_resources().get("CPU", 1))))
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map_batches(CaptionPhrases, fn_constructor_kwargs={"phrase_cfg": cfg.to_dict()}, batch_size=None,
                        batch_format="pyarrow", num_cpus=1,
                        compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=2))
    expected = {p["name"]: p["rows"] for p in todo}
    paths = {p["name"]: p["path"] for p in todo}
    pending: dict[str, list[pa.Table]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if on_rows is not None:
            on_rows(batch.num_rows)
        for name in pc.unique(batch.column("part")).to_pylist():
            pending.setdefault(name, []).append(batch.filter(pc.equal(batch.column("part"), name)))
            if sum(t.num_rows for t in pending[name]) == expected[name]:
                writer.write_part(name, _with_phrases(paths[name], pending.pop(name)), validate=False)


def _with_phrases(path: str, pieces: list[pa.Table]) -> pa.Table:
    """The part's records with its phrases (collected from units in any order) as a new column."""
    got = pa.concat_tables(pieces)
    order = pc.sort_indices(got.column("row"))
    records = storage.read_parquet(path)
    rows = got.column("row").take(order)
    if len(rows) != records.num_rows or not pc.all(pc.equal(rows, pa.array(range(len(rows))))).as_py():
        raise RuntimeError(f"{path}: phrases came back for rows other than the part's {records.num_rows}")
    return records.append_column("phrases", got.column("phrases").take(order))
