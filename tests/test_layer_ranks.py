"""Ranks of every layer of a layer-wise network on its own kernel's spectrum (``per_layer``,
``--per-layer``): the allocation, the network, its file, the command line and bad input."""

import io
import json
import math

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

import tcompress
from tcompress import methods
from tcompress.cli import main
from tcompress.cli.render import print_layerwise_summary
from tcompress.errors import RankError, TcompressError
from tcompress.passes.layerwise import allocate_layer_ranks

from .conftest import make_hourglass, outputs, scaled_error

SPECTRAL = ("layerwise-tucker", "tai")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def kernels_of(model) -> dict:
    return {name: model.get_submodule(name).weight.detach() for _, name in model.block_conv_names()}


def low_rank(kernel: torch.Tensor, method: str, rank: int) -> torch.Tensor:
    """``kernel`` truncated to ``rank`` in the matrix ``method``'s spectrum is of: Tai's
    (f_in h) x (f_out w) reshape, Tucker-2's f_in and f_out unfoldings."""
    if method == "tai":
        f_out, f_in, h, w = kernel.shape
        matrix = kernel.permute(1, 2, 0, 3).reshape(f_in * h, f_out * w).double()
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        kept = (u[:, :rank] * s[:rank]) @ vh[:rank]
        return kept.reshape(f_in, h, f_out, w).permute(2, 0, 1, 3).float()
    from tcompress.decompose import tucker

    result = tucker(kernel, (rank, rank, *kernel.shape[2:]))
    return torch.einsum("abyx,oa,ib->oiyx", result.core, *result.factors[:2]).float()


def exact_loss(method: str, kernel: torch.Tensor, ranks) -> float:
    """The bound the allocation minimises for one layer: its spectra's tails over ||K||^2."""
    spectra = methods.get(method).layer_spectra(kernel)
    norm = float(kernel.double().square().sum())
    return sum(float(s[r:].sum()) for s, r in zip(spectra, ranks)) / norm


@pytest.mark.parametrize("method", SPECTRAL)
@pytest.mark.parametrize("ratio", [1.5, 3.0])
def test_the_allocation_meets_the_ratio_closely(method, ratio):
    model = make_hourglass(features=16)
    kernels = kernels_of(model)
    other = sum(p.numel() for p in model.parameters()) - sum(k.numel() for k in kernels.values())
    ranks = allocate_layer_ranks(method, kernels, other, ratio)
    assert list(ranks) == list(kernels)
    chosen = methods.get(method)
    before = sum(p.numel() for p in model.parameters())
    after = other + sum(chosen.params(tuple(kernels[n].shape), r) for n, r in ranks.items())
    assert ratio <= before / after <= ratio * 1.03


@pytest.mark.parametrize("method", SPECTRAL)
def test_layers_of_low_rank_get_low_ranks_and_lose_less_than_uniform_ranks(method):
    model = make_hourglass(features=16)
    names = [name for _, name in model.block_conv_names()]
    with torch.no_grad():
        for name in names[::2]:  # every other layer: exactly rank 2
            conv = model.get_submodule(name)
            conv.weight.copy_(low_rank(conv.weight, method, 2))
    kernels = kernels_of(model)
    other = sum(p.numel() for p in model.parameters()) - sum(k.numel() for k in kernels.values())
    ranks = allocate_layer_ranks(method, kernels, other, 2.0)
    assert all(max(ranks[n]) <= 2 for n in names[::2])
    assert all(min(ranks[n]) > 2 for n in names[1::2])
    # Against the one rank for every layer that --ratio gives, at no more parameters:
    uniform = tcompress.convert(model, method=method, ratio=2.0)
    chosen = methods.get(method)
    shape = tuple(kernels[names[0]].shape)
    per_layer = sum(chosen.params(shape, r) for r in ranks.values())
    assert per_layer <= len(names) * chosen.params(shape, uniform.ranks) * 1.03
    lost = sum(exact_loss(method, kernels[n], ranks[n]) for n in names)
    lost_uniform = sum(exact_loss(method, kernels[n], uniform.ranks) for n in names)
    assert lost < 0.8 * lost_uniform


