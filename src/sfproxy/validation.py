"""Validation problems as structure, and the one mapper that turns them into a 400.

A problem is pydantic-core's `PydanticCustomError`: a `type` (what is wrong), a message template
that never names the parameter, and context (the value, the limits). Validators and the
catalogue raise it; pydantic reports it with the location the client used, alias included
(`aspect_ratio` or `sf_aspect_ratio`, whichever was sent). `invalid_request` is the only place
that writes the sentence a client reads, for JSON bodies, form fields and inline chat options
alike: the parameter comes from the location, never from a message's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from .errors import InvalidRequestError

# A location as pydantic reports it, e.g. ("body", "messages", 0, "role").
Location = tuple[str | int, ...]
Spelling = Callable[[Location], str | None]
Model = TypeVar("Model", bound=BaseModel)


def problem(kind: str, reason: str, **context: Any) -> PydanticCustomError:
    """A structured problem: `reason` may use `{name}` placeholders filled from `context`."""
    return PydanticCustomError(kind, reason, context or None)


def dotted(location: Location) -> str | None:
    """`messages.0.role`: the parameter as the client spelled it, without FastAPI's "body"."""
    parts = [str(part) for part in location if part != "body"]
    return ".".join(parts) or None


def invalid_request(
    errors: Sequence[Mapping[str, Any]],
    *,
    spell: Spelling = dotted,
    reported_as: str | None = None,
    hint: Callable[[str], str] | None = None,
) -> InvalidRequestError:
    """One 400 for a list of pydantic error details, naming the first problem's parameter.

    `spell` names the parameter as the client wrote it (`--ar` for an option typed into a chat
    prompt); `reported_as` is the error object's `param` when that differs (`messages`), and
    `hint` may add an example for the spelled name.
    """
    first = errors[0]
    kind = str(first["type"])
    location: Location = tuple(first.get("loc", ()))
    param = spell(location)
    if kind == "json_invalid":
        return not_json(str(first.get("ctx", {}).get("error", "")))
    if param is None:
        return missing_body() if kind == "missing" else not_an_object()
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid '{param}': {_reason(first)}."
    if hint is not None:
        message += f" {hint(param)}"
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more problem(s) in the request.)"
    return InvalidRequestError(message, param=reported_as or param, code=_code(kind))


def validated(model: type[Model], values: Any) -> Model:
    """`values` as `model`, or the one 400 for what is wrong with them."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None


def not_json(reason: str = "") -> InvalidRequestError:
    message = f"Request body is not valid JSON{': ' + reason if reason else ''}."
    return InvalidRequestError(message, code="invalid_json")


def missing_body() -> InvalidRequestError:
    return InvalidRequestError("Request body is missing: send a JSON object.", code="missing_body")


def not_an_object() -> InvalidRequestError:
    return InvalidRequestError("Request body must be a JSON object.", code="invalid_body")


def invalid_param(param: str, error: PydanticCustomError) -> InvalidRequestError:
    """A 400 for a problem found outside pydantic (the catalogue, at planning time)."""
    return invalid_request(
        [{"type": error.type, "loc": (param,), "msg": error.message(), "ctx": error.context}],
        spell=lambda location: param,
    )


def _reason(detail: Mapping[str, Any]) -> str:
    reason = str(detail.get("msg", "invalid value"))
    # pydantic prefixes plain ValueErrors; our own problems carry no prefix.
    reason = reason.removeprefix("Value error, ").rstrip(".")
    return (
        reason[0].lower() + reason[1:] if reason[:1].isupper() and reason[1:2].islower() else reason
    )


def _code(kind: str) -> str:
    """OpenAI-style codes: a few names clients know, else pydantic's own error type."""
    return {"missing": "missing_required_parameter"}.get(kind, kind)
