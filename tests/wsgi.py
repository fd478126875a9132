"""One WSGI call of a flask app's ``wsgi_app`` (its middleware included), with or without a Content-Length:
what ``PostsFirst`` answers and what flask's own view of the same responder answers."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask


def call(
    app: Flask,
    path: str,
    body: bytes,
    *,
    chunked: bool = False,
    method: str = "POST",
    length: int | str | None = None,
) -> tuple[str, dict[str, str], bytes]:
    """One WSGI call: status line, headers, body. ``chunked``: no Content-Length, input ended by the server
    (``wsgi.input_terminated``), as gunicorn passes a chunked body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8888",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if chunked:
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(len(body) if length is None else length)  # a str passes as it is
    seen: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: object = None
    ) -> Callable[..., Any]:
        seen["status"], seen["headers"] = status, dict(headers)
        return lambda data: None

    chunks: Iterable[bytes] = app.wsgi_app(environ, start_response)
    data = b"".join(chunks)
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    return seen["status"], seen["headers"], data


def both(app: Flask, path: str, body: bytes) -> tuple[tuple[str, str, bytes], tuple[str, str, bytes]]:
    """(middleware, flask) answers: status, Content-Type and body; the Content-Length matches the body."""
    answers = []
    for chunked in (False, True):
        status, headers, data = call(app, path, body, chunked=chunked)
        assert int(headers["Content-Length"]) == len(data)
        answers.append((status, headers["Content-Type"], data))
    return answers[0], answers[1]
