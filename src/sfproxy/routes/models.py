"""`GET /v1/models`: the listed image models and what each accepts, and the model aliases."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from ..catalogue import Catalogue, ModelSpec
from ..errors import NotFoundError
from ..protocol import ErrorResponse, ModelCard, ModelList
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


@router.get("/models", response_model=ModelList, responses=ERROR_RESPONSES, summary="List models")
async def list_models(services: ServicesDep, client: ClientDep) -> Response:
    """A key limited to some models sees only those (and the aliases of them)."""
    catalogue = services.catalogue
    cards = [model_card(catalogue, spec) for spec in catalogue.listed if client.allows(spec.id)]
    if services.settings.list_model_aliases:
        cards += [
            alias_card(catalogue, alias)
            for alias in catalogue.aliases
            if client.allows(alias) or client.allows(catalogue.resolve(alias, edit=False))
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
    raise NotFoundError(f"The model '{model_id}' is not listed by this proxy.", param="model")
