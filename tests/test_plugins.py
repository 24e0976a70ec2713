"""Plugins: the user's module or .py file imported first, `module:attribute` in any registry, and a
clear ConfigError (naming the key and what to fix) for a missing module, a missing attribute, a
module that fails to import and a wrong signature — before any work."""

import sys
import textwrap

import pytest

from jaxevo.checkers import CHECKERS
from jaxevo.cli import main
from jaxevo.data.base import SOURCES
from jaxevo.errors import ConfigError
from jaxevo.evolve.censor import QUALITY
from jaxevo.evolve.recipe import STAGES
from jaxevo.evolve.scorers import SCORERS, Scorer
from jaxevo.losses import PREFERENCE_LOSSES
from jaxevo.plugins import check_signature, is_reference, load_plugins, resolve
from jaxevo.rewards import REWARDS
from jaxevo.train.objectives import OBJECTIVES

PLUGIN = textwrap.dedent('''
    from jaxevo.evolve.scorers import register_scorer
    from jaxevo.rewards import register_reward

    LOADED = []
    LOADED.append(1)  # counts executions: a plugin named twice must run once

    @register_scorer("test_plugin_len")
    def by_length(group, params):
        return [float(len(r["text"])) for r in group["responses"]]

    @register_reward("test_plugin_has_x")
    def has_x(prompts, completions, **columns):
        return [float("x" in c) for c in completions]

    def plain_scorer(group, params):
        return [0.25 for _ in group["responses"]]

    def two_args(a, b):
        return a

    def one_arg(group):
        return []

    NOT_CALLABLE = 3
''')


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN)
    yield path
    SCORERS.remove("test_plugin_len")
    REWARDS.remove("test_plugin_has_x")


def test_a_plugin_file_registers_once_and_is_found_by_path_or_by_name(plugin_file, monkeypatch):
    (mod,) = load_plugins([str(plugin_file)])
    assert "test_plugin_len" in SCORERS and "test_plugin_has_x" in REWARDS
    # Named again (the config and --plugin): not executed again, so no duplicate registration.
    monkeypatch.chdir(plugin_file.parent)
    assert load_plugins(["my_plugin.py", str(plugin_file)]) == [mod, mod] and mod.LOADED == [1]
    # The decorated function names its registered entry; a plain one is adapted.
    assert SCORERS.get(f"{plugin_file}:by_length") is SCORERS["test_plugin_len"]
    assert SCORERS.get("my_plugin:by_length") is SCORERS["test_plugin_len"]  # by the file's stem
    s = SCORERS.get("my_plugin:plain_scorer", "score.scorer")
    assert isinstance(s, Scorer) and s({"responses": [{"text": "a"}] * 3}, {}) == [0.25] * 3
    assert "my_plugin:plain_scorer" not in SCORERS  # a reference is not added to the names


