"""What each SiliconFlow image model accepts, and fitting requested sizes to it.

The built-in tables (`builtin.py`, by site) follow SiliconFlow's public documentation.
`MODELS_JSON` entries may carry the same fields to add a model or override one. A model nobody
described is passed through untouched: no size fitting, every parameter sent as given.

Clients written for OpenAI hard-code its model names; `Catalogue.resolve` maps those aliases
(and a request that names no model) to a listed model, in one place for every endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from ..aliases import BUILTIN_ALIASES, DEFAULT_TARGET
from .builtin import SITE_MODELS
from .sizes import (
    MAX_SIDE,
    MIN_SIDE,
    fit_size,
    is_ratio,
    parse_ratio,
    parse_size,
    plan_batches,
    validate_size,
)
from .spec import (
    SITE_HOSTS,
    TUNING_PARAMS,
    ImageFormatName,
    ModelSpec,
    Site,
    SizeText,
    Source,
    derived_created,
)

# The .cn site's list: the default site's, and what this service offered before sites.
BUILTIN_MODELS = SITE_MODELS["cn"]

__all__ = [
    "BUILTIN_MODELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "SITE_HOSTS",
    "SITE_MODELS",
    "TUNING_PARAMS",
    "Catalogue",
    "CatalogueSource",
    "FixedCatalogue",
    "ImageFormatName",
    "ModelSpec",
    "Site",
    "SizeText",
    "Source",
    "derived_created",
    "fit_size",
    "is_ratio",
    "parse_ratio",
    "parse_size",
    "plan_batches",
    "validate_size",
]


class Catalogue:
    """The models this service lists, in order, what it knows about any model, and aliases.

    `listed` entries (MODELS / MODELS_JSON, or what discovery found) are described by the
    site's built-in entries where they name one; none: the site's built-in list. `aliases`
    (from MODEL_ALIASES) add to or override the built-in ones; an alias mapped to `None` is
    switched off. Raises `ValueError` for an alias that points at an unlisted model, unless
    `lenient`: a discovered list is the account's, not the operator's, so such an alias is
    left out (and named in `dropped_aliases`) rather than stopping the service.
    """

    def __init__(
        self,
        overrides: Iterable[ModelSpec | str] = (),
        aliases: Mapping[str, str | None] | None = None,
        *,
        site: Site = "cn",
        source: Source = "configured",
        lenient: bool = False,
    ) -> None:
        self.site: Site = site
        # Another site's entry still describes its model better than nothing does.
        other: Site = "com" if site == "cn" else "cn"
        self._builtin = {spec.id: spec for spec in SITE_MODELS[other]}
        self._builtin.update({spec.id: spec for spec in SITE_MODELS[site]})
        self._known = dict(self._builtin)
        listed: list[ModelSpec] = []
        for entry in overrides:
            spec = self._merge(entry)
            self._known[spec.id] = spec
            listed.append(spec)
        self.source: Source = source if listed else "built-in"
        self.listed: tuple[ModelSpec, ...] = tuple(listed) or SITE_MODELS[site]
        self.dropped_aliases: list[str] = []
        self.aliases: dict[str, str] = self._aliases(aliases or {}, lenient)

    @classmethod
    def discovered(
        cls,
        model_ids: Iterable[str],
        aliases: Mapping[str, str | None] | None = None,
        *,
        site: Site = "cn",
    ) -> Catalogue:
        """The account's models, the site's usual order first (so its default stays first)."""
        ids = list(dict.fromkeys(model_ids))
        order = {spec.id: index for index, spec in enumerate(SITE_MODELS[site])}
        # Stable: models the site table does not know keep the account's order, after it.
        ids.sort(key=lambda model_id: order.get(model_id, len(order)))
        return cls(ids, aliases, site=site, source="discovered", lenient=True)

    def _merge(self, entry: ModelSpec | str) -> ModelSpec:
        if isinstance(entry, str):
            return self._builtin.get(entry) or ModelSpec(id=entry)
        base = self._builtin.get(entry.id)
        if base is None:
            return entry
        return base.model_copy(update=entry.model_dump(exclude_unset=True))

    def _aliases(self, configured: Mapping[str, str | None], lenient: bool) -> dict[str, str]:
        listed = [spec.id for spec in self.listed]
        # A listed model named like a built-in alias is that model, not the alias.
        merged: dict[str, str | None] = {
            alias: DEFAULT_TARGET for alias in BUILTIN_ALIASES if alias not in listed
        }
        merged.update(configured)
        aliases: dict[str, str] = {}
        for alias, target in merged.items():
            if target is None:
                continue
            if alias in listed:
                raise ValueError(
                    f"MODEL_ALIASES: '{alias}' is a listed model's own name and cannot be an alias"
                )
            if target != DEFAULT_TARGET and target not in listed:
                if lenient:
                    self.dropped_aliases.append(alias)
                    continue
                raise ValueError(
                    f"MODEL_ALIASES: '{alias}' points at '{target}', which is not listed "
                    f"(listed: {', '.join(listed)}; or use '{DEFAULT_TARGET}')"
                )
            aliases[alias] = target
        return aliases

    @property
    def default_model(self) -> str:
        """What a generation (or chat) that names no model uses: the first listed model."""
        return self.listed[0].id

    @property
    def default_generation_model(self) -> str:
        """The default text-to-image model: the first listed one that needs no input image."""
        return next(
            (spec.id for spec in self.listed if not spec.requires_images), self.default_model
        )

    @property
    def default_edit_model(self) -> str:
        """The first listed model that requires input images, else the first that takes them."""
        takers = [spec for spec in self.listed if spec.takes_images]
        editor = next((spec for spec in takers if spec.requires_images), None)
        if editor is not None or takers:
            return (editor or takers[0]).id
        return self.default_model

    def resolve(self, name: str | None, *, edit: bool) -> str:
        """The model a request gets for the name it sent (or none): aliases followed.

        `edit`: the request works on input images. It then gets the default edit model for no
        name or for an alias of the endpoint's default.
        """
        if not name:
            return self.default_edit_model if edit else self.default_model
        target = self.aliases.get(name, name)
        if target == DEFAULT_TARGET:
            return self.default_edit_model if edit else self.default_generation_model
        return target

    def listed_spec(self, model_id: str) -> ModelSpec | None:
        return next((spec for spec in self.listed if spec.id == model_id), None)

    def spec(self, model_id: str) -> ModelSpec:
        return self._known.get(model_id) or ModelSpec(id=model_id)

    def image_models(self) -> list[str]:
        return [spec.id for spec in self.listed if spec.takes_images]


class CatalogueSource(Protocol):
    """Where the services read the catalogue on each request: it may be replaced at run time
    (discovery.py), by swapping the whole object, so a reader sees one or the other."""

    @property
    def current(self) -> Catalogue: ...


class FixedCatalogue:
    """A catalogue that never changes."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.current = catalogue
