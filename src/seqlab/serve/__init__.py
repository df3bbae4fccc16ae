"""Serving a trained run over HTTP: `seqlab serve RUN` (see seqlab.serve.app for the API).

    seqlab.serve.app        the FastAPI app: routes, errors, the body limit, the page
    seqlab.serve.services   per problem: what a request may ask, what is batched, the answer
    seqlab.serve.batching   requests arriving together share one model call
    seqlab.serve.schemas    the typed requests and responses (the OpenAPI description)
    seqlab.serve.page       the page (plain HTML, CSS and JS; no build step, no CDN)
"""

from __future__ import annotations


def serve(run: str, host: str = "127.0.0.1", port: int = 8000, *, threads: int | None = None,
          access_log: bool = False, ready=None, **options) -> None:
    """Load `run`, bind host:port, and answer until Ctrl-C. Every problem before serving
    (a bad run, a taken port) is one line (CheckpointError, ConfigError, RunError).
    `ready(url)` is called once the socket is bound (default: print the address)."""
    import uvicorn

    from seqlab.serve.app import create_app

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    app = create_app(run, **options)
    sock = bind(host, port)
    url = f"http://{_url_host(host)}:{sock.getsockname()[1]}/"
    (ready or (lambda u: print(f"seqlab serve: {run} at {u}  (API: {u}docs; Ctrl-C stops)",
                               flush=True)))(url)
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def bind(host: str, port: int):
    """A listening TCP socket on host:port (port 0: any free port), or one RunError line."""
    import socket

    from seqlab.errors import RunError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise RunError(f"--host {host} --port {port}: cannot listen there "
                       f"({exc.strerror or exc})") from None
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
