"""A small synchronous REST client for the CLI (stdlib ``urllib``: nothing to import at
``--help`` time, and one request at a time is all a command needs).

Every resource command goes through the instance's REST API with its admin token, so the
server's validation and authorisation apply to the CLI exactly as to any other client.
Failures become :class:`~.errors.CliError` with the server's message and code.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mail_proxy.core.cli.errors import CliError

if TYPE_CHECKING:
    from mail_proxy.core.cli.home import Instance

MAX_RESPONSE_BYTES = 256 * 1024 * 1024


class HttpError(CliError):
    """The server answered with an error status: the request reached it and was refused
    (unlike a connection failure or a timeout, where its outcome is unknown)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, base_url: str, token: str | None, *, name: str = "", timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.name = name or self.base_url
        self.timeout = timeout

    @classmethod
    def for_instance(cls, instance: Instance) -> Client:
        if instance.running_pid() is None:
            raise CliError(
                f"instance {instance.name!r} is not running "
                f"(start it with: mail-proxy start {instance.name})"
            )
        return cls(instance.url, instance.token, name=instance.name)

    def get(self, path: str, query: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("GET", path, query=query)

    def post(
        self, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self.request("POST", path, body={} if body is None else body, query=query)

    def delete(self, path: str, query: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("DELETE", path, query=query)

    def request(
        self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send one request; return the decoded JSON answer or raise :class:`CliError`."""
        url = self.base_url + path + _query_string(query)
        with self._errors(method, path):
            with urllib.request.urlopen(
                self._request(method, url, body), timeout=self.timeout
            ) as resp:
                return _decode(resp.read(MAX_RESPONSE_BYTES), url)
        raise AssertionError("unreachable")  # pragma: no cover

    def lines(self, path: str, query: dict[str, Any] | None = None) -> Iterator[bytes]:
        """``GET path`` and yield the answer line by line as it arrives (JSON lines exports),
        each line with its newline; errors as in :meth:`request`."""
        url = self.base_url + path + _query_string(query)
        with self._errors("GET", path):
            with urllib.request.urlopen(
                self._request("GET", url, None), timeout=self.timeout
            ) as resp:
                yield from resp

    def _request(self, method: str, url: str, body: Any) -> urllib.request.Request:
        data = None
        headers = {"Accept": "application/json"}
        if self.token:
            headers["X-API-Token"] = self.token
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return urllib.request.Request(url, data=data, headers=headers, method=method)

    @contextlib.contextmanager
    def _errors(self, method: str, path: str) -> Iterator[None]:
        """Turn what urllib raises into :class:`CliError` with the server's message."""
        try:
            yield
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            raise CliError(f"cannot reach {self.name} at {self.base_url}: {reason}") from None
        except TimeoutError:
            raise CliError(f"{self.name} did not answer {method} {path} in time") from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            raise CliError(f"connection to {self.name} failed: {exc!r}") from None


def _query_string(query: dict[str, Any] | None) -> str:
    if not query:
        return ""
    pairs = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((key, str(value)))
    return ("?" + urllib.parse.urlencode(pairs)) if pairs else ""


def _decode(raw: bytes, url: str) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise CliError(f"{url} did not answer JSON") from None
    if not isinstance(data, dict):
        raise CliError(f"{url} answered unexpected JSON")
    return data


def _http_error(exc: urllib.error.HTTPError) -> HttpError:
    try:
        data = json.loads(exc.read(1024 * 1024) or b"{}")
    except (ValueError, OSError):
        data = {}
    if isinstance(data, dict) and data.get("error"):
        code = f" [{data['code']}]" if data.get("code") else ""
        return HttpError(f"{data['error']}{code} (HTTP {exc.code})", exc.code)
    return HttpError(f"the server answered HTTP {exc.code} {exc.reason}", exc.code)
