"""The review page's web server (Starlette on uvicorn): one page, its two assets, and a small JSON API.

Every request needs the session's token (``?token=`` or the ``X-Token`` header), as Jupyter does;
without it the answer is 403. Films are named by their place in the session, never by a path, and
the assets are a fixed list served from the package, so no request can name a file on disk.
"""

from __future__ import annotations

import hmac
import secrets
import socket
from importlib import resources

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tfmssass.io import RadiographError
from tfmssass.review.session import ReviewSession

_ANY_V4 = "0.0.0.0"  # listening on every network interface: only with an explicit --host
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the page's address
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


#: Pictures the browser may keep (in memory or its private cache): a film's pixels do not change,
#: and a crop's address names the points it was cut at. Without it every redraw asks again, and
#: the browser's six connections fill with picture requests while a change waits to be saved.
_KEEP = {"Cache-Control": "private, max-age=3600"}


def _asset(name: str) -> bytes:
    return (resources.files("tfmssass.review") / "static" / name).read_bytes()


class _TokenGate(BaseHTTPMiddleware):
    def __init__(self, app, token: str):
        super().__init__(app)
        self.token = token.encode()

    async def dispatch(self, request: Request, call_next):
        # the page's own requests carry the token in a cookie named after the port (cookies are
        # shared between the ports of one host, so two review servers must not overwrite each other's)
        cookie = f"tfmssass-review-{request.url.port}"
        given = (request.query_params.get("token") or request.headers.get("x-token")
                 or request.cookies.get(cookie) or "")
        if not hmac.compare_digest(given.encode(), self.token):
            return PlainTextResponse("403: this page needs the token printed by 'tfmssass review'\n", 403)
        response = await call_next(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path == "/":
            response.set_cookie(cookie, self.token.decode(), httponly=True, samesite="strict")
        return response


def build_app(session: ReviewSession, token: str) -> Starlette:
    def film_index(request: Request) -> int:
        index = request.path_params["index"]
        if not 0 <= index < len(session.films):
            raise IndexError(index)
        return index

    def page(request: Request):
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8")

    def asset(request: Request):
        name = request.path_params["name"]
        if name not in ASSETS:
            return PlainTextResponse("not found\n", 404)
        return Response(_asset(name), media_type=ASSETS[name])

    def summary(request: Request):
        return JSONResponse(session.summary())

    def detail(request: Request):
        return JSONResponse(session.detail(film_index(request)))

    async def change(request: Request):
        index = film_index(request)
        try:
            body = await request.json()
            saved = session.change(index, str(body["field"]), body["value"])
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 422)
        return JSONResponse({"saved": saved, "open": len(session.open_fields(session.films[index]))})

    def image(request: Request):
        film = session.films[film_index(request)]
        if request.query_params.get("size", "preview") == "full":
            return Response(session.pictures.full(film.path), media_type="image/png", headers=_KEEP)
        return Response(session.pictures.preview(film.path), media_type="image/jpeg", headers=_KEEP)

    def crop(request: Request):
        # the page asks with ?v=<crop version>, so a kept crop is never one of other points
        picture = session.crops(film_index(request), request.path_params["corner"])
        if picture is None:
            return PlainTextResponse("this corner cannot be cut at these points\n", 404)
        return Response(picture, media_type="image/png", headers=_KEEP if "v" in request.query_params else None)

    async def errors(request: Request, exc: Exception):
        if isinstance(exc, IndexError):
            return JSONResponse({"error": "no such radiograph in this session"}, 404)
        return JSONResponse({"error": exc.reason}, 422)

    routes = [
        Route("/", page), Route("/static/{name}", asset), Route("/api/session", summary),
        Route("/api/films/{index:int}", detail), Route("/api/films/{index:int}", change, methods=["POST"]),
        Route("/api/films/{index:int}/image", image), Route("/api/films/{index:int}/crop/{corner}", crop),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_TokenGate, token=token)],
                     exception_handlers={IndexError: errors, RadiographError: errors})


def serve(session: ReviewSession, host: str = "127.0.0.1", port: int = 0, announce=print) -> None:
    """Serve until interrupted; ``announce`` gets the address to open, token included, once bound."""
    import uvicorn

    token = secrets.token_urlsafe(24)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio turns Nagle's algorithm off only for sockets that say so, and with
    # it on every keep-alive answer waited ~40 ms for the browser's delayed acknowledgement
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    local = {"": "127.0.0.1", _ANY_V4: "127.0.0.1", "::": "[::1]"}  # every address: show this machine's
    shown = local.get(host) or (f"[{host}]" if ":" in host else host)
    # trace the crop graph before the address is shown: traced in the background it would hold
    # Python's lock for seconds while the reader's first changes wait to be saved
    session.pictures.warm(session.worklist.crop)
    announce(f"http://{shown}:{sock.getsockname()[1]}/?token={token}")
    config = uvicorn.Config(build_app(session, token), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
