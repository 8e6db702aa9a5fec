"""`GET /v1/models`: the listed image models, then the video models, what each accepts, and the
model aliases."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from ..catalogue import Catalogue, ModelSpec
from ..errors import NotFoundError
from ..protocol_responses import ErrorResponse, ModelCard, ModelList
from ..video_models import VIDEO_ENDPOINT_TYPE, VideoModels, VideoSpec, is_openai_name
from .common import ERROR_RESPONSES, ClientDep, ServicesDep, json_response

router = APIRouter(prefix="/v1", tags=["models"])


def model_card(catalogue: Catalogue, spec: ModelSpec) -> ModelCard:
    """`source`: discovered from the account, configured (MODELS), or the built-in list."""
    return ModelCard(
        id=spec.id,
        created=spec.created_at,
        owned_by=spec.owned_by,
        source=catalogue.source,
        **spec.public_fields(),
    )


def alias_card(catalogue: Catalogue, alias: str) -> ModelCard:
    """An alias as its own card: the generation model's, named for the alias.

    `alias_of` is the model generations get; `alias_of_edits` is there when edits get another.
    """
    generation = catalogue.spec(catalogue.resolve(alias, edit=False))
    edit = catalogue.resolve(alias, edit=True)
    extra = {"alias_of_edits": edit} if edit != generation.id else {}
    return ModelCard(
        id=alias,
        created=generation.created_at,
        owned_by=generation.owned_by,
        alias_of=generation.id,
        source=catalogue.source,
        **extra,
        **generation.public_fields(),
    )


def video_card(spec: VideoSpec) -> ModelCard:
    """A video model: new-api's video endpoint type, and chat, which also makes videos."""
    return ModelCard(
        id=spec.id,
        created=spec.created,
        owned_by=spec.owned_by,
        supported_endpoint_types=[VIDEO_ENDPOINT_TYPE, "openai"],
        source="built-in",
        **spec.public_fields(),
    )


def video_alias_card(videos: VideoModels, alias: str) -> ModelCard:
    """An OpenAI video name (sora-2): the default model's card, named for the alias;
    `alias_of_image_to_video` is the model a request with an input image gets."""
    card = video_card(videos.spec(videos.default_model)).model_dump()
    card.update(
        id=alias,
        alias_of=videos.default_model,
        alias_of_image_to_video=videos.default_image_model,
    )
    return ModelCard.model_validate(card)


@router.get("/models", response_model=ModelList, responses=ERROR_RESPONSES, summary="List models")
async def list_models(services: ServicesDep, client: ClientDep) -> Response:
    """A key limited to some models sees only those (and the aliases of them)."""
    catalogue = services.catalogue
    videos = services.settings.video_models
    # A video model listed in MODELS is described (and listed) as the video model it is.
    cards = [
        model_card(catalogue, spec)
        for spec in catalogue.listed
        if client.allows(spec.id) and not videos.is_video(spec.id)
    ]
    cards += [video_card(spec) for spec in videos.specs() if client.allows(spec.id)]
    if services.settings.list_model_aliases:
        cards += [
            alias_card(catalogue, alias)
            for alias in catalogue.aliases
            if client.allows(alias) or client.allows(catalogue.resolve(alias, edit=False))
        ]
        cards += [
            video_alias_card(videos, alias)
            for alias in videos.aliases()
            if client.allows(alias) or client.allows(videos.default_model)
        ]
    return json_response(ModelList(data=cards))


@router.get(
    "/models/{model_id:path}",
    response_model=ModelCard,
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorResponse, "description": "The model is not listed"},
    },
    summary="Describe one model (or alias)",
)
async def get_model(model_id: str, services: ServicesDep, _client: ClientDep) -> Response:
    catalogue = services.catalogue
    spec = catalogue.listed_spec(model_id)
    if spec is not None:
        return json_response(model_card(catalogue, spec))
    # Answered whether or not LIST_MODEL_ALIASES lists them: clients check the name they use.
    if model_id in catalogue.aliases:
        return json_response(alias_card(catalogue, model_id))
    videos = services.settings.video_models
    if videos.is_video(model_id):
        return json_response(video_card(videos.spec(model_id)))
    if is_openai_name(model_id):
        return json_response(video_alias_card(videos, model_id))
    raise NotFoundError(f"The model '{model_id}' is not listed by this proxy.", param="model")