def test_a_module_on_the_import_path(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "rewards.py").write_text("def brevity(prompts, completions, **kw):\n"
                                    "    return [1.0 / (1 + len(c)) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = REWARDS.get("userpkg.rewards:brevity")
    assert fn(prompts=["p"], completions=["abc"]) == [0.25]
    assert load_plugins("userpkg.rewards")[0] is sys.modules["userpkg.rewards"]


def test_missing_module_attribute_and_file_are_clear(plugin_file):
    with pytest.raises(ConfigError, match=r"score\.scorer: cannot import module 'no_such_mod_xyz': "
                                          r"no module named 'no_such_mod_xyz'.*PYTHONPATH"):
        SCORERS.get("no_such_mod_xyz:fn", "score.scorer")
    with pytest.raises(ConfigError, match=r"run\.plugins\[1\]: cannot import module 'no_such_mod_xyz'"):
        load_plugins(["json", "no_such_mod_xyz"], "run.plugins")
    with pytest.raises(ConfigError, match=r"--plugin\[0\]: plugin file not found: nope/missing\.py"):
        load_plugins(["nope/missing.py"], "--plugin")
    with pytest.raises(ConfigError, match=r"module '.*my_plugin\.py' has no attribute 'nope'; "
                                          r"it defines: .*by_length.*plain_scorer"):
        resolve(f"{plugin_file}:nope", "score.scorer")


def test_a_module_that_fails_to_import_says_why(tmp_path, monkeypatch):
    (tmp_path / "needs_dep.py").write_text("import not_installed_dep_xyz\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('bad config in plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"module 'needs_dep' failed to import: it needs "
                                          r"'not_installed_dep_xyz', which is not installed"):
        load_plugins(["needs_dep"])
    with pytest.raises(ConfigError, match=r"raises\.py raised while importing: RuntimeError: bad config"):
        load_plugins([str(tmp_path / "raises.py")])


def test_wrong_signatures_and_wrong_kinds_are_refused_per_registry(plugin_file):
    load_plugins([str(plugin_file)])
    with pytest.raises(ConfigError, match=r"score\.scorer 'my_plugin:one_arg': one_arg\(group\) cannot "
                                          r"be called as fn\(group, params\)"):
        SCORERS.get("my_plugin:one_arg", "score.scorer")
    with pytest.raises(ConfigError, match=r"two_args\(a, b\) cannot be called as "
                                          r"fn\(prompts, completions, \*\*columns\)"):
        REWARDS.get("my_plugin:two_args", "score.rewards[0].fn")
    with pytest.raises(ConfigError, match=r"NOT_CALLABLE.*int, not a function"):
        REWARDS.get("my_plugin:NOT_CALLABLE")
    with pytest.raises(ConfigError, match=r"censor\.quality 'my_plugin:one_arg'.*fn\(item, text, feedback\)"):
        QUALITY.get("my_plugin:one_arg", "censor.quality")
    # Registries of spec objects say what to build instead of a plain function.
    for reg, hint in [(STAGES, r"not a Stage; decorate the function with @jaxevo\.evolve\.recipe\.stage"),
                      (PREFERENCE_LOSSES, r"not a LossSpec; decorate the function with @jaxevo\.losses\.register"),
                      (OBJECTIVES, r"not a Objective; build an Objective"),
                      (SOURCES, r"not a SourceType; decorate the factory with @jaxevo\.data\.register_source"),
                      (CHECKERS, r"not a Checker; build a jaxevo\.checkers\.Checker")]:
        with pytest.raises(ConfigError, match=r"'my_plugin:two_args' is a function, " + hint):
            reg.get("my_plugin:two_args")


def test_unknown_plain_name_mentions_references():
    with pytest.raises(ConfigError, match=r"unknown reward 'nope'; known: .*\(or your own as "
                                          r"'package\.module:attribute'\)"):
        REWARDS.get("nope")


def test_reference_syntax_and_signature_check():
    assert is_reference("a.b:c") and is_reference("x/y.py:fn")
    assert not is_reference("verifier") and not is_reference(":x") and not is_reference("x:")
    check_signature(lambda prompts, completions, **kw: [], ("prompts", "completions"), "w",
                    kwargs=True, by_name=True)
    with pytest.raises(ConfigError, match="cannot be called as"):  # no **kwargs: columns would fail
        check_signature(lambda prompts, completions: [], ("prompts", "completions"), "w",
                        kwargs=True, by_name=True)


LOSS_PLUGIN = textwrap.dedent('''
    import jax
    from jaxevo.losses import register

    @register("test_plugin_loss")
    def shifted_sigmoid(c, r, rc, rr, *, beta=0.1):
        h = (c - rc) - (r - rr)
        return -jax.nn.log_sigmoid(beta * h - 1.0), beta * (c - rc), beta * (r - rr)
''')


def test_jaxevo_train_imports_its_configs_plugins_relative_to_the_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "my_loss.py").write_text(LOSS_PLUGIN)
    cfg = tmp_path / "conf" / "train.yaml"
    cfg.write_text("plugins: [my_loss.py]\nobjective: {name: preference, loss_type: 'my_loss:shifted_sigmoid'}\n")
    monkeypatch.chdir(tmp_path)  # the plugin is found beside the config, not in the cwd
    try:
        assert main(["train", "--config", str(cfg), "--print-config"]) == 0
        spec = PREFERENCE_LOSSES.get("my_loss:shifted_sigmoid", "objective.loss_type")
        assert spec is PREFERENCE_LOSSES["test_plugin_loss"]
    finally:
        PREFERENCE_LOSSES.remove("test_plugin_loss")
    cfg.write_text("plugins: [missing_loss.py]\n")
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    assert "plugins[0]: plugin file not found: missing_loss.py" in capsys.readouterr().err
