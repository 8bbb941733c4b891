from __future__ import annotations

import pytest

from promptcache import ConfigError, Settings


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
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_api_keys_map_to_tenants() -> None:
    s = Settings.from_env({"PROMPTCACHE_API_KEYS": "k1:alpha, k2:beta"})
    assert dict(s.api_keys) == {"k1": "alpha", "k2": "beta"}


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.store = "memory"  # type: ignore[misc]


def test_the_verifier_model_settings() -> None:
    from promptcache import runtime

    s = Settings.from_env({})
    assert (s.verifier_model, s.verifier_cutoff, s.verifier_below, s.verifier_model_band) == (
        "off", 0.5, 0.0, 1.0,
    )  # fmt: skip
    assert runtime.build(Settings.from_env({"PROMPTCACHE_STORE": "memory"})).verifier_model is None
    on = Settings.from_env(
        {"PROMPTCACHE_VERIFIER_MODEL": "local", "PROMPTCACHE_VERIFIER_CUTOFF": "0.7",
         "PROMPTCACHE_VERIFIER_BELOW": "0.1", "PROMPTCACHE_VERIFIER_MODEL_BAND": "0.2",
         "PROMPTCACHE_VERIFIER_TIMEOUT": "0.25", "PROMPTCACHE_STORE": "memory"}
    )  # fmt: skip
    check = runtime.build(on).verifier_model
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
