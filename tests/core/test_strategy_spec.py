"""Strategy specs: parsing, composition rules and clear errors."""
import pytest

from transferlab.errors import ConfigError
from transferlab.strategies import list_strategies, parse_strategy


def test_composed_spec_round_trips():
    s = parse_strategy("discriminative:decay=0.4+l2sp:alpha=0.2,beta=0.01")
    assert [p.name for p in s.parts] == ["full", "discriminative", "l2sp"]
    assert s.part("l2sp").params.alpha == 0.2
    assert s.spec() == "full+discriminative:decay=0.4+l2sp:alpha=0.2"  # defaults are left out


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown strategy 'nope': choose from .*full.*linear_probe"),
    ("freeze:q=1", "unknown key 'q'; valid keys: k, train_bn, backbone_lr"),
    ("freeze:k=two", "k='two' is not a valid int"),
    ("linear_probe+full", "contradictory strategies: linear_probe \\+ full"),
    ("discriminative:decay=2", "decay must be in"),
    ("freeze:k", "expected key=value"),
    ("", "empty strategy spec"),
    ("l2sp+l2sp", "given twice"),
])
def test_bad_specs_get_one_clear_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_strategy(spec)


def test_core_strategies_are_registered():
    names = {cls.name for cls in list_strategies()}
    assert {"full", "linear_probe", "freeze", "gradual_unfreeze", "discriminative", "lp_ft", "l2sp"} <= names
