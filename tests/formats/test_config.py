"""formats/config.py: one typed loader for every config, unknown keys and wrong types refused at every depth."""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from typing import Literal

import pytest
from conftest import EXAMPLES, run_cli

from formats.config import ConfigError, from_dict, load_config, read_config_file


@dataclass
class Round:
    """A round of a made-up schedule: a nested dict checked against PseudoConfig."""

    steps: int = 1
    pseudo: dict = field(default_factory=dict, metadata={"config": "workflows.pseudo_label:PseudoConfig"})


@dataclass
class Inner:
    mode: Literal["a", "b"] = "a"
    size: tuple[int, int] = (1, 2)


@dataclass
class Schedule:
    """A list of nested dataclasses, an optional one, and a required key."""

    name: str
    rounds: list[Round] = field(default_factory=list)
    inner: Inner | None = None
    weights: dict[str, float] = field(default_factory=dict)


def error(cls, data, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        from_dict(cls, data, **kw)
    return str(e.value)


def test_unknown_key_at_every_depth_names_its_path_and_the_close_key():
    assert error(Schedule, {"name": "s", "roundz": []}, file="s.json") == \
        "s.json: roundz: unknown key (did you mean rounds?)"
    assert error(Schedule, {"name": "s", "rounds": [{}, {"stpes": 2}]}, file="s.json") == \
        "s.json: rounds[1].stpes: unknown key (did you mean steps?)"
    assert error(Schedule, {"name": "s", "rounds": [{}, {"pseudo": {"filter": {"fused_treshold": 0.1}}}]},
                 file="s.json", path="selftrain") == \
        "s.json: selftrain.rounds[1].pseudo.filter.fused_treshold: unknown key (did you mean fused_threshold?)"
    assert error(Schedule, {"name": "s", "rounds": [{"pseudo": {"phrases": {"max_wrds": 3}}}]}) == \
        "rounds[0].pseudo.phrases.max_wrds: unknown key (did you mean max_words?)"
    assert error(Schedule, {"name": "s", "zzzz": 1}) == \
        "zzzz: unknown key (known: name, rounds, inner, weights)"


def test_wrong_types_name_the_path_and_the_expected_type():
    assert error(Schedule, {"name": 3}) == "name: expected str, got int (3)"
    assert error(Schedule, {"name": "s", "rounds": [{"steps": "2"}]}) == "rounds[0].steps: expected int, got str ('2')"
    assert error(Schedule, {"name": "s", "rounds": [{"steps": True}]}) == "rounds[0].steps: expected int, got bool (True)"
    assert error(Schedule, {"name": "s", "rounds": {}}) == "rounds: expected list[Round], got dict"
    assert error(Schedule, {"name": "s", "inner": 1}) == "inner: expected Inner | None, got int (1)"
    assert error(Schedule, {"name": "s", "rounds": [{"pseudo": {"candidate_nms_iou": "x"}}]}) == \
        "rounds[0].pseudo.candidate_nms_iou: expected float | None, got str ('x')"
    assert error(Schedule, {"name": "s", "rounds": [{"pseudo": {"filter": [1]}}]}) == \
        "rounds[0].pseudo.filter: expected a table, got list"
    assert error(Schedule, {"name": "s", "inner": {"mode": "c"}}) == "inner.mode: expected one of 'a', 'b', got 'c'"
    assert error(Schedule, {"name": "s", "inner": {"size": [1]}}) == "inner.size: expected 2 items, got 1"
    assert error(Schedule, {"name": "s", "inner": {"size": [1, "2"]}}) == "inner.size[1]: expected int, got str ('2')"
    assert error(Schedule, {"name": "s", "inner": {"mdoe": "a"}}) == "inner.mdoe: unknown key (did you mean mode?)"
    assert error(Schedule, {"name": "s", "weights": {"a": "1"}}) == "weights.a: expected float, got str ('1')"
    assert error(Schedule, {}) == "name: required key missing"
    # the dataclass's own checks keep their message, at the path of the table
    assert error(Schedule, {"name": "s", "rounds": [{"pseudo": {"images_per_part": 0}}]}) == \
        "rounds[0].pseudo: images_per_part must be a positive integer, got 0"


def test_valid_configs_load_to_the_same_objects_as_before():
    """Values are never converted: an int stays an int where a float is expected, dicts stay as given."""
    from detector.train import TrainConfig
    from labeling.fuse import FilterConfig
    from labeling.phrases import PhraseConfig
    from workflows.pseudo_label import PseudoConfig
    from workflows.selftrain import SelfTrainConfig

    s = from_dict(Schedule, {"name": "s", "rounds": [{"steps": 3}], "inner": {"mode": "b", "size": [3, 4]}})
    assert s == Schedule(name="s", rounds=[Round(steps=3)], inner=Inner(mode="b", size=[3, 4]))
    data = tomllib.loads((EXAMPLES / "selftrain_tiny.toml").read_text())
    assert from_dict(SelfTrainConfig, data) == SelfTrainConfig(**data)
    assert asdict(from_dict(SelfTrainConfig, data)) == asdict(SelfTrainConfig(**data))
    pseudo = {**data["pseudo"], "phrases": {"max_words": 5}, "candidate_nms_iou": None, "round": 2}
    cfg = from_dict(PseudoConfig, pseudo)
    assert cfg == PseudoConfig(**pseudo) and cfg.filter == pseudo["filter"] and cfg.phrases == {"max_words": 5}
    assert type(cfg.filter["fused_threshold"]) is float and type(from_dict(FilterConfig, {"nms_iou": 1}).nms_iou) is int
    assert from_dict(TrainConfig, data["train"]) == TrainConfig(**data["train"])
    assert from_dict(TrainConfig, {"use_gpu": None, "extra": {"any": [1]}}) == TrainConfig(extra={"any": [1]})
    assert from_dict(PhraseConfig, {"extra_abstract": ["x"]}) == PhraseConfig(extra_abstract=["x"])
    for classes in (["cat", ["dog", "puppy"]], {"0": "cat", "1": "dog"}):  # every JSON form of a class list
        assert from_dict(PseudoConfig, {"classes": classes}) == PseudoConfig(classes=classes)
    assert error(PseudoConfig, {"classes": 3}) == "classes: expected list | dict | str | None, got int (3)"


def test_resume_keys_of_unchanged_configs_are_unchanged(tmp_path):
    """`ovlabel pseudo --config` builds the config the old way did (file dicts as given, the filter section
    filled in by FilterConfig), so the fingerprint a stored dataset was made with still matches."""
    from formats.dataset import _fingerprint
    from labeling.fuse import FilterConfig
    from workflows.cli_labeling import pseudo_config
    from workflows.pseudo_label import PseudoConfig

    doc = {"box_threshold": 0, "phrases": {"max_words": 5}, "filter": {"fused_threshold": 0, "nms_iou": 0.4},
           "images_per_part": 4}
    p = tmp_path / "pseudo.json"
    p.write_text(json.dumps(doc))
    flags = dict(detector=None, clip=None, box_threshold=None, round=None, images_per_part=None, top_k=None,
                 candidate_nms_iou=None, extract_phrases=False, det_threshold=None, fused_threshold=None,
                 image_threshold=None, objectness_threshold=None)
    new = pseudo_config(argparse.Namespace(config=str(p), **flags))
    old = PseudoConfig(**{k: v for k, v in doc.items() if k != "filter"})  # the loader before formats/config.py
    old.filter = FilterConfig(**doc["filter"]).to_dict()
    assert _fingerprint({"config": asdict(new)}) == _fingerprint({"config": asdict(old)})
    assert json.dumps(asdict(new), sort_keys=True) == json.dumps(asdict(old), sort_keys=True)


def test_files_json_and_toml(tmp_path):
    from labeling.fuse import FilterConfig

    t = tmp_path / "f.toml"
    t.write_text("nms_iou = 0.4\nnms_across_phrases = true\n")
    assert load_config(FilterConfig, t) == FilterConfig(nms_iou=0.4, nms_across_phrases=True)
    bad = tmp_path / "bad.json"
    bad.write_text("{1,}")
    with pytest.raises(ConfigError, match=r"^.*bad\.json: not a valid config: "):
        read_config_file(bad)
    bad.write_text("[1]")
    with pytest.raises(ConfigError, match=r"bad\.json: not a valid config: expected an object, got list"):
        read_config_file(bad)


def test_selftrain_config_refuses_nested_typos(tmp_path):
    from workflows.selftrain import SelfTrainConfig

    p = tmp_path / "run.toml"
    p.write_text('base_model = "m"\npool = "p"\n[[eval]]\npath = "a"\n[[eval]]\npath = "b"\nprotcol = "coco"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{p}: eval[1].protcol: unknown key (did you mean protocol?)")):
        SelfTrainConfig.load(p)
    p.write_text('base_model = "m"\npool = "p"\n[pseudo.filter]\nfused_treshold = 0.1\n')
    with pytest.raises(ConfigError, match=re.escape(
            f"{p}: pseudo.filter.fused_treshold: unknown key (did you mean fused_threshold?)")):
        SelfTrainConfig.load(p)
    p.write_text('base_model = "m"\npool = "p"\n[train]\nsteps = "100"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{p}: train.steps: expected int, got str ('100')")):
        SelfTrainConfig.load(p)


@pytest.mark.parametrize("command", [
    ("selftrain", "run", "{cfg}", "--out", "{out}"),
    ("pseudo", "--input", "{out}", "--out", "{out}", "--config", "{cfg}"),
    ("refilter", "{out}", "--out", "{out}", "--config", "{cfg}"),
    ("train", "{out}", "--model", "m", "--out", "{out}", "--config", "{cfg}"),
])
def test_cli_config_error_exits_2_with_one_line_naming_the_file(tmp_path, command):
    cfg = tmp_path / "c.json"
    if command[0] == "selftrain":
        doc, where = {"base_model": "m", "pool": "p", "pseudo": {"filter": {"fused_treshold": 0}}}, \
            "pseudo.filter.fused_treshold: unknown key (did you mean fused_threshold?)"
    elif command[0] == "train":
        doc, where = {"stesp": 1}, "stesp: unknown key (did you mean steps?)"
    else:
        doc, where = {"filter": {"fused_treshold": 0}}, \
            "filter.fused_treshold: unknown key (did you mean fused_threshold?)"
    cfg.write_text(json.dumps(doc))
    p = run_cli(*(a.format(cfg=cfg, out=tmp_path / "x") for a in command), check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines()[-1:] == [f"ovlabel: error: {cfg}: {where}"]
    assert p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "x").exists()
