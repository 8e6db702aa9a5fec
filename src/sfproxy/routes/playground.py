"""The playground page at `/` and `/playground`: plain static files shipped in the package."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = files("sfproxy") / "static"

# Revalidate every time (a 304 when unchanged): after an upgrade the page and its scripts
# must not come from two different versions.
REVALIDATE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
@router.api_route("/playground", methods=["GET", "HEAD"])
async def playground() -> Response:
    return FileResponse(str(STATIC_DIR / "index.html"), headers=REVALIDATE)


class _RevalidatedStaticFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(REVALIDATE)
        return response


def static_files() -> StaticFiles:
    return _RevalidatedStaticFiles(directory=str(STATIC_DIR))
