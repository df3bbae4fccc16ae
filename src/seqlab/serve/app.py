"""The HTTP server of a trained run: the API of its problem, /health, /model and the page.

    app = create_app("runs/multi30k_de_en")      # an ASGI app (uvicorn runs it)
    GET  /             the page: type a text, see the output (and its attention)
    GET  /health       {"status": "ok"}
    GET  /model        problem, sizes, the run's validation figures, limits, batching
    POST /translate    seq2seq      POST /classify   classify     POST /tag   tag
    POST /generate     lm           POST /forecast   forecast
    GET  /docs         the OpenAPI description (generated from seqlab.serve.schemas)

Every refusal is a 4xx with {"error": one line}: malformed JSON 400, a wrong field or a
limit 422, a body over the size limit 413; a full queue 503 and a late answer 504. The
model runs in one thread beside the event loop (seqlab.serve.batching), so the server keeps
answering /health while it decodes.
"""

import asyncio
import functools
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from seqlab.errors import ConfigError, DataError
from seqlab.serve import schemas
from seqlab.serve.batching import Batcher, Busy, RequestTimeout
from seqlab.serve.limits import Limits
from seqlab.serve.services import SERVICES, InputError

if TYPE_CHECKING:
    from seqlab.checkpoint import Checkpointed

PAGE = Path(__file__).parent / "page"
MAX_BODY = 1 << 20  # bytes: a larger request body is a 413
log = logging.getLogger("seqlab.serve")


def load_predictor(run: "Checkpointed", device: str = "auto"):
    """The predictor of a run directory or checkpoint (or of a ReadCheckpoint), whatever its
    problem shape."""
    from seqlab.checkpoint import problem_of

    problem = problem_of(run)
    if problem == "seq2seq":
        from seqlab.translate import Translator as Predictor
    elif problem == "classify":
        from seqlab.problems.classify import Classifier as Predictor
    elif problem == "tag":
        from seqlab.problems.tag import Tagger as Predictor
    elif problem == "lm":
        from seqlab.problems.lm import Generator as Predictor
    else:
        from seqlab.problems.forecast import Forecaster as Predictor
    return problem, Predictor.from_checkpoint(run, device=device)