def test_the_largest_reachable_ratio_takes_rank_one_everywhere():
    model = make_hourglass()
    kernels = kernels_of(model)
    other = sum(p.numel() for p in model.parameters()) - sum(k.numel() for k in kernels.values())
    before = other + sum(k.numel() for k in kernels.values())
    best = before / (other + len(kernels) * methods.get("tai").params((8, 8, 3, 3), [1]))
    ranks = allocate_layer_ranks("tai", kernels, other, best)
    assert set(ranks.values()) == {(1,)}
    with pytest.raises(RankError, match=f"goes from 1x to {best:.2f}x \\(rank 1 in every layer"):
        allocate_layer_ranks("tai", kernels, other, best * 1.01)


@pytest.mark.parametrize("method", SPECTRAL)
def test_convert_save_load_and_the_summary(tmp_path, method, x):
    model = make_hourglass(features=16)
    net = tcompress.convert(model, method=method, ratio=2.5, per_layer=True).eval()
    s = net.summary
    assert net.per_layer and s["target"] == "ratio 2.5" and s["layer_criterion"] == "bound"
    assert 2.5 <= s["compression_ratio"] <= 2.5 * 1.03
    assert s["layer_ranks"] == {n: list(r) for n, r in net.layer_ranks.items()}
    columns = list(zip(*net.layer_ranks.values()))
    assert tuple(s["ranks"]) == tuple(max(c) for c in columns)
    assert any(min(c) < max(c) for c in columns)
    assert "ranks per layer, on each kernel's spectrum" in s["notes"][-1]
    assert s["params_after"] == sum(p.numel() for p in net.parameters())
    # Each chain has its layer's ranks.
    chosen = methods.get(method)
    for name, ranks in net.layer_ranks.items():
        chain = net.net.get_submodule(name)
        assert chain[0].out_channels == ranks[0]
    # Per-layer errors: each layer's rebuilt kernel against the original's.
    originals = kernels_of(model)
    for error, (name, kernel) in zip(s["errors"], originals.items()):
        rebuilt = chosen.kernel(net.net.get_submodule(name)).detach()
        assert error == pytest.approx(float((rebuilt - kernel).norm() / kernel.norm()), rel=1e-4)
    tcompress.save(net, tmp_path / "lw.pt")
    loaded = tcompress.load(tmp_path / "lw.pt").eval()
    assert loaded.layer_ranks == net.layer_ranks and loaded.summary == net.summary
    assert scaled_error(outputs(loaded, x), outputs(net, x)) == 0


def test_a_uniform_network_has_no_layer_ranks_in_its_file(hourglass):
    net = tcompress.convert(hourglass, method="tai", ratio=2)
    assert not net.per_layer and net.summary["layer_ranks"] is None
    assert "layer_ranks" not in tcompress.serialize.to_payload(net)


def test_a_file_whose_layer_ranks_miss_a_layer_or_do_not_fit_is_refused(tmp_path, hourglass):
    net = tcompress.convert(hourglass, method="tai", ratio=2, per_layer=True)
    payload = tcompress.serialize.to_payload(net)
    first = next(iter(payload["layer_ranks"]))
    missing = dict(payload, layer_ranks={k: v for k, v in payload["layer_ranks"].items()})
    del missing["layer_ranks"][first]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(TcompressError, match="records layer ranks for 23 layers; expected one"):
        tcompress.load(tmp_path / "missing.pt")
    wrong = dict(payload, layer_ranks={**payload["layer_ranks"], first: [99]})
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(TcompressError, match="has ranks \\[99\\] that do not fit method 'tai'"):
        tcompress.load(tmp_path / "wrong.pt")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(method="tucker", ratio=2),
            "per_layer gives every layer of a layer-wise method (layerwise-tucker, tai) ranks of "
            "its own for a ratio; got tucker with a ratio",
        ),
        (dict(method="tai", ranks=4), "got tai with no ratio"),
        (
            dict(method="layerwise-cp", ratio=2),
            "layerwise-cp has no error bound to give each layer its own ranks",
        ),
        (
            dict(method="tai", ratio=2, ranks=4),
            "ranks 4 and ratio 2 both given; a layer-wise method takes ranks or ratio",
        ),
        (dict(method="tai", ratio=500), "compression ratio 500 is out of reach: with tai"),
    ],
)
def test_bad_requests_say_what_was_expected(hourglass, kwargs, message):
    with pytest.raises(RankError, match=message.replace("(", "\\(").replace(")", "\\)")):
        tcompress.convert(hourglass, per_layer=True, **kwargs)


