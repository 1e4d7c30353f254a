"""Model loading helpers (detector.models): device choice, autocast per device and precision, and the error of
a model that cannot be loaded. No model is downloaded."""

from __future__ import annotations

import contextlib

import pytest
import torch

from detector.models import autocast, load_pretrained, pick_device


def test_pick_device(monkeypatch):
    assert pick_device("cpu") == "cpu"
    assert pick_device("cuda:1") == "cuda:1"  # an explicit device is never second-guessed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == "cpu" and pick_device("") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == "cuda"


@pytest.mark.parametrize("device, precision", [("cpu", "auto"), ("cpu", "fp16"), ("cuda", "fp32"), ("cuda:0", "fp32")])
def test_no_autocast_on_cpu_or_at_fp32(device, precision):
    assert isinstance(autocast(device, precision), contextlib.nullcontext)


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
@pytest.mark.parametrize("device, precision, dtype", [("cuda", "auto", torch.bfloat16), ("cuda:1", "bf16", torch.bfloat16),
                                                      ("cuda", "fp16", torch.float16)])
def test_autocast_dtype_on_gpu(device, precision, dtype):
    ctx = autocast(device, precision)
    assert isinstance(ctx, torch.autocast)
    assert ctx.device == "cuda" and ctx.fast_dtype == dtype


class _Loader:
    calls: list = []

    @classmethod
    def from_pretrained(cls, name, **kw):
        cls.calls.append((name, kw))
        if name == "missing":
            raise OSError("not found")
        return "model"


def test_load_pretrained_keeps_remote_code_off_unless_asked():
    _Loader.calls.clear()
    assert load_pretrained(_Loader, "dir", torch_dtype="x") == "model"
    assert load_pretrained(_Loader, "dir", trust_remote_code=True) == "model"
    assert _Loader.calls == [("dir", {"trust_remote_code": False, "torch_dtype": "x"}),
                             ("dir", {"trust_remote_code": True})]


def test_a_model_that_cannot_be_loaded_is_a_clear_os_error():
    with pytest.raises(OSError) as err:
        load_pretrained(_Loader, "missing")
    assert str(err.value) == ("cannot load 'missing': not found. Pass a local folder (ovlabel models tiny --out DIR "
                              "writes small test models) or make the Hugging Face Hub reachable.")
    assert err.value.__cause__ is None and err.value.__suppress_context__

