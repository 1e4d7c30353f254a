"""`ovlabel phrases`: noun phrases for every caption of a dataset, on Ray Data, one output part per input part.

Output: the same records with an extra ``phrases`` column (``[{phrase, tokens_positive}]``). Parts are
written atomically; a rerun skips finished ones.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from formats.dataset import Dataset, DatasetWriter, Manifest, prior_run, provenance
from labeling.phrases import PhraseConfig
from labeling.stages import add_phrases


def _read_part(units: pa.Table) -> pa.Table:
    """The records of each listed part, tagged with the part's name."""
    tables = []
    for u in units.to_pylist():
        t = pq.read_table(u["path"])
        tables.append(t.append_column("_part", pa.repeat(pa.scalar(u["name"]), t.num_rows)))
    return pa.concat_tables(tables)


def run_phrases(dataset: str | Path, out: str | Path, cfg: PhraseConfig, *, overwrite: bool = False) -> dict:
    """Adds phrases to every record of `dataset` into the dataset directory `out`."""
    import ray

    from workflows.ray_runtime import init_ray

    src = Dataset(dataset).require_complete()
    key = {"config": cfg.to_dict(), "input": [(p["name"], p["rows"]) for p in src.manifest.parts],
           "input_path": str(src.root.resolve())}
    done = prior_run(out, key, overwrite)
    if done is not None:
        return {"dataset": str(out), **done.counts}
    m = src.manifest
    manifest = Manifest(kind=m.kind, source=m.source, image_root=m.image_root, categories=m.categories,
                        extra_columns=[*m.extra_columns, "phrases"], config={"phrases": cfg.to_dict()},
                        provenance=provenance([{"path": str(src.root.resolve()), "dataset": True}]))
    writer = DatasetWriter(out, manifest, overwrite=overwrite, resume_key=key)
    todo = [{"name": p["name"], "path": str(src.root / "records" / p["name"]), "rows": p["rows"]}
            for p in m.parts if not writer.is_done(p["name"])]
    if todo:
        init_ray()
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        ds = ds.map_batches(_read_part, batch_size=1, batch_format="pyarrow", num_cpus=0.25)
        ds = ds.map_batches(add_phrases, batch_size=512, batch_format="pyarrow", fn_kwargs={"phrase_cfg": cfg.to_dict()})
        expected = {u["name"]: u["rows"] for u in todo}
        pending: dict[str, list] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for name in set(batch.column("_part").to_pylist()):
                pending.setdefault(name, []).append(batch.filter(pa.compute.equal(batch.column("_part"), name)))
                if sum(t.num_rows for t in pending[name]) == expected[name]:
                    table = pa.concat_tables(pending.pop(name)).drop_columns(["_part"])
                    writer.write_part(name, table, validate=False)
    n = sum(int(p["rows"]) for p in writer.manifest.parts)
    return {"dataset": str(out), **writer.finish({"images": n, "boxes": sum(int(p["boxes"]) for p in writer.manifest.parts)}).counts}

