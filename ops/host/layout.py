"""Where opskit keeps a project's state on a host: /opt/<project>/ with releases/, current, lock,
audit.log and drills/. Every module that names one of these paths asks this one."""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "/opt"


@dataclass(frozen=True)
class ProjectLayout:
    """The paths of one compose project on a host (plain strings: they are remote paths)."""

    project: str

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.project}"

    @property
    def releases(self) -> str:
        return f"{self.base}/releases"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    @property
    def current(self) -> str:
        return f"{self.base}/current"

    def drill(self, project: str) -> str:
        """The directory of a restore drill's throwaway copy (its compose file), while it runs."""
        return f"{self.base}/drills/{project}"

    @property
    def lock(self) -> str:
        return f"{self.base}/lock"

    @property
    def audit_log(self) -> str:
        return f"{self.base}/audit.log"
