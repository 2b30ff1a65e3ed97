import pytest

from tcompress import methods
from tcompress.decompose import max_tt_ranks
from tcompress.errors import MethodError, RankError
from tcompress.methods.base import RankSpec
from tcompress.methods.mps import mps_params
from tcompress.methods.tucker import tucker_params
from tcompress.stacking import MODE_NAMES

SHAPE = (4, 4, 3, 2, 128, 128, 3, 3)


def tucker(spec):
    return methods.get("tucker").resolve(RankSpec.parse(spec), SHAPE, MODE_NAMES).ranks


def mps(spec):
    return methods.get("mps").resolve(RankSpec.parse(spec), SHAPE, MODE_NAMES)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("4,4,3,2,64,64,3,3", (4, 4, 3, 2, 64, 64, 3, 3)),
        ("full", SHAPE),
        (None, SHAPE),
        ("-,2,full,1,64,-,2,2", (4, 2, 3, 1, 64, 128, 2, 2)),
        ("f_in=64,f_out=32", (4, 4, 3, 2, 64, 32, 3, 3)),
        ("stack=1, h=2", (1, 4, 3, 2, 128, 128, 2, 3)),
        ((1, None, 3, 2, 8, 8, 3, 3), (1, 4, 3, 2, 8, 8, 3, 3)),
        ({"f_in": 16}, (4, 4, 3, 2, 16, 128, 3, 3)),
        ((4.0, 4, 3, 2, 64, 64, 3, 3), (4, 4, 3, 2, 64, 64, 3, 3)),
    ],
)
def test_tucker_forms(spec, expected):
    assert tucker(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("1,2", "got 2 rank(s) ('1,2'); expected 8 Tucker ranks, one per mode (stack, depth,"),
        ("1,2,3,2,200,16,3,3", "rank of mode f_in is 200; expected an integer from 1 to 128"),
        ("1,2,3,2,0,16,3,3", "rank of mode f_in is 0; expected an integer from 1 to 128"),
        ("1,2,3,2,-4,16,3,3", "rank of mode f_in is -4; expected an integer from 1 to 128"),
        ("1,2,3,2,8.5,16,3,3", "rank of mode f_in is '8.5'; expected an integer from 1 to 128"),
        ("1,2,3,2,abc,16,3,3", "rank of mode f_in is 'abc'; expected an integer"),
        ("f_inn=4", "ranks name unknown mode(s) 'f_inn'; expected mode names from stack,"),
        ("f_in=4,5", "mix named and positional values"),
        ((1, 2, 3, 2, 8.5, 16, 3, 3), "rank of mode f_in is 8.5; expected an integer"),
        ("5,4,3,2,64,64,3,3", "rank of mode stack is 5; expected an integer from 1 to 4"),
    ],
)
def test_tucker_errors_name_mode_given_and_allowed(spec, message):
    with pytest.raises(RankError) as info:
        tucker(spec)
    assert message in str(info.value)


def test_max_tt_ranks():
    assert max_tt_ranks(SHAPE) == (4, 16, 48, 96, 1152, 9, 3)
    assert max_tt_ranks((2, 3)) == (2,)


def test_mps_forms_and_caps():
    assert mps("4,16,48,96,64,9,3").ranks == (4, 16, 48, 96, 64, 9, 3)
    assert mps("full").ranks == (4, 16, 48, 96, 1152, 9, 3)
    one = mps("8")
    assert one.ranks == (4, 8, 8, 8, 8, 8, 3)
    assert one.notes == (
        "bond 1: 8 capped at 4 (its maximal TT rank)",
        "bond 7: 8 capped at 3 (its maximal TT rank)",
    )


def test_bond_caps_follow_the_previous_bond():
    # TT-SVD keeps at most (previous bond x mode size) at each step.
    r = mps("1,16,48,96,64,9,3")
    assert r.ranks == (1, 4, 12, 24, 64, 9, 3)
    assert r.notes[0] == "bond 2: 16 capped at 4 (bond 1 x 4)"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("2,3,4", "got 3 MPS bond rank(s) ('2,3,4'); expected 7 bond ranks"),
        ("1,2,6,0,16,3,3", "MPS bond rank 4 is 0; expected an integer at least 1"),
        ("f_in=3", "named modes apply to Tucker only"),
    ],
)
def test_mps_errors(spec, message):
    with pytest.raises(RankError) as info:
        mps(spec)
    assert message in str(info.value)


def test_unknown_method():
    with pytest.raises(
        MethodError, match="method 'svd-magic' is unknown; expected one of tucker, mps, cp"
    ):
        methods.get("svd-magic")


def test_closed_form_counts():
    assert tucker_params(SHAPE, (4, 4, 3, 2, 64, 64, 3, 3)) == 3_555_391
    bonds = (4, 16, 48, 96, 64, 9, 3)
    assert mps_params(SHAPE, bonds) == (
        4 * 4
        + 4 * 4 * 16
        + 16 * 3 * 48
        + 48 * 2 * 96
        + 96 * 128 * 64
        + 64 * 128 * 9
        + 9 * 3 * 3
        + 3 * 3
    )
