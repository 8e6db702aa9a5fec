"""Model names clients hard-code, and MODEL_ALIASES' two spellings.

Clients written for OpenAI offer only its names (Open WebUI: dall-e-2, dall-e-3, gpt-image-1,
gpt-image-1.5; LibreChat: gpt-image-1). These are built-in aliases of the endpoint's default
model; `Catalogue.resolve` follows them, MODEL_ALIASES adds to or overrides them.
"""

from __future__ import annotations

import re

from pydantic import TypeAdapter, ValidationError

# The names OpenAI clients hard-code (Open WebUI offers only these; LibreChat sends gpt-image-1).
BUILTIN_ALIASES = (
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
)
# An alias's target meaning "the default model of the endpoint": text-to-image for generations,
# the default edit model for edits.
DEFAULT_TARGET = "default"

# An alias is a model name as a client sends it: printable, no spaces, "=" or ",".
_ALIAS_NAME = re.compile(r"^[A-Za-z0-9._:/@+\-]{1,128}$")
_ALIAS_ENTRIES: TypeAdapter[dict[str, str | None]] = TypeAdapter(dict[str, str | None])


def parse_aliases(raw: str | None) -> dict[str, str | None]:
    """MODEL_ALIASES as a JSON object or `alias=model` pairs split by commas or whitespace.

    An empty target (`dall-e-2=`, or JSON null) switches that alias off.
    """
    if not raw or not raw.strip():
        return {}
    text = raw.strip()
    entries: dict[str, str | None] = {}
    if text.startswith("{"):
        try:
            entries = _ALIAS_ENTRIES.validate_json(text)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ValueError(
                f"MODEL_ALIASES is not a JSON object of alias to model name"
                f"{' (at ' + where + ')' if where else ''}: {error['msg']}"
            ) from None
    else:
        for pair in text.replace(",", " ").split():
            name, sep, model = pair.partition("=")
            if not sep:
                raise ValueError(
                    f"MODEL_ALIASES: '{pair}' is not alias=model "
                    '(e.g. dall-e-3=Kwai-Kolors/Kolors, or a JSON object {"dall-e-3": "..."})'
                )
            entries[name] = model
    checked: dict[str, str | None] = {}
    for alias, target in entries.items():
        for spelled in (alias, target):
            if spelled and not _ALIAS_NAME.match(spelled):
                raise ValueError(f"MODEL_ALIASES: {spelled[:64]!r} is not a model name")
        if not alias:
            raise ValueError("MODEL_ALIASES: an entry has an empty alias")
        checked[alias] = target or None
    return checked
