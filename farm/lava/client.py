"""LAVA's REST API (v0.2), as the farm uses it: submit a job, follow its state, read its log, cancel it.

The token comes from a file (--lava-token-file, which must be private: 0600) or the FARM_LAVA_TOKEN
environment variable, never from the command line, where any user's `ps` would show it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import requests

from ..errors import InfraError, InputError

TOKEN_ENV = "FARM_LAVA_TOKEN"
FINISHED = "Finished"


class LavaError(InfraError):
    """The lab did not answer as LAVA does (down, a 5xx, an unexpected reply)."""


@dataclass(frozen=True)
class Token:
    secret: str
    source: str  # where it came from, for error messages (never the secret itself)


def read_token(token_file: str | None, environ=os.environ) -> Token:
    if token_file:
        path = Path(token_file)
        try:
            st = path.stat()
        except OSError as e:
            raise InputError(f"--lava-token-file {token_file}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"--lava-token-file {token_file}: not a regular file")
        if st.st_mode & 0o077:
            raise InputError(f"--lava-token-file {token_file}: readable by others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); make it private with chmod 600")
        secret = path.read_text(errors="replace").strip()
        source = f"--lava-token-file {token_file}"
    else:
        secret = environ.get(TOKEN_ENV, "").strip()
        source = f"${TOKEN_ENV}"
        if not secret:
            raise InputError(f"LAVA needs a token: give --lava-token-file FILE or set {TOKEN_ENV}")
    if not secret or not re.fullmatch(r"[\x21-\x7e]+", secret):
        raise InputError(f"{source}: not a LAVA token (one line of printable characters)")
    return Token(secret, source)


def check_url(url: str) -> str:
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[^\s]*)?", url or ""):
        raise InputError(f"--lava {url}: not an http:// or https:// URL of a LAVA server")
    return url.rstrip("/")


class LavaClient:
    def __init__(self, url: str, token: Token, timeout: float = 30.0):
        self.base = check_url(url)
        self.api = f"{self.base}/api/v0.2/"
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token.secret}"

    # --- plumbing --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, ok=(200, 201), **kw) -> requests.Response:
        try:
            r = self.session.request(method, self.api + path, timeout=self.timeout, **kw)
        except requests.RequestException as e:
            raise LavaError(f"LAVA at {self.base}: {type(e).__name__}: {e}") from None
        if r.status_code in (401, 403):
            raise InputError(f"LAVA at {self.base} refused the token from {self.token.source} "
                             f"({r.status_code}: {_detail(r)})")
        if r.status_code not in ok:
            raise LavaError(f"LAVA at {self.base}: {method} {path}: HTTP {r.status_code}: {_detail(r)}")
        return r

    def _json(self, method: str, path: str, **kw) -> dict:
        r = self._request(method, path, **kw)
        try:
            return r.json()
        except ValueError:
            raise LavaError(f"LAVA at {self.base}: {method} {path}: not JSON: {r.text[:200]!r}") from None

    # --- the API ----------------------------------------------------------------------------------

    def version(self) -> str:
        return str(self._json("GET", "system/version/").get("version", "?"))

    def whoami(self) -> str:
        """The user the token belongs to (an anonymous answer means the token was not accepted)."""
        return str(self._json("GET", "system/whoami/").get("user", ""))

    def device_type(self, name: str) -> dict | None:
        r = self._request("GET", f"devicetypes/{name}/", ok=(200, 404))
        return r.json() if r.status_code == 200 else None

    def devices(self, device_type: str) -> list[dict]:
        data = self._json("GET", "devices/", params={"device_type": device_type, "limit": 500})
        return list(data.get("results", []))

    def submit(self, definition: str) -> int:
        r = self._request("POST", "jobs/", ok=(200, 201, 400), json={"definition": definition})
        data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code == 400 or not data.get("job_ids"):
            raise InputError(f"LAVA at {self.base} rejected the job definition: "
                             f"{data.get('message') or r.text[:300]}")
        return int(data["job_ids"][0])

    def job(self, job_id: int) -> dict:
        return self._json("GET", f"jobs/{job_id}/")

    def logs(self, job_id: int, start: int = 0) -> str:
        """The job log from entry `start` on (YAML, one entry a line); empty until the worker sends any."""
        params = {"start": start} if start else {}
        r = self._request("GET", f"jobs/{job_id}/logs/", ok=(200, 404), params=params)
        return r.text if r.status_code == 200 else ""

    def cancel(self, job_id: int) -> None:
        self._request("GET", f"jobs/{job_id}/cancel/")  # LAVA 2023.01 takes GET here

    def job_url(self, job_id: int) -> str:
        return f"{self.base}/scheduler/job/{job_id}"


def _detail(r: requests.Response) -> str:
    try:
        data = r.json()
        return str(data.get("detail") or data.get("message") or data)[:300]
    except ValueError:
        return r.text[:200].strip()
