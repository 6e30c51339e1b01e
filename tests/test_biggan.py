"""BigGAN-deep (``dreamcanvas.models.biggan``): the port's names, shapes and counts, and the port's arithmetic.

The reference is ``pytorch-pretrained-biggan`` itself (a test dependency): the published configurations are
built on the meta device and compared key by key; a small random network of the same architecture, saved in
the port's folder layout, loads through ``dreamcanvas.load_biggan("local:DIR")`` and draws what the port draws.
Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import offline_hub

import dreamcanvas
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.models.biggan import BigGAN, BigGANConfig

port = pytest.importorskip("pytorch_pretrained_biggan")

PUBLISHED_PARAMETERS = {128: 50_388_609, 256: 55_880_833, 512: 56_163_905}
SMALL = BigGANConfig(output_dim=64, channel_width=4, z_dim=16, class_embed_dim=16, num_classes=10,
                     layers=[(False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4),
                             (True, 4, 2), (False, 2, 2), (True, 2, 1)], attention_layer_position=4)  # fmt: skip


def port_config(config: BigGANConfig):
    return port.BigGANConfig.from_dict({**config.__dict__, "layers": [list(layer) for layer in config.layers]})


@pytest.mark.parametrize("size", sorted(PUBLISHED_PARAMETERS))
def test_the_published_configurations_have_the_ports_every_key_shape_and_count(size):
    config = BigGANConfig.for_size(size)
    with torch.device("meta"):
        ours, theirs = BigGAN(config), port.BigGAN(port_config(config))
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert {name: t.shape for name, t in ours_state.items()} == {name: t.shape for name, t in theirs_state.items()}
    assert sum(parameter.numel() for parameter in ours.parameters()) == PUBLISHED_PARAMETERS[size]
    assert "generator.layers.8.gamma" in ours_state  # the attention block, before the 9th block
    assert ours_state["generator.layers.0.bn_0.running_means"].shape == (51, 16 * 128)
    assert {"generator.gen_z.weight_orig", "generator.gen_z.weight_u", "generator.gen_z.weight_v"} <= set(ours_state)


def random_port_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The port's small network with every tensor random: statistics that differ by truncation, spectral-norm
    vectors as a power iteration leaves them (u = W v normalised), attention switched on."""
    torch.manual_seed(seed)
    state = port.BigGAN(port_config(SMALL)).state_dict()
    for name, tensor in list(state.items()):
        if name.endswith("running_vars"):
            state[name] = torch.rand_like(tensor) + 0.5
        elif name.endswith("running_means"):
            state[name] = torch.randn_like(tensor) * 0.05
        elif name.endswith("gamma"):
            state[name] = torch.tensor([0.7])
        elif name.startswith("generator.bn."):  # the port leaves the last batch norm's affine uninitialised
            state[name] = (1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(tensor)
        elif name.endswith("weight_orig"):
            matrix = tensor.reshape(tensor.shape[0], -1)
            v = F.normalize(torch.randn(matrix.shape[1]), dim=0)
            state[name.replace("_orig", "_u")], state[name.replace("_orig", "_v")] = F.normalize(matrix @ v, dim=0), v
    return state


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("biggan")
    (folder / "config.json").write_text(SMALL.to_json())
    torch.save(random_port_state(), folder / "pytorch_model.bin")
    return folder


def test_a_port_folder_loads_and_draws_what_the_port_draws(small_dir):
    ours = dreamcanvas.load_biggan(f"local:{small_dir}")
    theirs = port.BigGAN.from_pretrained(str(small_dir)).eval()
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    classes = torch.softmax(torch.randn(3, 10, generator=torch.Generator().manual_seed(2)), dim=-1)
    with torch.no_grad():
        for truncation in (1.0, 0.4, 0.37):  # 0.37: between two statistics rows, the port's mixture
            picture = ours(z, classes, truncation)
            assert picture.shape == (3, 3, 64, 64) and picture.abs().max() <= 1
            torch.testing.assert_close(picture, theirs(z, classes, truncation), rtol=0, atol=1e-5)
        assert not torch.allclose(ours(z, classes, 0.4), ours(z, classes, 0.37))


def test_one_row_per_layer_is_bigsleeps_input_and_equal_rows_are_the_ports_call(small_dir):
    # float64: the two calls are the same arithmetic in another batch shape, and in float32 a CPU's GEMM kernels
    # for those shapes round differently; a random small BigGAN amplifies that (one pixel of 24,576 was 2.0 apart
    # on an AVX2 CPU, none on AMX). In float64 they agree exactly, so any real difference shows.
    model = dreamcanvas.load_biggan(f"local:{small_dir}").double()
    rows = model.generator.conditions
    assert rows == len(SMALL.layers) + 1
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    classes = torch.softmax(torch.randn(2, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64), -1)
    with torch.no_grad():
        shared = model(z, classes, 0.5)
        per_layer = model(z[:, None].expand(2, rows, 16), classes[:, None].expand(2, rows, 10), 0.5)
        torch.testing.assert_close(per_layer, shared, rtol=0, atol=1e-12)
        different = z[:, None].repeat(1, rows, 1)
        different[:, -1] += 1.0  # only the last block's row changes
        assert not torch.allclose(model(different, classes[:, None].expand(2, rows, 10), 0.5), shared)


def test_bad_biggan_folders_and_names_are_one_line(tmp_path, small_dir, monkeypatch):
    offline_hub(tmp_path / "hub", monkeypatch)
    with pytest.raises(DreamcanvasError, match="not a BigGAN folder"):
        dreamcanvas.load_biggan(f"local:{tmp_path}")
    with pytest.raises(DreamcanvasError, match="unknown --biggan-model 'biggan-deep-1024'"):
        dreamcanvas.load_biggan("biggan-deep-1024")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(BigGANConfig.for_size(128).to_json())
    (other / "pytorch_model.bin").write_bytes((small_dir / "pytorch_model.bin").read_bytes())
    with pytest.raises(DreamcanvasError, match="does not fit"):
        dreamcanvas.load_biggan(f"local:{other}")
