"""Every error class lives in tcompress.errors, and every bad input a user can give fails with one
of them, with a message naming the argument, what it got and what was expected."""

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tcompress
from tcompress import errors
from tcompress.decompose import tensor_train, tucker
from tcompress.decompose._products import multi_mode_product
from tcompress.decompose.cp import cp_als
from tcompress.errors import (
    CheckpointError,
    DataError,
    DecompositionError,
    ForwardFormError,
    MethodError,
    TcompressError,
)
from tcompress.family import layout_family
from tcompress.layerwise import LayerwiseNet, layer_method

ROOT = Path(tcompress.__file__).parent
ERRORS = ROOT / "errors.py"
# A base named like this makes a class an exception class. Subclasses of KeyboardInterrupt or
# SystemExit (train.finetune.TrainingInterrupted) are signals that stop a run, not errors: allowed.
_EXCEPTION_BASE = re.compile(r"(Error|Exception|Warning)$")


def _error_classes() -> list[type]:
    return [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]


def test_every_error_class_is_a_tcompress_error():
    classes = _error_classes()
    assert len(classes) >= 12
    for cls in classes:
        assert issubclass(cls, TcompressError), cls
        assert cls.__doc__, f"{cls.__name__} has no docstring"
    # TcompressError is a ValueError, so `except ValueError` callers keep working.
    assert issubclass(TcompressError, ValueError)


def test_errors_module_lists_every_kind():
    for cls in _error_classes():
        if cls is not TcompressError:
            assert f":class:`{cls.__name__}`" in errors.__doc__, cls.__name__


def test_errors_module_imports_nothing_of_tcompress():
    for node in ast.walk(ast.parse(ERRORS.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import inside the package is an import of tcompress.
            names = ["tcompress"] if node.level else [node.module or ""]
        else:
            continue
        assert not any(n.split(".")[0] == "tcompress" for n in names), ast.unparse(node)


def _exception_classes(source: str) -> list[tuple[int, str]]:
    """(line, name) of every class in ``source`` with a base named like an exception class."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
            if any(b == "BaseException" or _EXCEPTION_BASE.search(b) for b in bases):
                found.append((node.lineno, node.name))
    return found


def test_the_exception_class_finder():
    source = """
class A(ValueError): ...
class B(errors.TcompressError): ...
class C(Exception): ...
class D(nn.Module): ...
class Stop(KeyboardInterrupt): ...
def f():
    class E(RuntimeWarning): ...
"""
    assert sorted(_exception_classes(source)) == [(2, "A"), (3, "B"), (4, "C"), (8, "E")]


def test_no_exception_class_is_defined_outside_errors_py():
    found = [
        f"{path.relative_to(ROOT.parent)}:{line} class {name}"
        for path in sorted(ROOT.rglob("*.py"))
        if path != ERRORS
        for line, name in _exception_classes(path.read_text())
    ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("tcompress.evaluation.decode", "EvaluationError"),
        ("tcompress.family", "FamilyError"),
        ("tcompress.export.onnx", "ExportError"),
        ("tcompress.export.bench", "BenchError"),
    ],
)
def test_moved_classes_still_import_from_their_old_modules(module, name):
    old = getattr(__import__(module, fromlist=[name]), name)
    assert old is getattr(errors, name)
    assert old.__module__ == "tcompress.errors"


# -- the raise sites ---------------------------------------------------------------------------


def test_save_refuses_a_dense_module(tmp_path):
    path = tmp_path / "conv.pt"
    with pytest.raises(
        CheckpointError, match=r"^tnet is a Conv2d; expected a TNet or a LayerwiseNet to save$"
    ):
        tcompress.save(nn.Conv2d(2, 2, 3), path)
    assert not path.exists()


LAYERWISE = "expected one of layerwise-tucker, layerwise-cp, tai"


def test_layerwise_net_refuses_a_method_that_is_not_layer_wise(hourglass):
    family = layout_family(hourglass)
    with pytest.raises(MethodError, match=f"^method 'tucker' is not layer-wise; {LAYERWISE}$"):
        LayerwiseNet(hourglass, "tucker", (2, 2), family)


def test_layer_methods_refuse_a_method_that_is_not_layer_wise():
    with pytest.raises(MethodError, match=f"^method 'cp' is not layer-wise; {LAYERWISE}$"):
        layer_method("cp")
    with pytest.raises(MethodError, match=f"^method 'mps' is not layer-wise; {LAYERWISE}$"):
        layer_method("mps")


@pytest.mark.parametrize(
    "decompose",
    [
        lambda t: tucker(t, (1, 1)),
        lambda t: tensor_train(t, (1,)),
        lambda t: cp_als(t, 1),
    ],
    ids=["tucker", "tensor_train", "cp_als"],
)
def test_decompositions_refuse_what_is_not_a_float_tensor(decompose):
    with pytest.raises(
        DecompositionError, match=r"^tensor is a ndarray; expected a torch\.Tensor$"
    ):
        decompose(np.zeros((3, 4)))
    with pytest.raises(
        DecompositionError,
        match=r"^tensor has dtype torch\.int64; expected float32 or float64$",
    ):
        decompose(torch.zeros(3, 4, dtype=torch.int64))


def test_tucker_refuses_a_negative_sweep_count():
    with pytest.raises(
        DecompositionError, match=r"^n_iter is -1; expected a whole number of HOOI sweeps >= 0$"
    ):
        tucker(torch.randn(3, 4), (1, 1), n_iter=-1)


def test_multi_mode_product_names_its_matrices():
    # An internal invariant (tucker_to_tensor checks the count first): a plain ValueError.
    with pytest.raises(
        ValueError, match=r"^matrices has 1 entries; expected 2, one per mode of tensor$"
    ):
        multi_mode_product(torch.randn(3, 4), [None])


def test_data_aware_refinement_refuses_no_images(hourglass):
    with pytest.raises(
        DataError,
        match=r"^batches gave no images; expected at least one image to gather the layers' inputs$",
    ):
        tcompress.convert(hourglass, "tucker", refine_data=[])


FORMS = "expected one of reconstructed, factorized"


def test_unknown_forward_form(tmp_path, hourglass):
    with pytest.raises(ForwardFormError, match=f"^forward form 'fast' is unknown; {FORMS}$"):
        tcompress.convert(hourglass, forward="fast")
    tnet = tcompress.convert(hourglass)
    with pytest.raises(ForwardFormError, match=f"^forward form 'dense' is unknown; {FORMS}$"):
        tnet.set_forward("dense")
    path = tmp_path / "tnet.pt"
    tcompress.save(tnet, path)
    with pytest.raises(ForwardFormError, match=f"^forward form 'fast' is unknown; {FORMS}$"):
        tcompress.load(path, forward="fast")


class SamePadding(nn.Module):
    """Three 3x3 convolutions with padding="same": a family CP cannot run factorized."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(nn.Conv2d(4, 4, 3, padding="same") for _ in range(3)))

    def forward(self, x):
        return self.blocks(x)


def same_padding_net() -> SamePadding:
    torch.manual_seed(0)
    return SamePadding()


def test_factorized_cp_refuses_string_padding():
    arch = f"{__name__}:same_padding_net"
    tnet = tcompress.convert(
        same_padding_net(), "cp", 3, arch=arch, family="blocks.{i}", forward="factorized"
    )
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(
        ForwardFormError,
        match=r"^padding is 'same'; the factorized form of a CP T-Net needs integer padding "
        r"\(use forward='reconstructed'\)$",
    ):
        tnet(x)
    assert tnet.set_forward("reconstructed")(x).shape == x.shape
