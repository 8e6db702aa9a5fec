"""Model names clients hard-code (dall-e-*, gpt-image-*), MODEL_ALIASES, and `/v1/models`."""

from __future__ import annotations

import base64
import io
import logging

import httpx
import openai
import pytest
from PIL import Image

from sfproxy.aliases import BUILTIN_ALIASES, parse_aliases
from sfproxy.catalogue import Catalogue, derived_created
from sfproxy.plan import ImageJob
from sfproxy.protocol import ImageGenerationRequest
from sfproxy.setting_values import ConfigError
from sfproxy.settings import load_settings

from .images import data_uri, image_bytes
from .support.inprocess import in_process, service_settings
from .test_cli import run

PNG = image_bytes("PNG", (80, 60), "red")


# Through the running service, with the openai SDK as the client


def test_dall_e_2_generates_with_the_default_text_to_image_model(client, fake):
    result = client.images.generate(model="dall-e-2", prompt="a lighthouse")
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image"
    # dall-e models answer with URLs, and so does the alias.
    assert result.data[0].b64_json is None
    assert httpx.get(result.data[0].url or "").status_code == 200


def test_dall_e_2_edits_with_the_default_edit_model(client, fake):
    result = client.images.edit(
        model="dall-e-2", image=("photo.png", PNG, "image/png"), prompt="make it blue"
    )
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image-Edit"
    edited = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert edited.size == (80, 60)


