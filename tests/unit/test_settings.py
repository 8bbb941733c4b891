from __future__ import annotations

import hashlib
import logging

import pytest

from promptcache import ConfigError, Settings
from promptcache.settings import key_digest


def test_defaults_are_the_embedded_ones() -> None:
    s = Settings.from_env({})
    assert (s.store, s.embedder, s.stats, s.llm) == ("sqlite", "local", "store", "none")
    assert s.ttl_seconds == 604800 and s.threshold is None
    assert s.sqlite_path.name == "cache.sqlite3"


def test_auto_selection_follows_credentials() -> None:
    s = Settings.from_env(
        {
            "UPSTASH_REDIS_REST_URL": "https://x.upstash.io/",
            "CLOUDFLARE_ACCOUNT_ID": "acc",
            "CLOUDFLARE_API_TOKEN": "tok",
            "CLOUDFLARE_KV_NAMESPACE_ID": "ns",
        }
    )
    assert (s.store, s.embedder, s.stats, s.llm) == (
        "upstash",
        "workers-ai",
        "cloudflare-kv",
        "workers-ai",
    )
    assert s.upstash_url == "https://x.upstash.io"
    assert s.model == "@cf/meta/llama-3.1-8b-instruct"
    assert Settings.from_env({"OPENAI_BASE_URL": "http://h/v1"}).llm == "openai"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROMPTCACHE_THRESHOLD": "1.5"}, "PROMPTCACHE_THRESHOLD"),
        ({"PROMPTCACHE_THRESHOLD": "high"}, "PROMPTCACHE_THRESHOLD"),
        ({"PROMPTCACHE_TTL_SECONDS": "-1"}, "PROMPTCACHE_TTL_SECONDS"),
        ({"PROMPTCACHE_STORE": "mongo"}, "PROMPTCACHE_STORE"),
        ({"PROMPTCACHE_STORE": "upstash"}, "UPSTASH_REDIS_REST_URL"),
        ({"PROMPTCACHE_EMBEDDER": "workers-ai"}, "CLOUDFLARE_ACCOUNT_ID"),
        ({"PROMPTCACHE_API_KEYS": "justakey"}, "PROMPTCACHE_API_KEYS"),
        ({"PROMPTCACHE_API_KEYS": "sha256:abc:alpha"}, "64 hex digits"),
        ({"PROMPTCACHE_API_KEYS": "a key:alpha"}, "without whitespace"),
        ({"PROMPTCACHE_API_KEYS": "k1:a", "PROMPTCACHE_ADMIN_KEY": "sha256:xyz"}, "ADMIN_KEY"),
        ({"PROMPTCACHE_INDEX": "faiss"}, "PROMPTCACHE_INDEX"),
        ({"PROMPTCACHE_INDEX": "redis"}, "PROMPTCACHE_REDIS_URL"),
        ({"PROMPTCACHE_REDIS_URL": "http://h:6379"}, "PROMPTCACHE_REDIS_URL must start"),
        ({"PROMPTCACHE_REDIS_ALGORITHM": "ivf"}, "PROMPTCACHE_REDIS_ALGORITHM"),
        ({"PROMPTCACHE_REDIS_EF_RUNTIME": "0"}, "PROMPTCACHE_REDIS_EF_RUNTIME"),
        ({"PROMPTCACHE_INDEX": "upstash-vector"}, "UPSTASH_VECTOR_REST_URL"),
        (
            {"PROMPTCACHE_INDEX": "upstash-vector", "UPSTASH_VECTOR_REST_URL": "https://v"},
            "UPSTASH_VECTOR_REST_TOKEN",
        ),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_index_is_chosen_by_setting() -> None:
    assert Settings.from_env({}).index == "process"
    s = Settings.from_env(
        {
            "PROMPTCACHE_INDEX": "redis",
            "PROMPTCACHE_REDIS_URL": "rediss://:secret@h:6379/0",
            "PROMPTCACHE_REDIS_ALGORITHM": "FLAT",
            "PROMPTCACHE_REDIS_EF_RUNTIME": "200",
        }
    )
    assert (s.index, s.redis_algorithm, s.redis_ef_runtime) == ("redis", "flat", 200)
    assert "secret" not in repr(s)
    s = Settings.from_env(
        {
            "PROMPTCACHE_INDEX": "upstash-vector",
            "UPSTASH_VECTOR_REST_URL": "https://v.upstash.io/",
            "UPSTASH_VECTOR_REST_TOKEN_SSM_PARAMETER": "/p/vector-token",
        }
    )
    assert (s.index, s.upstash_vector_url) == ("upstash-vector", "https://v.upstash.io")
    assert s.upstash_vector_token_ssm_parameter == "/p/vector-token"


