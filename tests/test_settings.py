import pytest

from sfproxy.cli import describe_settings
from sfproxy.setting_values import ConfigError, mask
from sfproxy.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    # Settings read the process environment and ./.env: isolate both.
    for name in list(__import__("os").environ):
        if name.startswith(("SF_", "SILICONFLOW", "ALLOW_", "ACCESS_", "MODELS", "IMAGE_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults():
    settings = load_settings()
    assert settings.sf_base == "https://api.siliconflow.cn/v1"
    assert settings.provider_label == "SiliconFlow"
    assert settings.client_keys == ()
    assert settings.parallel_calls == 4
    assert settings.default_response_format == "url"
    assert settings.cors_origins == ["*"]
    assert settings.catalogue.default_model == "Qwen/Qwen-Image"


def test_sf_base_trailing_slash_is_tolerated(monkeypatch):
    monkeypatch.setenv("SF_BASE", "https://api.siliconflow.com/v1/")
    assert load_settings().sf_base == "https://api.siliconflow.com/v1"


def test_all_key_variables_are_merged_and_split(monkeypatch):
    monkeypatch.setenv("ALLOW_CLIENT_KEY", "alpha")
    monkeypatch.setenv("ALLOW_CLIENT_KEYS", "beta, gamma\ndelta")
    monkeypatch.setenv("ACCESS_TOKEN", "epsilon")
    monkeypatch.setenv("ACCESS_TOKENS", "zeta eta")
    monkeypatch.setenv("ACCESS_KEYS", "theta,alpha")
    keys = load_settings().client_keys
    assert keys == ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


def test_models_json_wins_over_models(monkeypatch):
    monkeypatch.setenv("MODELS", "Kwai-Kolors/Kolors")
    monkeypatch.setenv("MODELS_JSON", '[{"id": "Qwen/Qwen-Image"}, "Kwai-Kolors/Kolors"]')
    listed = [spec.id for spec in load_settings().catalogue.listed]
    assert listed == ["Qwen/Qwen-Image", "Kwai-Kolors/Kolors"]


def test_models_list(monkeypatch):
    monkeypatch.setenv("MODELS", "Kwai-Kolors/Kolors,  Qwen/Qwen-Image")
    assert load_settings().catalogue.default_model == "Kwai-Kolors/Kolors"


@pytest.mark.parametrize(
    "value", ["not json", "{}", "[]", '[{"name": "x"}]', "[1]", '[{"id": "x", "sizes": ["big"]}]']
)
def test_invalid_models_json_is_a_config_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("MODELS_JSON", value)
    with pytest.raises(ConfigError, match="MODELS_JSON"):
        load_settings()


def test_models_json_entries_can_describe_a_model(monkeypatch):
    monkeypatch.setenv(
        "MODELS_JSON",
        '[{"id": "acme/painter", "sizes": ["512x512", "768x512"], "default_size": "512x512",'
        ' "max_batch_size": 2, "max_images": 0, "params": ["seed", "cfg"]}]',
    )
    spec = load_settings().catalogue.spec("acme/painter")
    assert spec.sizes == ("512x512", "768x512")
    assert spec.max_batch_size == 2
    assert spec.accepts("cfg") and not spec.accepts("guidance_scale")


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("SILICONFLOW_API_KEY=sk-from-dotenv\nPROVIDER_LABEL=Mine\n")
    settings = load_settings()
    assert settings.require_upstream_key().get_secret_value() == "sk-from-dotenv"
    assert settings.provider_label == "Mine"


def test_missing_upstream_key_is_one_clear_sentence():
    with pytest.raises(ConfigError) as caught:
        load_settings().require_upstream_key()
    assert "SILICONFLOW_API_KEY" in str(caught.value)


def test_describe_masks_every_secret(monkeypatch):
    monkeypatch.setenv("SILICONFLOW_API_KEY", "sk-verysecretupstreamkey")
    monkeypatch.setenv("ALLOW_CLIENT_KEYS", "client-secret-one,client-secret-two")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value-123")
    text = repr(describe_settings(load_settings()))
    for secret in ("sk-verysecretupstreamkey", "client-secret-one", "aws-secret-value-123"):
        assert secret not in text
    assert "SILICONFLOW_API_KEY" in text


def test_mask_never_reveals_short_secrets():
    assert mask("abc") == "***"
    assert "secretvalue" not in mask("sk-secretvalue-xyz")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PARALLEL_CALLS", "0"),
        ("SF_BASE", "ftp://x"),
        ("IMAGE_STORE", "gcs://bucket"),
        ("DEFAULT_RESPONSE_FORMAT", "png"),
        ("UPSTREAM_TIMEOUT", "-1"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_cors_origins_are_split(monkeypatch):
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    assert load_settings().cors_origins == ["https://a.example", "https://b.example"]


def test_settings_can_be_built_directly():
    settings = Settings(_env_file=None, siliconflow_api_key="sk-x", parallel_calls=1)
    assert settings.parallel_calls == 1
