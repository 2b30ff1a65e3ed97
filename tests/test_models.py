import torch

from tcompress.models import StackedHourglass
from tcompress.stacking import block_keys

from .conftest import SMALL, make_hourglass


def test_paper_defaults():
    m = StackedHourglass.__init__.__defaults__
    assert m == (4, 4, 2, 128, 16, 3)


def test_outputs_one_heatmap_per_stack_at_quarter_resolution(x):
    model = make_hourglass()
    out = model(x)
    assert len(out) == SMALL["n_stacks"]
    assert all(o.shape == (2, SMALL["n_joints"], 8, 8) for o in out)


def test_block_convs_are_the_tensor_slices_in_order():
    model = make_hourglass(n_stacks=2, depth=3, block_depth=3)
    convs = list(model.block_convs())
    assert len(convs) == 2 * 3 * 3 * 3
    state = model.state_dict()
    for (index, conv), (index2, key) in zip(convs, block_keys(model.config)):
        assert index == index2
        assert conv.weight is not None and conv.bias is None
        assert torch.equal(state[key], conv.weight)
        assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)


def test_paper_configuration_parameter_count():
    with torch.device("meta"):
        model = StackedHourglass()
    block = sum(c.weight.numel() for _, c in model.block_convs())
    assert block == 4 * 4 * 3 * 2 * 128 * 128 * 3 * 3
    assert len(list(model.block_convs())) == 96


def test_other_input_channels_and_sizes():
    model = make_hourglass(in_channels=1, n_stacks=1)
    out = model(torch.randn(1, 1, 64, 48))
    assert out[0].shape == (1, 4, 16, 12)


def test_basic_blocks_declare_every_conv_bn_pair():
    model = make_hourglass(n_stacks=1, block_depth=3)
    blocks = [m for m in model.modules() if hasattr(m, "convs") and hasattr(m, "bns")]
    assert len(blocks) == 1 + 2 * 3 + 1  # stem, depth x (skip, down, up), innermost
    for block in blocks:
        assert block.bn_after_conv == (
            ("convs.0", "bns.0"),
            ("convs.1", "bns.1"),
            ("convs.2", "bns.2"),
        )
        for conv, bn in block.bn_after_conv:
            assert isinstance(block.get_submodule(conv), torch.nn.Conv2d)
            assert isinstance(block.get_submodule(bn), torch.nn.BatchNorm2d)
