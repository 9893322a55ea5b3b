"""A team registry (REGISTRY, REGISTRY_USER, the secret REGISTRY_PASSWORD) as the ImageRegistry of
IMAGE_SOURCE=registry: this machine's engine logs in and pushes there; each host logs in with the
password on stdin, pulls by digest and tags, with no tunnel. The password never reaches a command
line, an output line, a release file or the audit; a failure is one line saying what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ops.config import Environment, RegistrySettings
from ops.config.env import ENV_DIR, SECRETS_SUFFIX
from ops.console import OK, Reporter
from ops.errors import DeployError, RegistryError
from ops.images.local_registry import PushedImage, push_image
from ops.images.registry import PULL_TIMEOUT, pull_script
from ops.transport import Host
from ops.transport.docker import local_client
from ops.transport.shell import last_line, q

if TYPE_CHECKING:
    import docker

# Exit codes of the host script, so that its failure says which stage failed.
LOGIN_FAILED, PULL_FAILED = 90, 91

# What the engine's messages say, lower-cased, by the fault they mean (checked in this order).
_CREDENTIALS = ("unauthorized", "authentication required", "incorrect username or password")
_TLS = ("x509", "certificate", "tls: ", "http response to https client")
_UNREACHABLE = (
    "connection refused",
    "no route to host",
    "network is unreachable",
    "no such host",
    "server misbehaving",
    "i/o timeout",
    "timeout exceeded",
    "context deadline exceeded",  # the engine's HTTP client gave up waiting: nothing answered
    "dial tcp",
)
_CUT_OFF = ("unexpected eof", "connection reset", "broken pipe", ": eof", "context canceled")
_REFUSED = ("denied", "forbidden", "manifest unknown", "name unknown", "not found", "blob unknown")
_PUSH_PREFIX = re.compile(r"^push (?:of \S+ )?failed: ")
_DISK = ("no space left on device",)


@dataclass(frozen=True)
class Fault:
    """A registry failure as a person reads it: what happened, and what to do."""

    message: str
    hint: str


def describe_fault(
    stage: str, detail: str, *, settings: RegistrySettings, secrets_file: str, local: bool, subject: str = ""
) -> Fault:
    """The fault behind an engine's message at stage (login, push or pull; subject: the repository
    or ref), from this machine (local) or a host."""
    text = " ".join(detail.split())[:200] or "no output"
    lowered = text.lower()
    registry, user = settings.host, settings.user
    side = "this machine" if local else "the host"

    def matches(words: tuple[str, ...]) -> bool:
        return any(word in lowered for word in words)

    if matches(_CREDENTIALS):
        if not user:
            return Fault(
                f"registry {registry} wants a login for the {stage} of {subject or 'images'}: {text}",
                "set REGISTRY_USER, and REGISTRY_PASSWORD in " + secrets_file,
            )
        return Fault(
            f"registry {registry} refused the credentials of {user} ({stage}): {text}",
            f"check REGISTRY_USER, and REGISTRY_PASSWORD in {secrets_file}",
        )
    if matches(_TLS):
        how = (
            f"put the registry's CA in /etc/docker/certs.d/{registry}/ca.crt here"
            if local
            else "set REGISTRY_CA to the registry's CA file and run inv provision"
        )
        return Fault(f"registry {registry}'s TLS certificate is not trusted by {side} ({stage}): {text}", how)
    if matches(_DISK):
        return Fault(
            f"{stage} of {subject or 'images'} failed: {side}'s disk is full: {text}", "free space and deploy again"
        )
    if matches(_UNREACHABLE):
        return Fault(
            f"registry {registry} is unreachable from {side} ({stage}): {text}",
            f"is it up, and is REGISTRY right? {side} must reach {registry} over HTTPS",
        )
    if matches(_CUT_OFF):
        return Fault(
            f"the {stage} of {subject or 'images'} from {registry} was cut off: {text}",
            "the connection to the registry dropped; deploy again (layers already there are kept)",
        )
    if matches(_REFUSED):
        return Fault(
            f"registry {registry} refused the {stage} of {subject or 'images'}: {text}",
            f"does {user or 'an anonymous user'} have {stage} rights there, and was the image pushed?",
        )
    return Fault(f"{stage} at registry {registry} failed on {side}: {text}", "see the registry's log")


class TeamRegistry:
    """The team registry: pushed to from this machine's engine, pulled from by each host directly."""

    push_before_hosts = True  # wrong credentials or an unreachable registry fail before any host changes

    def __init__(
        self,
        settings: RegistrySettings,
        password: str = "",
        *,
        secrets_file: str = "the secrets file",
        engine: Callable[[], docker.DockerClient] = local_client,
    ):
        self.settings = settings
        self._password = password
        self.secrets_file = secrets_file
        self.engine = engine

    @classmethod
    def from_env(cls, env: Environment) -> TeamRegistry:
        settings = env.registry
        password = env.secrets["REGISTRY_PASSWORD"] if settings.user else ""  # load_environment made sure
        return cls(settings, password, secrets_file=f"{ENV_DIR}/{env.name}{SECRETS_SUFFIX}")

    def __repr__(self) -> str:
        return f"TeamRegistry({self.settings.registry!r}, user={self.settings.user!r})"

    @property
    def address(self) -> str:
        return self.settings.host

    def repository(self, project: str, service: str) -> str:
        return "/".join(part for part in (self.settings.path, project.lower(), service.lower()) if part)

    def _fault(self, stage: str, detail: str, *, local: bool, subject: str = "") -> Fault:
        return describe_fault(
            stage, detail, settings=self.settings, secrets_file=self.secrets_file, local=local, subject=subject
        )

    def _auth(self) -> dict[str, str] | None:
        if not self.settings.user:
            return None
        return {"username": self.settings.user, "password": self._password, "serveraddress": self.address}

    def open(self, reporter: Reporter) -> None:
        """Log this machine's engine in (the password goes to the engine as request data)."""
        if not self.settings.user:
            reporter.step("local", "registry login", OK, f"none: {self.address} without REGISTRY_USER")
            return
        import docker

        try:
            engine = self.engine()
        except docker.errors.DockerException as error:
            raise RegistryError(f"this machine's Docker engine is not reachable: {error}", where="local") from None
        try:
            # reauth: always ask the registry, never a login the engine or ~/.docker remembered.
            engine.login(self.settings.user, self._password, registry=self.address, reauth=True)
        except docker.errors.DockerException as error:
            detail = getattr(error, "explanation", None) or str(error)
            fault = self._fault("login", str(detail), local=True)
            raise RegistryError(fault.message, where="local", hint=fault.hint) from None
        finally:
            engine.close()
        reporter.step("local", "registry login", OK, f"{self.settings.user} at {self.address}")

    def push(self, image: str, repository: str, reporter: Reporter) -> PushedImage:
        engine = self.engine()
        try:
            return push_image(self, image, repository, reporter, client=engine, auth_config=self._auth())
        except RegistryError as error:
            if error.message.startswith("no image "):
                raise
            detail = _PUSH_PREFIX.sub("", error.message)
            fault = self._fault("push", detail, local=True, subject=repository)
            raise RegistryError(fault.message, where="local", hint=fault.hint) from None
        finally:
            engine.close()

    def host_script(self, pulls: Mapping[str, str]) -> str:
        """The host's shell script: log in (password on stdin) into a DOCKER_CONFIG of its own that
        is removed however the script ends, pull by digest, tag; LOGIN_FAILED or PULL_FAILED."""
        pull = f"{{ {pull_script(pulls)}; }} || exit {PULL_FAILED}"
        if not self.settings.user:
            return pull  # a registry without login: the host's own docker config (if any) applies
        login = (
            f"docker login {q(self.address)} --username {q(self.settings.user)} --password-stdin >/dev/null"
            f" || exit {LOGIN_FAILED}"
        )
        return (
            "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; trap 'exit 1' HUP INT TERM; "
            f'export DOCKER_CONFIG="$d"; {login}; {pull}'
        )

    def pull(self, host: Host, pulls: Mapping[str, str], reporter: Reporter) -> int:
        stdin = self._password if self.settings.user else None
        result = host.run(self.host_script(pulls), check=False, timeout=PULL_TIMEOUT, stdin=stdin)
        if not result.ok:
            stage = "login" if result.exit_code == LOGIN_FAILED else "pull"
            subject = ", ".join(sorted(set(pulls))) if stage == "pull" and len(set(pulls)) == 1 else ""
            output = last_line(result.stderr or result.stdout, limit=400)
            fault = self._fault(stage, output, local=False, subject=subject)
            raise DeployError(fault.message, where=host.name, hint=fault.hint)
        return 0
