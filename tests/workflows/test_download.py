"""workflows/download.py without a network: the URL lists (GRIT metadata, CC3M TSV or `datasets` folder)
normalised to url + caption, the errors for lists that are not, and the totals of img2dataset's stats files."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workflows.download import DownloadError, cc3m_input, grit_input, summary


def test_grit_input_reads_a_file_or_a_folder_and_keeps_url_caption_and_the_grit_columns(tmp_path):
    meta = tmp_path / "grit"
    meta.mkdir()
    pq.write_table(pa.table({"key": ["k0"], "url": ["http://a/0.jpg"], "caption": ["a dog"], "id": [7],
                             "clip_similarity_vitb32": [0.3], "height": [10]}), meta / "b.parquet")
    pq.write_table(pa.table({"url": ["http://a/1.jpg"], "caption": ["a cat"], "id": [8]}), meta / "a.parquet")
    t = grit_input(meta)
    assert t.column_names == ["url", "caption", "id", "clip_similarity_vitb32"]  # key, height left out
    assert t.to_pylist() == [  # files in name order; a column one file lacks is null there
        {"url": "http://a/1.jpg", "caption": "a cat", "id": 8, "clip_similarity_vitb32": None},
        {"url": "http://a/0.jpg", "caption": "a dog", "id": 7, "clip_similarity_vitb32": 0.3}]
    assert grit_input(meta / "a.parquet").column_names == ["url", "caption", "id"]


def test_grit_input_refuses_what_is_not_grit_metadata(tmp_path):
    with pytest.raises(DownloadError, match="no GRIT metadata parquet file"):
        grit_input(tmp_path)  # an empty folder
    pq.write_table(pa.table({"url": ["u"]}), tmp_path / "x.parquet")
    with pytest.raises(DownloadError, match=r"x\.parquet: not GRIT metadata \(missing caption\)"):
        grit_input(tmp_path / "x.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DownloadError, match=r"bad\.parquet: unreadable parquet"):
        grit_input(tmp_path / "bad.parquet")


def test_cc3m_input_from_a_tsv_and_from_a_datasets_folder(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text('a "quoted" dog\thttp://a/0.jpg\na cat\thttp://a/1.jpg\n')
    assert cc3m_input(tsv).to_pylist() == [{"url": "http://a/0.jpg", "caption": 'a "quoted" dog'},
                                           {"url": "http://a/1.jpg", "caption": "a cat"}]
    import datasets

    datasets.Dataset.from_dict({"caption": ["a bird"], "image_url": ["http://a/2.jpg"]}).save_to_disk(tmp_path / "hf")
    assert cc3m_input(tmp_path / "hf").to_pylist() == [{"url": "http://a/2.jpg", "caption": "a bird"}]
    datasets.Dataset.from_dict({"text": ["x"]}).save_to_disk(tmp_path / "other")
    with pytest.raises(DownloadError, match=r"expected columns image_url \(or url\) and caption, found \['text'\]"):
        cc3m_input(tmp_path / "other")


def test_summary_adds_up_the_shard_stats_files(tmp_path):
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 10, "successes": 7, "failed_to_download": 3}))
    (tmp_path / "00001_stats.json").write_text(json.dumps({"count": 5, "successes": 4, "failed_to_download": 0,
                                                           "failed_to_resize": 1}))
    (tmp_path / "00001.parquet").write_bytes(b"")  # not a stats file
    assert summary(tmp_path) == {"raw_dir": str(tmp_path.resolve()), "shards": 2, "count": 15, "successes": 11,
                                 "failed_to_download": 3, "failed_to_resize": 1}
    assert summary(tmp_path / "empty")["shards"] == 0
