"""The Distribution HTTP API v2 of a registry, as much as garbage collection needs: the repositories
(/v2/_catalog), their tags, a manifest's digest (HEAD) and deleting a manifest by digest.

Plain HTTP to the checkout's own registry on 127.0.0.1; no credentials. It never deletes anything
it is not told to by digest.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ops.errors import RegistryError
from ops.images.local_registry import DIGEST

# Without these the registry answers with (and digests) another form of the manifest: the digest a
# host pulled by is the one of the form it accepted, which is one of these.
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
INDEX_TYPES = frozenset(
    {"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json"}
)
PAGE = 1000
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, headers (names lower-case) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


Send = Callable[[str, str, Mapping[str, str]], Answer]  # (method, url, headers) -> answer


def urllib_send(method: str, url: str, headers: Mapping[str, str], timeout: float = 30) -> Answer:
    """One request with urllib; an HTTP error status is an Answer too, a dead socket a RegistryError."""
    request = urllib.request.Request(url, method=method, headers=dict(headers))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310 (http on loopback)
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())
    except (OSError, ValueError) as error:
        raise RegistryError(
            f"{method} {url} failed: {error}", hint="is the local registry running? (docker ps)"
        ) from None


@dataclass(frozen=True)
class ManifestHead:
    """What HEAD on a manifest tells: its digest and media type."""

    digest: str
    media_type: str

    @property
    def is_index(self) -> bool:
        return self.media_type.split(";")[0].strip() in INDEX_TYPES


class RegistryApi:
    """The API of the registry at url (http://127.0.0.1:PORT); send is the HTTP transport."""

    def __init__(self, url: str, send: Send = urllib_send):
        self.url = url.rstrip("/")
        self._send = send

    def _error(self, what: str, answer: Answer) -> RegistryError:
        detail = answer.body.decode(errors="replace").strip()[:200] or f"HTTP {answer.status}"
        return RegistryError(f"{what}: HTTP {answer.status}: {detail}", where=self.url)

    def _pages(self, path: str, field: str) -> list[str]:
        """Every item of a paginated list (_catalog, tags/list), following the Link headers."""
        items: list[str] = []
        url: str | None = f"{self.url}{path}?n={PAGE}"
        while url:
            answer = self._send("GET", url, {"Accept": "application/json"})
            if answer.status == 404:  # a repository whose tags were all deleted
                return items
            if answer.status != 200:
                raise self._error(f"GET {path}", answer)
            try:
                data = json.loads(answer.body or b"{}")
            except json.JSONDecodeError:
                raise self._error(f"GET {path} gave no JSON", answer) from None
            items += [str(item) for item in data.get(field) or ()]
            match = _NEXT.search(answer.headers.get("link", ""))
            url = urllib.parse.urljoin(self.url + "/", match.group(1)) if match else None
        return items

    def answers(self) -> bool:
        """GET /v2/ answers as a Distribution registry does (its API version header)."""
        try:
            answer = self._send("GET", f"{self.url}/v2/", {})
        except RegistryError:
            return False
        return answer.headers.get("docker-distribution-api-version", "").startswith("registry/2")

    def repositories(self) -> list[str]:
        return sorted(self._pages("/v2/_catalog", "repositories"))

    def tags(self, repository: str) -> list[str]:
        return sorted(self._pages(f"/v2/{repository}/tags/list", "tags"))

    def manifest(self, repository: str, reference: str) -> ManifestHead | None:
        """HEAD of a manifest by tag or digest; None when the registry does not have it."""
        path = f"/v2/{repository}/manifests/{reference}"
        answer = self._send("HEAD", self.url + path, {"Accept": ", ".join(MANIFEST_TYPES)})
        if answer.status == 404:
            return None
        digest = answer.headers.get("docker-content-digest", "")
        if answer.status != 200 or not DIGEST.match(digest):
            raise self._error(f"HEAD {path}", answer)
        return ManifestHead(digest, answer.headers.get("content-type", ""))

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """DELETE a manifest (and the tags naming it) by digest; False when it was already gone."""
        if not DIGEST.match(digest):
            raise RegistryError(f"refusing to delete {repository}@{digest!r}: not a digest", where=self.url)
        path = f"/v2/{repository}/manifests/{digest}"
        answer = self._send("DELETE", self.url + path, {})
        if answer.status in (200, 202):
            return True
        if answer.status == 404:
            return False
        if answer.status == 405:
            raise RegistryError(
                "the registry refuses deletes", where=self.url, hint="its config needs storage.delete.enabled: true"
            )
        raise self._error(f"DELETE {path}", answer)