def test_an_edit_naming_no_model_uses_the_default_edit_model(proxy, fake):
    # Before aliases, this went to the first listed model (Qwen-Image), which cannot edit: 400.
    response = httpx.post(
        proxy.api_base + "/images/edits",
        files=[("image", ("photo.png", PNG, "image/png"))],
        data={"prompt": "make it blue"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image-Edit"


@pytest.mark.parametrize("alias", BUILTIN_ALIASES)
def test_every_builtin_alias_is_answered_by_models_retrieve(client, alias):
    card = client.models.retrieve(alias)
    assert card.id == alias
    assert card.model_extra is not None
    assert card.model_extra["alias_of"] == "Qwen/Qwen-Image"
    assert card.model_extra["alias_of_edits"] == "Qwen/Qwen-Image-Edit"
    assert card.created == 1_754_265_600  # Qwen-Image's release


def test_aliases_are_not_listed_unless_asked_for(client, start):
    assert [card.id for card in client.models.list()] == [
        "Qwen/Qwen-Image",
        "Kwai-Kolors/Kolors",
        "Tongyi-MAI/Z-Image-Turbo",
        "Tongyi-MAI/Z-Image",
        "baidu/ERNIE-Image-Turbo",
        "Qwen/Qwen-Image-Edit",
        "Qwen/Qwen-Image-Edit-2509",
        "Wan-AI/Wan2.2-T2V-A14B",
        "Wan-AI/Wan2.2-I2V-A14B",
    ]
    listing = start(LIST_MODEL_ALIASES="true", MODEL_ALIASES="dall-e-3=Kwai-Kolors/Kolors")
    with openai.OpenAI(base_url=listing.api_base, api_key="unused", max_retries=0) as sdk:
        cards = {card.id: card for card in sdk.models.list()}
    # The image models, the video models, then the image aliases and the video ones (sora-2).
    assert list(cards)[9:] == [*BUILTIN_ALIASES, "sora-2", "sora-2-pro"]
    kolors = cards["dall-e-3"].model_extra or {}
    # An alias of one named model is that model on both endpoints.
    assert (kolors["alias_of"], "alias_of_edits" in kolors) == ("Kwai-Kolors/Kolors", False)
    assert kolors["sizes"] == cards["Kwai-Kolors/Kolors"].model_extra["sizes"]  # type: ignore[index]


def test_models_have_their_release_dates(client):
    created = {card.id: card.created for card in client.models.list()}
    assert created == {
        "Qwen/Qwen-Image": 1_754_265_600,  # 2025-08-04
        "Kwai-Kolors/Kolors": 1_720_224_000,  # 2024-07-06
        "Qwen/Qwen-Image-Edit": 1_755_475_200,  # 2025-08-18
        "Qwen/Qwen-Image-Edit-2509": 1_758_499_200,  # 2025-09-22
        "Tongyi-MAI/Z-Image-Turbo": 1_764_201_600,  # 2025-11-27
        # Undated: derived from the id.
        "Tongyi-MAI/Z-Image": derived_created("Tongyi-MAI/Z-Image"),
        "baidu/ERNIE-Image-Turbo": derived_created("baidu/ERNIE-Image-Turbo"),
        "Wan-AI/Wan2.2-T2V-A14B": 1_753_660_800,  # 2025-07-28
        "Wan-AI/Wan2.2-I2V-A14B": 1_753_660_800,
    }


def test_chat_with_an_alias_answers_with_the_model_used(client, fake):
    answer = client.chat.completions.create(
        model="gpt-image-1", messages=[{"role": "user", "content": "a red fox"}]
    )
    assert answer.model == "Qwen/Qwen-Image"
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image"
    attached = [
        {"type": "text", "text": "make it blue"},
        {"type": "image_url", "image_url": {"url": data_uri(PNG)}},
    ]
    edited = client.chat.completions.create(
        model="gpt-image-1", messages=[{"role": "user", "content": attached}]
    )
    # A turn carrying an image is an edit: the alias goes to the default edit model.
    assert edited.model == "Qwen/Qwen-Image-Edit"
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image-Edit"


def test_a_switched_off_alias_is_sent_as_it_is(start, fake):
    proxy = start(MODEL_ALIASES='{"dall-e-2": null}')
    response = httpx.post(
        proxy.api_base + "/images/generations",
        json={"model": "dall-e-2", "prompt": "x"},
        timeout=30,
    )
    assert fake.requests[-1].body["model"] == "dall-e-2"
    assert response.status_code == 400
    assert "Model does not exist" in response.json()["error"]["message"]


# In process: the request log and the metrics


async def test_log_and_metrics_name_the_model_used(fake, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sfproxy.access")
    async with in_process(service_settings(fake, tmp_path)) as service:
        response = await service.http.post(
            "/v1/images/generations", json={"model": "dall-e-3", "prompt": "a fox", "n": 2}
        )
        assert response.status_code == 200, response.text
        upstream = ("sfproxy_upstream_calls_total", {"kind": "generate", "outcome": "ok"})
        assert service.metric(upstream[0], model="Qwen/Qwen-Image", **upstream[1]) == 2
        assert service.metric(upstream[0], model="dall-e-3", **upstream[1]) == 0
        assert service.metric("sfproxy_images_generated_total", model="Qwen/Qwen-Image") == 2
        assert service.metric("sfproxy_images_delivered_total", model="Qwen/Qwen-Image") == 2
    [entry] = [
        record.fields  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "sfproxy.access"
    ]
    assert (entry["model"], entry["model_requested"]) == ("Qwen/Qwen-Image", "dall-e-3")


async def test_a_request_for_a_listed_model_logs_no_requested_name(fake, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sfproxy.access")
    async with in_process(service_settings(fake, tmp_path)) as service:
        response = await service.http.post(
            "/v1/images/generations", json={"model": "Kwai-Kolors/Kolors", "prompt": "a fox"}
        )
        assert response.status_code == 200
    [entry] = [record.fields for record in caplog.records if record.name == "sfproxy.access"]  # type: ignore[attr-defined]
    assert entry["model"] == "Kwai-Kolors/Kolors"
    assert "model_requested" not in entry


# MODEL_ALIASES


def test_aliases_as_pairs_and_as_json_are_the_same():
    pairs = parse_aliases("dall-e-3=Kwai-Kolors/Kolors, gpt-image-2=\n my-model=default")
    as_json = parse_aliases(
        '{"dall-e-3": "Kwai-Kolors/Kolors", "gpt-image-2": null, "my-model": "default"}'
    )
    assert (
        pairs
        == as_json
        == {
            "dall-e-3": "Kwai-Kolors/Kolors",
            "gpt-image-2": None,
            "my-model": "default",
        }
    )


def test_configured_aliases_add_to_override_and_switch_off_the_builtins():
    catalogue = load_settings(
        _env_file=None, model_aliases="dall-e-3=Kwai-Kolors/Kolors gpt-image-2= mine=default"
    ).catalogue
    assert catalogue.resolve("dall-e-3", edit=False) == "Kwai-Kolors/Kolors"
    assert catalogue.resolve("dall-e-3", edit=True) == "Kwai-Kolors/Kolors"
    assert catalogue.resolve("mine", edit=True) == "Qwen/Qwen-Image-Edit"
    assert catalogue.resolve("dall-e-2", edit=False) == "Qwen/Qwen-Image"
    # Switched off: the name goes upstream as it is.
    assert catalogue.resolve("gpt-image-2", edit=False) == "gpt-image-2"
    assert "gpt-image-2" not in catalogue.aliases


def test_a_listed_model_named_like_a_builtin_alias_is_that_model():
    catalogue = Catalogue(["dall-e-3", "Qwen/Qwen-Image"])
    assert catalogue.resolve("dall-e-3", edit=False) == "dall-e-3"
    assert catalogue.resolve("dall-e-2", edit=False) == "dall-e-3"
    assert "dall-e-3" not in catalogue.aliases


def test_default_models_follow_the_listed_order():
    catalogue = Catalogue(["Qwen/Qwen-Image-Edit-2509", "Kwai-Kolors/Kolors", "Qwen/Qwen-Image"])
    # Text-to-image: the first listed model that needs no input image.
    assert catalogue.resolve("dall-e-2", edit=False) == "Kwai-Kolors/Kolors"
    assert catalogue.resolve("dall-e-2", edit=True) == "Qwen/Qwen-Image-Edit-2509"
    # Without an edit model listed, the first listed model that takes images edits.
    no_editor = Catalogue(["Qwen/Qwen-Image", "Kwai-Kolors/Kolors"])
    assert no_editor.resolve("gpt-image-1", edit=True) == "Kwai-Kolors/Kolors"
    assert no_editor.resolve(None, edit=True) == "Kwai-Kolors/Kolors"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "dall-e-3",
            "MODEL_ALIASES: 'dall-e-3' is not alias=model (e.g. dall-e-3=Kwai-Kolors/Kolors, "
            'or a JSON object {"dall-e-3": "..."})',
        ),
        (
            "dall-e-3=Nope/Model",
            "MODEL_ALIASES: 'dall-e-3' points at 'Nope/Model', which is not listed (listed: "
            "Qwen/Qwen-Image, Kwai-Kolors/Kolors, Tongyi-MAI/Z-Image-Turbo, Tongyi-MAI/Z-Image, "
            "baidu/ERNIE-Image-Turbo, Qwen/Qwen-Image-Edit, Qwen/Qwen-Image-Edit-2509; "
            "or use 'default')",
        ),
        (
            '{"dall-e-3": 3}',
            "MODEL_ALIASES is not a JSON object of alias to model name (at dall-e-3): "
            "Input should be a valid string",
        ),
        (
            "Qwen/Qwen-Image=Kwai-Kolors/Kolors",
            "MODEL_ALIASES: 'Qwen/Qwen-Image' is a listed model's own name and cannot be an alias",
        ),
        ("=Kwai-Kolors/Kolors", "MODEL_ALIASES: an entry has an empty alias"),
        ('{"a b": "default"}', "MODEL_ALIASES: 'a b' is not a model name"),
    ],
)
def test_bad_aliases_stop_the_start_with_a_clear_message(value, message):
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, model_aliases=value)
    assert str(raised.value) == message