def create_app(run: str | Path, *, device: str = "auto", limits: Limits | None = None,
               max_batch: int = 64, batch_wait_ms: float = 5.0, search: dict | None = None,
               max_body: int = MAX_BODY):
    """The ASGI app serving `run` (its model loaded now: a bad run is one line here, before
    any port is opened). max_batch 1: every request decoded alone (no batching). `search`:
    seq2seq keys of the run's search section set for every request (precision, stopping)."""
    from seqlab.checkpoint import load_for_prediction

    limits = limits or Limits()
    checkpoint = load_for_prediction(run)  # read once: the problem, the model, /model's facts
    problem, predictor = load_predictor(checkpoint, device)
    cls = SERVICES[problem]
    if problem == "seq2seq":
        predictor.check_inputs([], None, **(search or {}))  # now, not at the first request
        service = cls(predictor, limits, search)
    elif search:
        options = ", ".join(f"--{k}" for k in search)
        raise ConfigError(f"{options}: for seq2seq models only, not for {problem}")
    else:
        service = cls(predictor, limits)
    batcher = Batcher(service.run if service.items else None, max_items=max_batch,
                      wait_ms=batch_wait_ms)
    about = _about(run, checkpoint, problem, service, predictor)
    del checkpoint  # the weights now live in the model
    about["limits"] = vars(limits) | {"max_body_bytes": max_body}
    about["batching"] = {"max_batch": max_batch, "wait_ms": batch_wait_ms}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="seqlab", version=_version(), lifespan=lifespan,
                  description=f"A trained {problem} model of seqlab: {Path(run)}")
    _add_error_handlers(app)
    _add_service_route(app, service, batcher, limits)

    @app.get("/health", response_model=schemas.Health)
    async def health():
        return {"status": "ok"}

    @app.get("/model", response_model=schemas.ModelInfo)
    async def model():
        return {**about, "batching": {**about["batching"], **batcher.stats.as_dict()}}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/hangul.ttf", include_in_schema=False)
    async def hangul_font():  # NanumGothic: Hangul on the page without a system font
        font = await asyncio.to_thread(hangul_font_bytes)  # made once, off the event loop
        if font is None:
            return JSONResponse({"error": "no Hangul font installed"}, status_code=404)
        return Response(font, media_type="font/ttf",
                        headers={"cache-control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=PAGE), name="static")
    return BodyLimit(app, max_body)


@functools.cache
def hangul_font_bytes() -> bytes | None:
    """NanumGothic (the font of seqlab's pictures) as the page can use it: browsers' font
    sanitizer (OTS) rejects the file's empty VTT source tables (TSI0-TSI5: hinting sources
    for a font editor, unused when rendering), so they are dropped, with fontTools
    (matplotlib's own font library)."""
    import io

    from fontTools.ttLib import TTFont

    from seqlab.plots import hangul_font_path

    path = hangul_font_path()
    if path is None:
        return None
    font = TTFont(path)
    for tag in [t for t in font.keys() if t.startswith("TSI")]:
        del font[tag]
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


def _version() -> str:
    from seqlab import __version__

    return __version__


def _about(run, checkpoint, problem, service, predictor) -> dict:
    """What /model says about the run (checkpoint: the ReadCheckpoint it was loaded from)."""
    where, state = checkpoint
    results = None
    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        for split in results.values():  # every output sentence would make /model huge
            if isinstance(split, dict):
                split.pop("hypotheses", None)
    except (OSError, ValueError):
        pass
    config = predictor.config
    return {
        "run": str(run), "problem": problem, "endpoint": service.endpoint,
        "parameters": sum(p.numel() for p in predictor.model.parameters()),
        "vocabulary": service.vocabulary(), "progress": dict(state.get("progress", {})),
        "results": results, "config": _config_dict(config), "checkpoint": str(where),
    }


def _config_dict(config) -> dict:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


# ---------------------------------------------------------------------------------- routes
def _add_service_route(app: FastAPI, service, batcher: Batcher, limits: Limits) -> None:
    errors = {code: {"model": schemas.Error} for code in (400, 413, 422, 503, 504)}

    async def endpoint(request: service.request_model) -> service.response_model:
        start = time.perf_counter()
        service.check(request)
        if service.items:
            outputs = await batcher.submit(service.items(request), service.key(request),
                                           timeout=limits.timeout)
        else:
            outputs = await _single(batcher, service, request, limits.timeout)
        return service.respond(request, outputs, 1000 * (time.perf_counter() - start))

    app.post(service.endpoint, response_model=service.response_model, responses=errors,
             summary=f"the {service.problem} model: {service.endpoint.strip('/')}")(endpoint)


async def _single(batcher: Batcher, service, request, timeout: float):
    try:
        return await asyncio.wait_for(batcher.call(service.call, request), timeout)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"no answer within the time limit of {timeout:g} s") from None


def _add_error_handlers(app: FastAPI) -> None:
    def answer(status: int, message: str, **extra) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return answer(400, "the body is not valid JSON: "
                          f"{first.get('ctx', {}).get('error', first['msg'])}")
        where = ".".join(str(p) for p in first["loc"][1:]) or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        message = first["msg"].removeprefix("Value error, ")  # a validator's own words
        return answer(422, f"{where}: {message}{more}", detail=detail)

    @app.exception_handler(InputError)
    async def refused(request: Request, exc: InputError):
        return answer(exc.status, str(exc))

    @app.exception_handler(ConfigError)
    @app.exception_handler(DataError)
    async def bad_input(request: Request, exc: ValueError):
        return answer(422, str(exc))

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        return answer(503, str(exc))

    @app.exception_handler(RequestTimeout)
    async def late(request: Request, exc: RequestTimeout):
        return answer(504, str(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):  # logged; the server goes on
        log.exception("error while answering %s", request.url.path)
        return answer(500, f"internal error: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------- body limit
class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is a 413 before the app reads it (by
    its Content-Length, or while a chunked body arrives), never a 500."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def __getattr__(self, name):  # app.openapi(), app.routes ... reach the FastAPI app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._too_large(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        body = json.dumps({"error": f"the request body is over this server's limit of "
                                    f"{self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
