from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from pxexec.config import from_dict, load
from pxexec.errors import ConfigError
from pxexec.policies import Always, Never, Policy, SizeAtLeast, TypeIn, load_policy
from pxexec.sizing import estimate_nbytes


def test_size_estimates_per_type() -> None:
    assert estimate_nbytes(b"x" * 1000) == 1000
    assert estimate_nbytes(np.ones(1000)) == 8000
    df = pd.DataFrame({"a": np.ones(1000)})
    assert estimate_nbytes(df) >= 8000
    assert estimate_nbytes(pl.DataFrame({"a": np.ones(1000)})) >= 8000
    assert estimate_nbytes(memoryview(b"abc")) == 3
    big_list = [b"x" * 100] * 100_000  # walk is bounded, then extrapolated
    assert 100 * 100_000 <= estimate_nbytes(big_list) <= 200 * 100_000


def test_size_at_least_never_serializes() -> None:
    class Exploding:
        def __reduce__(self) -> Any:
            raise AssertionError("serialized")

    assert not SizeAtLeast(10**6)(Exploding())
    assert SizeAtLeast(100)(np.ones(100)) and not SizeAtLeast(1000)(np.ones(100))


def test_type_in_classes_and_strings_without_import() -> None:
    policy = TypeIn(np.ndarray, "pandas:DataFrame", "nosuchmodule:Thing")
    assert policy(np.ones(1)) and policy(pd.DataFrame()) and not policy([1])

    class Sub(pd.DataFrame):
        pass

    assert policy(Sub())


def test_combinators_and_pickling() -> None:
    policy = (SizeAtLeast(100) & ~TypeIn(bytes)) | TypeIn(dict)
    assert policy(np.ones(100)) and not policy(b"x" * 1000) and policy({})
    clone = pickle.loads(pickle.dumps(policy))
    assert clone(np.ones(100)) and not clone(b"x" * 1000)
    assert (Always() & (lambda x: x == 1))(1) and not Never()(1)
    with pytest.raises(TypeError):
        Always() & 5


def test_bad_builtin_arguments() -> None:
    with pytest.raises(ConfigError):
        SizeAtLeast(-1)
    with pytest.raises(ConfigError):
        TypeIn()
    with pytest.raises(ConfigError):
        TypeIn("no-colon")


def test_load_policy_builtins_and_user_modules() -> None:
    assert load_policy({"type": "size_at_least", "nbytes": 5}) == SizeAtLeast(5)
    nested = load_policy({"type": "all", "policies": [
        {"type": "size_at_least", "nbytes": 5}, {"type": "not", "policy": {"type": "never"}},
    ]})
    assert nested(b"123456") and not nested(b"1")
    user = load_policy("examples.policies:large_arrays")
    assert user(np.ones(200_000)) and not user(np.ones(10))
    factory = load_policy({"type": "examples.policies:frames_or_large", "min_bytes": 10})
    assert isinstance(factory, Policy) and factory(b"x" * 20)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "sizeish"}, "unknown policy type 'sizeish'"),
        ({"type": "size_at_least"}, "needs the key(s) ['nbytes']"),
        ({"type": "size_at_least", "nbytes": 1.5}, "nbytes: must be a whole number"),
        ({"type": "size_at_least", "nbytes": "big"}, "nbytes: 'big' is not a size"),
        ({"type": "size_at_least", "nbytes": 1, "extra": 2}, "unknown key(s) ['extra']"),
        ({"type": "type_in", "types": "pandas:DataFrame"}, "non-empty list"),
        ({"type": "no.such.module:policy"}, "cannot import module 'no.such.module'"),
        ({"type": "examples.policies:missing"}, "has no attribute 'missing'"),
        ({"type": "examples.policies:large_arrays", "bad": 1}, "it takes no keys"),
        ({"type": "examples.policies:frames_or_large", "bad": 1}, "calling examples.policies"),
        (5, "a policy is a table"),
        ({}, "needs a 'type'"),
    ],
)
def test_load_policy_errors_name_the_place(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(spec, where="x.toml: [policy]")
    assert message in str(info.value) and "x.toml: [policy]" in str(info.value)


def test_example_configs_load_and_decide() -> None:
    config = load("examples/pxexec.toml")
    assert config.store.name == "example" and config.executor_options["ownership"] is True
    assert config.policy(pd.DataFrame({"a": [1]})) and config.policy(np.ones(200_000))
    assert not config.policy(np.ones(10))
    config.store.close()
    user = load("examples/pxexec-user-policy.toml")
    assert user.policy(b"x" * 6_000_000) and not user.policy(b"x" * 10)
    user.store.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "a [store] table"),
        ({"store": {"name": "x", "connector": "shm"}, "extra": {}}, "unknown section(s) ['extra']"),
        ({"store": {"name": "x"}}, "[store].connector: a connector URL"),
        ({"store": {"name": "x", "connector": "nosuch"}}, "Unknown connector 'nosuch'"),
        ({"store": {"name": "x", "connector": {"type": "file"}}}, "[store].connector: bad option"),
        ({"store": {"name": "", "connector": "shm"}}, "[store].name"),
        ({"store": {"name": "x", "connector": "shm", "size": 1}}, "unknown key(s) ['size']"),
        ({"store": {"name": "x", "connector": "shm"}, "executor": {"ownershp": True}},
         "unknown key(s) ['ownershp'] in [executor]"),
        ({"store": {"name": "x", "connector": "shm"}, "executor": {"ownership": "yes"}},
         "must be true or false"),
        ({"store": {"name": "x", "connector": "shm", "secret_env": 7}},
         "[store].secret_env must name an environment variable"),
    ],
)
def test_config_errors_name_file_and_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(data, source="job.toml")
    assert message in str(info.value) and "job.toml" in str(info.value)


def test_config_file_errors(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(bad))


def test_config_store_signs_with_the_named_variable(monkeypatch: Any) -> None:
    monkeypatch.setenv("PXEXEC_CONFIG_SECRET", "from the environment")
    config = from_dict({"store": {"name": "signed-config", "connector": "local",
                                  "secret_env": "PXEXEC_CONFIG_SECRET"}})
    assert config.store.secret_env == "PXEXEC_CONFIG_SECRET"
    assert config.store.get(config.store.put([1])) == [1]
    assert "from the environment" not in repr(config.store.config())
