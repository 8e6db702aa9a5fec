"""The catalogue by site: .cn and .com models, FLUX.2-pro's sizes and formats, the
conservative entries of undocumented models, and prompt_enhancement, against the fake."""

from __future__ import annotations

import base64

import httpx
import pytest

from sfproxy.catalogue import SITE_MODELS, Catalogue
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.settings import load_settings

from .images import data_uri, image_bytes
from .support.inprocess import UPSTREAM_KEY, in_process, service_settings

FLUX2_PRO = "black-forest-labs/FLUX.2-pro"
SCHNELL = "black-forest-labs/FLUX.1-schnell"


@pytest.mark.parametrize(
    ("env", "site"),
    [
        ({}, "cn"),
        ({"sf_base": "https://api.siliconflow.com/v1"}, "com"),
        ({"sf_base": "https://API.SiliconFlow.com/v1/"}, "com"),
        ({"sf_base": "https://siliconflow.com.example.org/v1"}, "cn"),
        ({"sf_base": "https://api.siliconflow.cn/v1", "sf_site": "com"}, "com"),
        ({"sf_base": "https://api.siliconflow.com/v1", "sf_site": " CN "}, "cn"),
        ({"sf_base": "http://127.0.0.1:9/v1", "sf_site": ""}, "cn"),
    ],
)
def test_the_site_comes_from_sf_site_else_sf_base(env, site):
    settings = load_settings(_env_file=None, **env)
    assert settings.site == site
    assert settings.catalogue.listed == SITE_MODELS[site]


def test_a_bad_site_stops_the_start():
    with pytest.raises(ValueError, match="SF_SITE: Input should be 'cn' or 'com'"):
        load_settings(_env_file=None, sf_site="eu")


def test_every_sites_default_is_one_it_serves():
    com = Catalogue(site="com")
    assert com.default_model == SCHNELL
    assert com.default_edit_model == "Qwen/Qwen-Image-Edit"
    assert "Kwai-Kolors/Kolors" not in [spec.id for spec in com.listed]
    assert Catalogue(site="cn").default_model == "Qwen/Qwen-Image"


async def post(running, **body) -> httpx.Response:
    return await running.http.post(
        "/v1/images/generations", json={"prompt": "a lighthouse", **body}
    )


async def test_a_com_account_gets_flux_and_no_kolors(tmp_path):
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY, site="com") as fake:
        async with in_process(service_settings(fake, tmp_path, sf_site="com")) as running:
            ids = [card["id"] for card in (await running.http.get("/v1/models")).json()["data"]]
            unnamed = await post(running)
            aliased = await post(running, model="dall-e-3")
            kolors = await post(running, model="Kwai-Kolors/Kolors")
            models_sent = [request.body["model"] for request in fake.requests]
    assert ids[0] == SCHNELL
    assert "Kwai-Kolors/Kolors" not in ids
    # The video models follow the image models (test_video_models.py).
    assert ids[-2:] == ["Wan-AI/Wan2.2-T2V-A14B", "Wan-AI/Wan2.2-I2V-A14B"]
    assert set(ids[:-2]) == {spec.id for spec in SITE_MODELS["com"]}
    assert (unnamed.status_code, aliased.status_code) == (200, 200)
    # The .com account has no Kolors: SiliconFlow's own answer, passed on.
    assert kolors.status_code == 400
    assert "Model does not exist" in kolors.json()["error"]["message"]
    assert models_sent == [SCHNELL, SCHNELL, "Kwai-Kolors/Kolors"]


async def test_flux2_pro_gets_an_allowed_size_and_its_own_output_format(tmp_path):
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY, site="com") as fake:
        async with in_process(service_settings(fake, tmp_path, sf_site="com")) as running:
            wide = await post(
                running,
                model=FLUX2_PRO,
                size="1792x1024",
                output_format="jpeg",
                response_format="b64_json",
            )
            wide_sent = fake.requests[-1].body
            plain = await post(running, model=FLUX2_PRO, cfg=4, num_inference_steps=30)
            plain_sent = fake.requests[-1].body
    assert wide.status_code == 200, wide.text
    assert (wide_sent["image_size"], wide_sent["output_format"]) == ("1024x576", "jpeg")
    assert base64.b64decode(wide.json()["data"][0]["b64_json"])[:3] == b"\xff\xd8\xff"
    assert plain.status_code == 200, plain.text
    # Its default size, and nothing it does not take.
    assert set(plain_sent) == {"model", "prompt", "image_size", "seed"}
    assert plain_sent["image_size"] == "512x512"


