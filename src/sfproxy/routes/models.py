"""`GET /v1/models`: the listed image models and what each accepts."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from ..catalogue import ModelSpec
from ..errors import NotFoundError
from ..protocol import ErrorResponse, ModelCard, ModelList
from .common import ERROR_RESPONSES, ClientDep, ServicesDep, json_response

router = APIRouter(prefix="/v1", tags=["models"])


def model_card(spec: ModelSpec) -> ModelCard:
    return ModelCard(
        id=spec.id, created=spec.created, owned_by=spec.owned_by, **spec.public_fields()
    )


@router.get("/models", response_model=ModelList, responses=ERROR_RESPONSES, summary="List models")
async def list_models(services: ServicesDep, _client: ClientDep) -> Response:
    cards = [model_card(spec) for spec in services.catalogue.listed]
    return json_response(ModelList(data=cards))


@router.get(
    "/models/{model_id:path}",
    response_model=ModelCard,
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorResponse, "description": "The model is not listed"},
    },
    summary="Describe one model",
)
async def get_model(model_id: str, services: ServicesDep, _client: ClientDep) -> Response:
    for spec in services.catalogue.listed:
        if spec.id == model_id:
            return json_response(model_card(spec))
    raise NotFoundError(f"The model '{model_id}' is not listed by this proxy.", param="model")
