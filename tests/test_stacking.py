import torch

from tcompress.stacking import MODE_NAMES, stack_hourglass, stack_kernels, unstack_kernels

from .conftest import make_hourglass


def test_mode_names_follow_the_paper_order():
    assert MODE_NAMES == ("stack", "depth", "pathway", "block", "f_in", "f_out", "h", "w")


def test_slice_is_the_kernel_with_channels_swapped():
    model = make_hourglass()
    W = stack_hourglass(model.state_dict(), model.config)
    assert W.shape == (2, 2, 3, 2, 8, 8, 3, 3)
    for index, conv in model.block_convs():
        assert torch.equal(W[index].permute(1, 0, 2, 3), conv.weight)


def test_round_trip_is_exact():
    kernels = [torch.randn(5, 7, 3, 2) for _ in range(12)]
    W = stack_kernels(kernels, (2, 3, 2))
    assert W.shape == (2, 3, 2, 7, 5, 3, 2)
    back = unstack_kernels(W, n_grid_modes=3)
    assert all(torch.equal(a, b) for a, b in zip(kernels, back))
    assert torch.equal(stack_kernels(back, (2, 3, 2)), W)


def test_dtype_is_kept():
    kernels = [torch.randn(4, 4, 3, 3, dtype=torch.float64) for _ in range(2)]
    assert stack_kernels(kernels, (2,)).dtype == torch.float64


def test_stacking_on_several_threads_matches_one(monkeypatch):
    kernels = [torch.randn(6, 5, 3, 3) for _ in range(7)]  # an odd count: unequal shares
    shared = stack_kernels(kernels, (7,))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert torch.equal(stack_kernels(kernels, (7,)), shared)
    assert all(torch.equal(shared[i], k.transpose(0, 1)) for i, k in enumerate(kernels))
