"""The one registry helper: duplicates are refused, unknown names listed, aliases share an entry."""

import pytest

from jaxevo.errors import ConfigError
from jaxevo.registry import Registry, RegistryError


def test_register_get_and_aliases():
    reg = Registry("scorer")

    @reg.register("a", "alias")
    def fn():
        return 1

    assert reg.get("a") is fn and reg["alias"] is fn
    assert sorted(reg) == ["a", "alias"] and len(reg) == 2 and "a" in reg


def test_duplicate_name_is_refused_and_names_both_origins():
    reg = Registry("loss")
    reg.add("x", len)
    with pytest.raises(RegistryError, match=r"loss 'x' is registered twice.*builtins\.len.*builtins\.abs"):
        reg.add("x", abs)
    assert reg.get("x") is len  # the first entry is kept
    reg.add("x", abs, replace=True)
    assert reg.get("x") is abs


def test_a_failed_registration_adds_none_of_its_names():
    reg = Registry("stage")
    reg.add("taken", len)
    with pytest.raises(RegistryError):
        reg.add("new", abs, "taken")
    assert "new" not in reg


def test_unknown_name_lists_the_known_ones():
    reg = Registry("scorer")
    reg.add("verifier", len)
    reg.add("censor", abs)
    with pytest.raises(ConfigError, match=r"unknown score\.scorer 'nope'; known: censor, verifier"):
        reg.get("nope", "score.scorer")
    with pytest.raises(RegistryError):
        reg.add("", len)