def test_check_config_refuses_an_alias_to_an_unlisted_model(tmp_path):
    env = {
        "SILICONFLOW_API_KEY": "sk-check-config-0123456789",
        "MODELS": "Kwai-Kolors/Kolors",
        "MODEL_ALIASES": "dall-e-3=Qwen/Qwen-Image",
    }
    result = run("check-config", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "'dall-e-3' points at 'Qwen/Qwen-Image', which is not listed" in result.stderr


# `created`


def test_an_undated_model_gets_a_stable_created_from_its_id():
    first = Catalogue(["vendor/new-model"]).listed[0]
    again = Catalogue(["vendor/new-model"]).listed[0]
    assert first.created_at == again.created_at == derived_created("vendor/new-model")
    # 2024, as documented, and different for another id.
    assert 1_704_067_200 <= first.created_at < 1_735_689_600
    assert derived_created("vendor/other-model") != first.created_at


def test_models_json_sets_created():
    settings = load_settings(
        _env_file=None,
        models_json='[{"id": "Kwai-Kolors/Kolors", "created": 1720000000}, {"id": "x/y"}]',
    )
    kolors, other = settings.catalogue.listed
    assert (kolors.created_at, kolors.sizes is not None) == (1_720_000_000, True)
    assert other.created_at == derived_created("x/y")


# Which model a request gets, endpoint by endpoint (ImageJob.from_params)


def job_model(catalogue: Catalogue, model: str | None, *, edit: bool, images: int) -> str:
    body = {"prompt": "p", **({"model": model} if model else {})}
    job = ImageJob.from_params(
        ImageGenerationRequest.model_validate(body),
        prompt="p",
        catalogue=catalogue,
        default_response_format="auto",
        images=("https://example.com/a.png",) * images,
        edit=edit,
    )
    assert job.requested_model == model
    return job.model


@pytest.mark.parametrize(
    ("model", "edit", "images", "expected"),
    [
        # An edit naming no model, or an alias: the default edit model.
        (None, True, 1, "Qwen/Qwen-Image-Edit"),
        ("gpt-image-1", True, 1, "Qwen/Qwen-Image-Edit"),
        # A generation (or chat) carrying images with an alias: the default edit model too.
        ("gpt-image-1", False, 1, "Qwen/Qwen-Image-Edit"),
        # Naming none, it keeps the first listed model when that one takes images (Kolors)...
        (None, False, 1, "Kwai-Kolors/Kolors"),
        (None, False, 0, "Kwai-Kolors/Kolors"),
        ("dall-e-3", False, 0, "Kwai-Kolors/Kolors"),
        # ...and a listed model named is the model used.
        ("Qwen/Qwen-Image", True, 1, "Qwen/Qwen-Image"),
    ],
)
def test_the_model_each_request_gets(model, edit, images, expected):
    catalogue = Catalogue(["Kwai-Kolors/Kolors", "Qwen/Qwen-Image", "Qwen/Qwen-Image-Edit"])
    assert job_model(catalogue, model, edit=edit, images=images) == expected


def test_chat_with_an_image_and_no_model_moves_off_a_model_that_takes_none():
    catalogue = Catalogue()  # Qwen-Image first: it takes no input images
    assert job_model(catalogue, None, edit=False, images=1) == "Qwen/Qwen-Image-Edit"
    assert job_model(catalogue, None, edit=False, images=0) == "Qwen/Qwen-Image"
