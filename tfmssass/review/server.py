"""The review page's web server (Starlette on uvicorn): one page, its two assets, and a small JSON API.

Every request needs the session's token (``?token=``, the ``X-Token`` header, or the page's cookie),
as Jupyter does; without it the answer is 403. A request that changes something needs more, so that
no other page the reader's browser opens can write (a cross-site request carries the cookie but
cannot set a header or read the page): the token in the ``X-Token`` header, ``Content-Type:
application/json``, and an ``Origin``, when the browser sends one, that is the server's own. The
``Host`` header must be an address the server was bound to (421 otherwise: DNS rebinding). Bodies
over :data:`MAX_BODY` bytes get 413; JSON nested deeper than :data:`MAX_DEPTH` gets 422.

Films are named by their place in the session, never by a path, and the assets are a fixed list
served from the package, so no request can name a file on disk.
"""

from __future__ import annotations

import hmac
import json
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
#: The largest request body taken (a change is a field name and a value: well under 1 KiB).
MAX_BODY = 16 * 1024
#: The deepest JSON nesting taken (a change is an object holding at most a two-number list).
MAX_DEPTH = 4
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def _asset(name: str) -> bytes:
    return (resources.files("tfmssass.review") / "static" / name).read_bytes()


def _depth(value, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 0), counting no further than ``limit`` + 1."""
    if isinstance(value, (list, dict)) and limit >= 0:
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(v, limit - 1) for v in items), default=0)
    return 0


def _cookie(request: Request) -> str:
    """The page's cookie, named after the port: cookies are shared between the ports of one host, so
    two review servers must not overwrite each other's."""
    return f"tfmssass-review-{request.url.port}"


class _TokenGate(BaseHTTPMiddleware):
    def __init__(self, app, token: str, hosts: frozenset[str] | None = None):
        super().__init__(app)
        self.token = token.encode()
        self.hosts = hosts  # None: not checked (an app built for in-process tests)

    def _same(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token)

    def _refusal(self, request: Request) -> Response | None:
        """Why this request is not taken, or None."""
        host = request.headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return PlainTextResponse("421: this server answers only to the address it printed\n", 421)
        given = (request.query_params.get("token") or request.headers.get("x-token")
                 or request.cookies.get(_cookie(request)) or "")
        if not self._same(given):
            return PlainTextResponse("403: this page needs the token printed by 'tfmssass review'\n", 403)
        if request.method not in _WRITES:
            return None
        if not self._same(request.headers.get("x-token", "")):
            return PlainTextResponse("403: a change needs the token in the X-Token header\n", 403)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return PlainTextResponse("415: a change is sent as application/json\n", 415)
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != f"{request.url.scheme}://{host}":
            return PlainTextResponse("403: a change must come from this server's own page\n", 403)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return PlainTextResponse(f"413: a change is at most {MAX_BODY} bytes\n", 413)
        return None

    async def dispatch(self, request: Request, call_next):
        if (refused := self._refusal(request)) is not None:
            for name, value in _HEADERS.items():
                refused.headers.setdefault(name, value)
            return refused
        response = await call_next(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path == "/":
            response.set_cookie(_cookie(request), self.token.decode(), httponly=True, samesite="strict")
        return response


class _TooLarge(Exception):
    """A change's body ran past :data:`MAX_BODY` (413)."""


async def read_change(request: Request) -> dict:
    """A change's JSON body, read no further than :data:`MAX_BODY` bytes (a body without a length too)
    and checked for nesting; ``ValueError`` with the reason otherwise."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _TooLarge()
    try:
        value = json.loads(body)
    except RecursionError:
        raise ValueError("the JSON is nested too deep") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not JSON ({exc})") from None
    if _depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise ValueError(f"the JSON is nested deeper than {MAX_DEPTH}")
    if not isinstance(value, dict) or not isinstance(value.get("field"), str) or "value" not in value:
        raise ValueError('a change is {"field": name, "value": value}')
    return value


def build_app(session: ReviewSession, token: str, hosts: frozenset[str] | None = None) -> Starlette:
    def film_index(request: Request) -> int:
        index = request.path_params["index"]
        if not 0 <= index < len(session.films):
            raise IndexError(index)
        return index

    def page(request: Request):
        # the page's script sends the token in a header with every change (a cross-site page cannot read it)
        html = _asset("index.html").replace(b"{{token}}", token.encode())
        return Response(html, media_type="text/html; charset=utf-8")

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
            body = await read_change(request)
            saved = session.change(index, body["field"], body["value"])
        except _TooLarge:
            return JSONResponse({"error": f"a change is at most {MAX_BODY} bytes"}, 413)
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
    return Starlette(routes=routes, middleware=[Middleware(_TokenGate, token=token, hosts=hosts)],
                     exception_handlers={IndexError: errors, RadiographError: errors})


def allowed_hosts(host: str, shown: str, port: int) -> frozenset[str]:
    """The ``Host`` headers the server answers: the address it printed, the loopback names, and the
    ``--host`` given."""
    names = {"127.0.0.1", "localhost", "[::1]", shown.lower()}
    if host and host not in ("", _ANY_V4, "::"):
        names.add(f"[{host}]" if ":" in host else host.lower())
    return frozenset(f"{name}:{port}" for name in names)


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
    port = sock.getsockname()[1]
    announce(f"http://{shown}:{port}/?token={token}")
    config = uvicorn.Config(build_app(session, token, allowed_hosts(host, shown, port)), log_level="warning",
                            access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
