"""ASGI middleware in front of every route: bearer tokens and their scopes, then the request
body limits."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as Scope_

from .._errors import ConfigurationError

TOKEN_VARIABLE = "LANGCHAIN_PERSIST_API_TOKEN"
TOKENS_VARIABLE = "LANGCHAIN_PERSIST_API_TOKENS"
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_BODY_TIMEOUT = 10.0
_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


@dataclass(frozen=True, slots=True)
class Scope:
    """The agents a token may use: names or shell-style patterns (``team-*``); ``*`` alone is
    everything, including checkpoints that belong to no agent."""

    patterns: tuple[str, ...]

    @property
    def everything(self) -> bool:
        """Whether this token may use every agent (and unowned checkpoints)."""
        return "*" in self.patterns

    def allows(self, agent_id: str | None) -> bool:
        """Whether this token may use ``agent_id`` (None: a record that belongs to no agent)."""
        if self.everything:
            return True
        return agent_id is not None and any(fnmatchcase(agent_id, p) for p in self.patterns)


EVERYTHING = Scope(("*",))


def load_tokens(api_token: str | None, api_tokens: Mapping[str, Any] | str | None) -> dict[
        str, Scope]:
    """The tokens a server accepts, with their scopes (empty: no token needed).

    ``api_token`` (or ``$LANGCHAIN_PERSIST_API_TOKEN``) may use everything.  ``api_tokens``
    (or ``$LANGCHAIN_PERSIST_API_TOKENS``) maps tokens to the agents they may use: a mapping,
    a JSON object, or the path of a JSON file, such as ``{"s3cret": ["billing-*", "support"],
    "admin-token": ["*"]}``.
    """
    tokens: dict[str, Scope] = {}
    single = api_token or os.environ.get(TOKEN_VARIABLE) or None
    if single:
        tokens[single] = EVERYTHING
    scoped = api_tokens if api_tokens is not None else os.environ.get(TOKENS_VARIABLE) or None
    if isinstance(scoped, str):
        text = scoped.strip()
        if not text.startswith("{"):
            try:
                text = Path(text).expanduser().read_text()
            except OSError as exc:
                raise ConfigurationError(
                    f"${TOKENS_VARIABLE} is neither a JSON object nor a readable file: {exc}"
                ) from exc
        try:
            scoped = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"the scoped tokens are not valid JSON: {exc}") from exc
    for token, agents in (scoped or {}).items():
        patterns = [agents] if isinstance(agents, str) else agents
        if (not isinstance(token, str) or not token.strip() or not isinstance(patterns, list)
                or not patterns or not all(isinstance(a, str) and a for a in patterns)):
            raise ConfigurationError(
                "scoped tokens map each token to a list of agent names or patterns, e.g. "
                '{"s3cret": ["billing-*", "support"]}; got ' + repr(token)[:40]
            )
        tokens[token] = Scope(tuple(patterns))
    return tokens


class BearerToken:
    """Refuse (401) every HTTP request without ``Authorization: Bearer <token>`` for one of
    ``tokens``; a request that has one carries its `Scope` in ``request.state.scope``."""

    def __init__(self, app: ASGIApp, tokens: Mapping[str, Scope]) -> None:
        self.app = app
        self._tokens = [(token.encode(), scope) for token, scope in tokens.items()]

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            kind, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
            found = None
            for token, allowed in self._tokens:  # every one compared: no timing hint
                if secrets.compare_digest(given.strip().encode(errors="replace"), token):
                    found = allowed
            if kind.lower() != "bearer" or found is None:
                response = JSONResponse(
                    {"detail": "missing or wrong bearer token: send the header "
                     f"'Authorization: Bearer <token>' with the server's ${TOKEN_VARIABLE}"},
                    status_code=401, headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["scope"] = found
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse (413) a request body larger than ``max_bytes``, declared or streamed, and (408)
    one that takes more than ``timeout`` seconds to arrive.

    The body is read here, up to the limit, and handed on whole; a request without a body
    (GET, an event stream) passes untouched.  A client that trickles a body a byte at a time
    holds a connection for ``timeout`` seconds at most.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client left before the end
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await self._refuse(scope, receive, send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            response = JSONResponse(
                {"detail": f"the request body did not arrive within {self.timeout:g} s"},
                status_code=408, headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        body: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                                "more_body": False}]

        async def replay() -> Message:
            return body.pop() if body else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope_, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body too large: the limit is {self.max_bytes} bytes"},
            status_code=413,
        )
        await response(scope, receive, send)