TUNING = {
    "seed": 42,
    "negative_prompt": "fog",
    "cfg": 4.0,
    "num_inference_steps": 30,
    "guidance_scale": 5.0,
    "sf_prompt_enhancement": True,
}


@pytest.mark.parametrize("model", ["Tongyi-MAI/Z-Image-Turbo", "baidu/ERNIE-Image-Turbo"])
async def test_undocumented_models_get_only_the_safe_fields(model, tmp_path):
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as fake:
        async with in_process(service_settings(fake, tmp_path)) as running:
            sized = await post(running, model=model, size="1000x600", n=2, **TUNING)
            sized_sent = [request.body for request in fake.requests]
            fake.clear_requests()
            unsized = await post(running, model=model, **TUNING)
            unsized_sent = fake.requests[-1].body
            card = (await running.http.get(f"/v1/models/{model}")).json()
    assert (sized.status_code, unsized.status_code) == (200, 200)
    # n=2 is two calls of one image each: no batch_size is sent to an undocumented model.
    assert len(sized_sent) == 2
    for sent in sized_sent:
        assert set(sent) == {"model", "prompt", "image_size", "seed", "negative_prompt"}
        assert (sent["image_size"], sent["negative_prompt"]) == ("1000x600", "fog")
    assert [sent["seed"] for sent in sized_sent] == [42, 43]
    assert set(unsized_sent) == {"model", "prompt", "seed", "negative_prompt"}
    assert (card["verified"], card["params"]) == (False, ["negative_prompt", "seed"])


async def test_prompt_enhancement_goes_only_to_models_that_take_it(tmp_path):
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY, site="com") as fake:
        async with in_process(service_settings(fake, tmp_path, sf_site="com")) as running:
            flux = await post(running, model=SCHNELL, prompt_enhancement=True)
            flux_sent = fake.requests[-1].body
            qwen = await post(running, model="Qwen/Qwen-Image", sf_prompt_enhancement=True)
            qwen_sent = fake.requests[-1].body
            bad = await post(running, model=SCHNELL, prompt_enhancement="very")
    assert (flux.status_code, qwen.status_code) == (200, 200)
    assert flux_sent["prompt_enhancement"] is True
    # The fake refuses it for Qwen-Image: a 200 proves it was not sent, and so does the body.
    assert "prompt_enhancement" not in qwen_sent
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "prompt_enhancement"


async def test_a_kontext_edit_sends_its_input_image(tmp_path):
    kontext = "black-forest-labs/FLUX.1-Kontext-pro"
    picture = image_bytes("PNG", (40, 30))
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY, site="com") as fake:
        async with in_process(service_settings(fake, tmp_path, sf_site="com")) as running:
            response = await running.http.post(
                "/v1/images/edits",
                json={"model": kontext, "prompt": "make it night", "image": data_uri(picture)},
            )
            sent = fake.requests[-1].body
            no_image = await post(running, model=kontext)
    assert response.status_code == 200, response.text
    assert set(sent) == {"model", "prompt", "image", "seed"}
    assert base64.b64decode(sent["image"].split(",", 1)[1]) == picture
    assert no_image.status_code == 400
    assert len(fake.requests) == 1  # refused here, before SiliconFlow


async def test_unknown_models_still_pass_through_untouched(tmp_path):
    painter = {"takes_prompt_enhancement": True}
    account = {"listed_models": [], "extra_models": {"acme/painter": painter}}
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY, **account) as fake:
        async with in_process(service_settings(fake, tmp_path)) as running:
            response = await post(running, size="1000x600", **TUNING)
            sent = fake.requests[-1].body
    assert response.status_code == 200, response.text
    assert sent["model"] == "acme/painter"
    assert sent["image_size"] == "1000x600"
    assert (sent["cfg"], sent["guidance_scale"], sent["prompt_enhancement"]) == (4.0, 5.0, True)
