"""Checkpoint loading: official names and formats load unchanged; each malformed checkpoint fails with a
message naming the tensor (or shard) and what was expected."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from v4stack.config import Numerics
from v4stack.model import ForwardBatch
from v4stack.modelio.writer import tiny_config, write_checkpoint
from v4stack.weights.checkpoint import CheckpointError
from v4stack.modelio.loader import load_model


@pytest.fixture()
def single(tmp_path, tiny_checkpoint):
    dst = tmp_path / "single"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


@pytest.fixture()
def sharded(tmp_path):
    return write_checkpoint(tmp_path / "sharded", tiny_config(), seed=7, num_shards=3)


def _rewrite(path, edit):
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _replace(checkpoint_dir, name, make):
    """Rewrite one tensor of a single-file checkpoint: ``make(old) -> new``."""
    _rewrite(checkpoint_dir / "model.safetensors", lambda t: t.__setitem__(name, make(t[name])))


def test_sharded_and_single_file_load_the_same_model(single, sharded):
    ids = torch.arange(3, 40)
    logits = []
    for d in (single, sharded):
        model = load_model(d, Numerics.exact_fp32(), progress=False)
        logits.append(model(ForwardBatch.build([model.new_state()], [ids])).logits)
    assert torch.equal(logits[0], logits[1])


def test_weights_stay_in_checkpoint_formats(single):
    model = load_model(single, progress=False)
    sd = model.state_dict()
    assert sd["layers.0.attn.wq_a.weight"].dtype == torch.float8_e4m3fn
    assert sd["layers.0.attn.wq_a.scale"].dtype == torch.float8_e8m0fnu
    assert sd["layers.1.ffn.experts.0.w1.weight"].dtype == torch.int8  # FP4 pairs
    assert sd["layers.0.ffn.gate.tid2eid"].dtype == torch.int64
    assert sd["embed.weight"].dtype == torch.bfloat16


def test_missing_tensor(single):
    _rewrite(single / "model.safetensors", lambda t: t.pop("layers.1.attn.indexer.wq_b.weight"))
    with pytest.raises(CheckpointError, match=r"'layers\.1\.attn\.indexer\.wq_b\.weight': missing.*\[512, 128\]"):
        load_model(single, progress=False)


def test_wrong_shape(single):
    _replace(single, "layers.2.attn.compressor.ape", lambda _: torch.zeros(64, 128))
    with pytest.raises(CheckpointError, match=r"'layers\.2\.attn\.compressor\.ape'.*expected shape \[128, 128\], "
                                              r"found \[64, 128\]"):
        load_model(single, progress=False)


def test_wrong_dtype(single):
    _replace(single, "layers.0.attn.wkv.weight", lambda w: w.to(torch.bfloat16))
    with pytest.raises(CheckpointError, match=r"'layers\.0\.attn\.wkv\.weight'.*expected dtype torch.float8_e4m3fn, "
                                              r"found torch.bfloat16"):
        load_model(single, progress=False)


def test_int32_tid2eid_is_accepted(single):
    _replace(single, "layers.0.ffn.gate.tid2eid", lambda t: t.to(torch.int32))
    model = load_model(single, progress=False)
    assert model.layers[0].ffn.gate.tid2eid.dtype == torch.int64


def test_truncated_shard_names_a_tensor(sharded):
    shard = sharded / "model-00002-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"tensor '.+' in model-00002-of-00003\.safetensors: file truncated"):
        load_model(sharded, progress=False)


def test_index_points_to_missing_shard(sharded):
    (sharded / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"tensor '.+': .*maps it to model-00003-of-00003\.safetensors, "
                                              r"which does not exist"):
        load_model(sharded, progress=False)


def test_index_maps_tensor_to_wrong_shard(sharded):
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = "layers.0.attn.wq_a.weight"
    wrong = next(f for f in set(index["weight_map"].values()) if f != index["weight_map"][name])
    index["weight_map"][name] = wrong
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"'{name}'.*which does not contain it"):
        load_model(sharded, progress=False)


def test_corrupt_index(sharded):
    (sharded / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid index"):
        load_model(sharded, progress=False)


def test_wrong_block_size_in_config_is_a_shape_error(single):
    cfg = json.loads((single / "config.json").read_text())
    cfg["quantization_config"]["weight_block_size"] = [64, 64]
    (single / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"\.scale.*expected shape"):
        load_model(single, progress=False)