def test_api_keys_map_to_tenants() -> None:
    s = Settings.from_env({"PROMPTCACHE_API_KEYS": "k1:alpha, k2:beta"})
    assert dict(s.api_keys) == {key_digest("k1"): "alpha", key_digest("k2"): "beta"}
    assert key_digest("k1") == hashlib.sha256(b"k1").hexdigest()


def test_keys_may_be_configured_as_their_sha256() -> None:
    """Only the digest need be stored: ``sha256:<hex>`` is the same key as the plain one."""
    hexed = hashlib.sha256(b"k1").hexdigest()
    s = Settings.from_env(
        {
            "PROMPTCACHE_API_KEYS": f"sha256:{hexed.upper()}:team:a,k2:beta",
            "PROMPTCACHE_ADMIN_KEY": "sha256:" + hashlib.sha256(b"root").hexdigest(),
        }
    )
    assert dict(s.api_keys) == {hexed: "team:a", key_digest("k2"): "beta"}
    assert s.admin_key == key_digest("root")
    with pytest.raises(ConfigError, match="ADMIN_KEY"):  # the same key twice, either spelling
        Settings.from_env(
            {"PROMPTCACHE_API_KEYS": f"sha256:{hexed}:a", "PROMPTCACHE_ADMIN_KEY": "k1"}
        )


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.store = "memory"  # type: ignore[misc]


def test_the_verifier_model_settings() -> None:
    from promptcache import runtime

    s = Settings.from_env({})
    assert (s.verifier_model, s.verifier_cutoff, s.verifier_below, s.verifier_model_band) == (
        "off", 0.5, 0.0, 0.04,
    )  # fmt: skip
    # local alone is the measured trade: the borderline 0.04 band
    default_on = runtime.build(
        Settings.from_env({"PROMPTCACHE_VERIFIER_MODEL": "local", "PROMPTCACHE_STORE": "memory"})
    ).rules.verifier_model
    assert default_on is not None and (default_on.band, default_on.below) == (0.04, 0.0)
    assert (
        runtime.build(Settings.from_env({"PROMPTCACHE_STORE": "memory"})).rules.verifier_model
        is None
    )
    on = Settings.from_env(
        {"PROMPTCACHE_VERIFIER_MODEL": "local", "PROMPTCACHE_VERIFIER_CUTOFF": "0.7",
         "PROMPTCACHE_VERIFIER_BELOW": "0.1", "PROMPTCACHE_VERIFIER_MODEL_BAND": "0.2",
         "PROMPTCACHE_VERIFIER_TIMEOUT": "0.25", "PROMPTCACHE_STORE": "memory"}
    )  # fmt: skip
    check = runtime.build(on).rules.verifier_model
    assert check is not None and (check.cutoff, check.below, check.band) == (0.7, 0.1, 0.2)
    assert check.verifier.timeout == 0.25  # type: ignore[attr-defined]
    for name, bad in (
        ("PROMPTCACHE_VERIFIER_MODEL", "remote"),
        ("PROMPTCACHE_VERIFIER_CUTOFF", "1.5"),
        ("PROMPTCACHE_VERIFIER_BELOW", "x"),
        ("PROMPTCACHE_VERIFIER_TIMEOUT", "0"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: bad})


def test_the_strict_guards_old_names_are_read_for_one_release(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PROMPTCACHE_VERIFIER(_BAND) named the strict guards before the trained verifier existed:
    still read, as the new names, with a warning naming the replacement."""
    with caplog.at_level(logging.WARNING, logger="promptcache"):
        old = Settings.from_env(
            {"PROMPTCACHE_VERIFIER": "strict", "PROMPTCACHE_VERIFIER_BAND": "0.1"}
        )
    assert (old.strict_guards, old.strict_guards_band) == ("on", 0.1)
    assert "PROMPTCACHE_VERIFIER is deprecated" in caplog.text
    assert "PROMPTCACHE_STRICT_GUARDS=on" in caplog.text
    assert Settings.from_env({"PROMPTCACHE_VERIFIER": "off"}).strict_guards == "off"
    same = {"PROMPTCACHE_VERIFIER": "strict", "PROMPTCACHE_STRICT_GUARDS": "on"}
    assert Settings.from_env(same).strict_guards == "on"
    with pytest.raises(ConfigError, match="PROMPTCACHE_VERIFIER .deprecated. and "):
        Settings.from_env({"PROMPTCACHE_VERIFIER": "strict", "PROMPTCACHE_STRICT_GUARDS": "off"})
    with pytest.raises(ConfigError, match="PROMPTCACHE_STRICT_GUARDS must be one of"):
        Settings.from_env({"PROMPTCACHE_VERIFIER": "maybe"})
    assert Settings.from_env({}).strict_guards == "off"
