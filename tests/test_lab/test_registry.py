"""cdat_core.lab.registry: name -> spec, unique names, scoped registrations, live views."""

import pytest

from cdat_core.lab.registry import FieldView, Registry


def _colors():
    reg = Registry("color", key=str.lower)
    for name in ("Red", "Green"):
        reg.register(name)
    return reg


def test_entries_keep_registration_order_and_names_are_unique():
    reg = _colors()
    assert list(reg) == ["red", "green"] and reg["green"] == "Green" and len(reg) == 2
    with pytest.raises(ValueError, match="color 'red' is already registered"):
        reg.register("RED")


def test_lookup_names_the_kind_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown color 'blue'; choose one of \('red', 'green'\)"):
        _colors().lookup("blue")
    with pytest.raises(KeyError):
        _colors()["blue"]  # Mapping semantics for `in`, `get`


def test_scoped_restores_added_and_removed_entries_even_on_error():
    reg = _colors()
    with pytest.raises(RuntimeError), reg.scoped():
        reg.register("Blue")
        reg.unregister("red")
        assert list(reg) == ["green", "blue"]
        raise RuntimeError
    assert list(reg) == ["red", "green"]


def test_default_key_is_the_name_attribute():
    class Spec:
        name = "x"

    reg = Registry("spec")
    spec = reg.register(Spec())
    assert reg["x"] is spec and repr(reg) == "Registry('spec', ('x',))"


def test_field_view_is_live():
    reg = _colors()
    view = FieldView(reg, len)
    assert dict(view) == {"red": 3, "green": 5}
    with reg.scoped():
        reg.register("Blue")
        assert view["blue"] == 4 and len(view) == 3
    assert "blue" not in view