def test_cli_convert_and_info(tmp_path, checkpoint):
    out = tmp_path / "lw.pt"
    r = cli(
        "convert", checkpoint, "--method", "layerwise-tucker", "--ratio", "2", "--per-layer",
        "-o", out, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert len(summary["layer_ranks"]) == summary["layers"] == 24
    assert math.isclose(summary["compression_ratio"], 2, rel_tol=0.03)
    r = cli("info", out)
    assert r.exit_code == 0, r.output
    assert "ranks of each layer's own, at most R_in,R_out" in r.output
    assert "on the kernels' spectra" in r.output
    r = cli("convert", checkpoint, "--per-layer", "--ratio", "2", "-o", tmp_path / "t.pt")
    assert r.exit_code != 0 and "--per-layer gives every layer" in r.output
    assert not (tmp_path / "t.pt").exists()


def images(n: int = 4, size: int = 32):
    return [
        torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(n)
    ]


@pytest.mark.parametrize("method", SPECTRAL)
def test_measured_costs_are_each_layers_normalised_output_error(method):
    from tcompress.passes.data_aware import block_statistics
    from tcompress.passes.layerwise import layer_costs

    model = make_hourglass()
    names = [name for _, name in model.block_conv_names()]
    stats = block_statistics(model, names, images())
    kernels = [model.get_submodule(n).weight.detach() for n in names]

    def energy(layer: int, kernel: torch.Tensor) -> float:
        """E ||diag(s) K x||^2 over the layer's input patches x."""
        rows = kernel.double().reshape(kernel.shape[0], -1) * stats.scales[layer][:, None]
        return float((rows @ stats.moments[layer].double() * rows).sum())

    total = sum(energy(layer, k) for layer, k in enumerate(kernels))
    costs = layer_costs(method, kernels, stats)
    assert len(costs) == len(names)
    for layer, (kernel, cost) in enumerate(zip(kernels, costs)):
        assert len(cost) == len(methods.get(method).truncations(kernel))
        for keep, values in zip(methods.get(method).truncations(kernel), cost):
            assert values[0] == pytest.approx(energy(layer, kernel) / total, rel=1e-5)
            assert values[-1] == 0 and all(a >= b for a, b in zip(values, values[1:]))
            r = len(values) // 2
            direct = energy(layer, kernel.double() - keep(r)) / total
            assert values[r] <= direct * (1 + 1e-6) and values[r] < values[0]


def test_convert_per_layer_on_data_and_its_note():
    model = make_hourglass(features=16)
    net = tcompress.convert(model, method="tai", ratio=2, per_layer=True, data=images())
    s = net.summary
    assert 2 <= s["compression_ratio"] <= 2 * 1.03 and net.per_layer
    assert "on what each costs the normalised outputs on 8 images" in s["notes"][-1]
    assert not any("the data did not choose" in note for note in s["notes"])
    assert s["layer_criterion"] == "data"
    out = io.StringIO()
    print_layerwise_summary(Console(file=out, width=400, color_system=None), s)
    assert "ranks of each layer's own, at most K = " in out.getvalue()
    assert "chosen for ratio 2 on measured output costs" in out.getvalue()
