"""Unit and site names: parsing, formatting, --layer/--dim and the messages for bad input."""

from __future__ import annotations

import pytest

from maxact.errors import MaxactError
from maxact.units import (
    SITE_KINDS,
    SiteRef,
    UnitId,
    layer_dim_unit,
    parse_unit,
    parse_unit_spec,
)

BLOCK_SITES = [s for s in SITE_KINDS if SITE_KINDS[s].has_block]


@pytest.mark.parametrize("site", BLOCK_SITES)
@pytest.mark.parametrize("layer, index", [(0, 0), (2, 345), (17, 1535)])
def test_block_unit_round_trip(site, layer, index):
    text = f"L{layer}.{site}:{index}"
    unit = parse_unit(text)
    assert unit == UnitId(site, layer, index)
    assert str(unit) == text
    assert parse_unit(str(unit)) == unit
    assert unit.site_ref == SiteRef(site, layer)
    assert unit.site_ref.name == f"L{layer}.{site}"
    assert str(unit.site_ref) == f"L{layer}.{site}"
    assert unit.site_ref.unit(index) == unit


def test_layerless_unit_round_trip():
    unit = parse_unit("ln_final:7")
    assert unit == UnitId("ln_final", None, 7)
    assert str(unit) == "ln_final:7"
    assert unit.site_ref.name == "ln_final"
    assert unit.site_ref.tl_hook() == "ln_final.hook_normalized"


def test_reference_unit_is_hidden_states_2():
    unit = parse_unit("L2.resid_pre:345")
    assert (unit.site, unit.layer, unit.index) == ("resid_pre", 2, 345)
    assert unit.site_ref.tl_hook() == "blocks.2.hook_resid_pre"


@pytest.mark.parametrize(
    "site, hook",
    [
        ("resid_pre", "blocks.5.hook_resid_pre"),
        ("resid_post", "blocks.5.hook_resid_post"),
        ("mlp_pre", "blocks.5.mlp.hook_pre"),
        ("mlp_post", "blocks.5.mlp.hook_post"),
        ("attn_q", "blocks.5.attn.hook_q"),
        ("attn_k", "blocks.5.attn.hook_k"),
        ("attn_v", "blocks.5.attn.hook_v"),
        ("attn_out", "blocks.5.hook_attn_out"),
        ("mlp_out", "blocks.5.hook_mlp_out"),
    ],
)
def test_transformerlens_hook_names(site, hook):
    assert SiteRef(site, 5).tl_hook() == hook


def test_whole_site_spec():
    ref, index = parse_unit_spec("L2.resid_pre:*")
    assert ref == SiteRef("resid_pre", 2) and index is None
    ref, index = parse_unit_spec("ln_final:*")
    assert ref == SiteRef("ln_final", None) and index is None
    ref, index = parse_unit_spec("  L3.mlp_post:12 ")  # surrounding spaces are ignored
    assert ref == SiteRef("mlp_post", 3) and index == 12


def test_whole_site_is_not_one_unit():
    with pytest.raises(
        MaxactError, match=r"names a whole site; give one index, e.g. L2.resid_pre:0"
    ):
        parse_unit("L2.resid_pre:*")


def test_units_sort_and_hash():
    units = [parse_unit(t) for t in ("L2.resid_pre:3", "L0.resid_pre:9", "L2.resid_pre:1")]
    assert len({*units, parse_unit("L2.resid_pre:3")}) == 3
    assert sorted(units)[0] == UnitId("resid_pre", 0, 9)


# ---- --layer L --dim D ---------------------------------------------------------------------------
def test_layer_dim_below_n_layers_is_resid_pre():
    assert layer_dim_unit(2, 345, 30) == UnitId("resid_pre", 2, 345)
    assert layer_dim_unit(0, 0, 30) == UnitId("resid_pre", 0, 0)
    assert layer_dim_unit(29, 5, 30) == UnitId("resid_pre", 29, 5)


def test_layer_dim_equal_n_layers_is_ln_final():
    assert layer_dim_unit(30, 5, 30) == UnitId("ln_final", None, 5)
    assert str(layer_dim_unit(30, 5, 30)) == "ln_final:5"


@pytest.mark.parametrize("layer", [31, 100, -1])
def test_layer_dim_out_of_range_shows_range(layer):
    with pytest.raises(MaxactError) as err:
        layer_dim_unit(layer, 0, 30)
    msg = str(err.value)
    assert f"--layer {layer} is out of range" in msg
    assert "0..30" in msg and "0..29 are L{layer}.resid_pre" in msg and "ln_final" in msg
    assert "\n" not in msg


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "",
        "banana",
        "L2.resid_pre",
        "L2resid_pre:3",
        "2.resid_pre:3",
        "L2.resid_pre:-1",
        "L2.resid_pre:3.5",
        "Lx.resid_pre:3",
        "L2.Resid_pre:3",
        "L2.resid_pre:3:4",
        "L2.resid_pre:**",
    ],
)
def test_bad_syntax(text):
    with pytest.raises(MaxactError) as err:
        parse_unit_spec(text)
    msg = str(err.value)
    assert f"unit {text!r} is not a unit id" in msg
    assert "L2.resid_pre:345" in msg and "L2.resid_pre:*" in msg and "ln_final:{index}" in msg


@pytest.mark.parametrize("text", ["L2.resid:3", "L2.mlp_hidden:0", "ln_finall:1"])
def test_unknown_site_lists_valid_sites(text):
    with pytest.raises(MaxactError) as err:
        parse_unit_spec(text)
    msg = str(err.value)
    site = text.split(".")[-1].split(":")[0]
    assert f"unknown site {site!r}" in msg
    for valid in SITE_KINDS:
        assert valid in msg


def test_layerless_site_with_a_block():
    with pytest.raises(MaxactError, match=r"site 'ln_final' has no block: write ln_final:3"):
        parse_unit_spec("L2.ln_final:3")


@pytest.mark.parametrize("site", BLOCK_SITES)
def test_block_site_without_a_block(site):
    with pytest.raises(
        MaxactError, match=rf"site '{site}' needs a block: write L\{{block\}}.{site}:4"
    ):
        parse_unit_spec(f"{site}:4")
