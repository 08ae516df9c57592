"""One registry shape (radiopath.registry) for aggregators, encoders and classification pipelines."""

import sys

import pytest

from radiopath.classification.base import PIPELINES
from radiopath.encoders import ENCODERS
from radiopath.models import AGGREGATORS, SPARRAAggregator
from radiopath.registry import Registry, UnknownNameError


def test_register_get_create_and_names():
    shapes = Registry("shape")

    @shapes.register("square")
    def square(side: float) -> float:
        return side * side

    assert shapes.get("square") is square
    assert shapes.create("square", 3.0) == 9.0
    assert shapes.names() == list(shapes) == ["square"]
    assert "square" in shapes and "circle" not in shapes


def test_a_name_registered_twice_is_refused():
    shapes = Registry("shape")
    shapes.register("square")(lambda: None)
    with pytest.raises(ValueError, match="shape 'square' is registered twice"):
        shapes.register("square")(lambda: None)
    with pytest.raises(ValueError, match="registered twice"):
        shapes.register("square", member="variant")(lambda variant: None)


def test_a_family_builds_every_member_by_its_suffix():
    shapes = Registry("shape")

    @shapes.register("polygon", member="sides")
    def polygon(sides: str, *, scale: float = 1.0) -> tuple[int, float]:
        return int(sides), scale

    assert shapes.create("polygon:6", scale=2.0) == (6, 2.0)
    assert shapes.names() == ["polygon:<sides>"]
    assert "polygon:5" in shapes and "polygon" not in shapes and "polygon:" not in shapes
    with pytest.raises(UnknownNameError, match=r"unknown shape 'polygon'; known: polygon:<sides>"):
        shapes.get("polygon")


def test_unknown_name_error_lists_the_known_names():
    shapes = Registry("shape")
    for name in ("square", "circle"):
        shapes.register(name)(lambda: None)
    with pytest.raises(UnknownNameError) as error:
        shapes.create("triangle")
    assert str(error.value) == "unknown shape 'triangle'; known: circle, square"
    assert (error.value.kind, error.value.name, error.value.known) == ("shape", "triangle", ["circle", "square"])
    assert isinstance(error.value, LookupError)


def test_builtin_modules_are_imported_on_first_use_only(tmp_path, monkeypatch):
    (tmp_path / "fruit_registry.py").write_text(
        "from radiopath.registry import Registry\n"
        "FRUITS = Registry('fruit', builtin_modules=('fruit_apple',))\n")
    (tmp_path / "fruit_apple.py").write_text(
        "from fruit_registry import FRUITS\n"
        "@FRUITS.register('apple')\n"
        "def apple():\n"
        "    return 'an apple'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("fruit_registry", "fruit_apple"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    from fruit_registry import FRUITS

    assert "fruit_apple" not in sys.modules
    assert FRUITS.create("apple") == "an apple"
    assert "fruit_apple" in sys.modules and FRUITS.names() == ["apple"]


# --- the three registries of the package -------------------------------------------------

@pytest.mark.parametrize("registry, kind", [(AGGREGATORS, "aggregator"), (ENCODERS, "encoder"),
                                            (PIPELINES, "classification pipeline")])
def test_every_registry_refuses_an_unknown_name_listing_the_known(registry, kind):
    with pytest.raises(UnknownNameError, match=f"unknown {kind} 'nonesuch'; known: ") as error:
        registry.create("nonesuch")
    assert error.value.known == registry.names() and error.value.known


def test_the_builtin_entries_are_registered():
    assert AGGREGATORS.names() == ["abmil", "mean", "sparra"]
    assert AGGREGATORS.get("sparra") is SPARRAAggregator
    builtin = {"tr_rf", "tr_xgb", "cr_rf", "cr_tr_rf", "cr_xgb", "cr_tr_xgb", "simclr_rf", "simclr_mlp", "multiphase",
               "rgcnn"}
    # other test modules register spy pipelines ("test_*") in the same process
    assert {name for name in PIPELINES.names() if not name.startswith("test_")} == builtin
    assert {"uni", "conch", "hipt", "ctranspath", "chief", "segvol", "m3d_clip", "pathomics",
            "radiomics_scalar", "radiomics_maps", "timm:<model_name>"} == set(ENCODERS.names())
