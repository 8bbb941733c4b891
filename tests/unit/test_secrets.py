"""Secrets read once from SSM Parameter Store (moto serves SSM in-process)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from promptcache import ConfigError, Settings
from promptcache.runtime import cloudflare_token, with_secrets
from promptcache.settings import key_digest


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@mock_aws
def test_api_keys_come_from_ssm() -> None:
    boto3.client("ssm").put_parameter(
        Name="/pc/t1/api-keys", Value="k1:alpha,k2:beta", Type="SecureString"
    )
    settings = with_secrets(
        Settings.from_env({"PROMPTCACHE_API_KEYS_SSM_PARAMETER": "/pc/t1/api-keys"})
    )
    assert dict(settings.api_keys) == {key_digest("k1"): "alpha", key_digest("k2"): "beta"}


@mock_aws
def test_a_malformed_ssm_value_names_the_parameter() -> None:
    boto3.client("ssm").put_parameter(
        Name="/pc/t2/api-keys", Value="no-tenant", Type="SecureString"
    )
    with pytest.raises(ConfigError, match="/pc/t2/api-keys"):
        with_secrets(Settings.from_env({"PROMPTCACHE_API_KEYS_SSM_PARAMETER": "/pc/t2/api-keys"}))


@mock_aws
def test_a_missing_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="/pc/t3/absent"):
        with_secrets(Settings.from_env({"PROMPTCACHE_API_KEYS_SSM_PARAMETER": "/pc/t3/absent"}))


@mock_aws
def test_tokens_come_from_ssm_and_a_direct_value_wins() -> None:
    boto3.client("ssm").put_parameter(Name="/pc/t4/cf", Value="from-ssm", Type="SecureString")
    env = {"CLOUDFLARE_ACCOUNT_ID": "a", "CLOUDFLARE_API_TOKEN_SSM_PARAMETER": "/pc/t4/cf"}
    assert cloudflare_token(Settings.from_env(env)) == "from-ssm"
    assert (
        cloudflare_token(Settings.from_env({**env, "CLOUDFLARE_API_TOKEN": "direct"})) == "direct"
    )


@mock_aws
def test_the_anthropic_key_comes_from_ssm_once_and_a_direct_value_wins() -> None:
    boto3.client("ssm").put_parameter(
        Name="/pc/t5/anthropic", Value="sk-ant-from-ssm\n", Type="SecureString"
    )
    env = {"ANTHROPIC_API_KEY_SSM_PARAMETER": "/pc/t5/anthropic"}
    settings = with_secrets(Settings.from_env(env))
    assert settings.llm == "anthropic" and settings.anthropic_api_key == "sk-ant-from-ssm"
    assert "sk-ant-from-ssm" not in repr(settings)
    direct = with_secrets(Settings.from_env({**env, "ANTHROPIC_API_KEY": "direct"}))
    assert direct.anthropic_api_key == "direct"
    with pytest.raises(ConfigError, match="/pc/t5/absent"):
        with_secrets(Settings.from_env({"ANTHROPIC_API_KEY_SSM_PARAMETER": "/pc/t5/absent"}))
