"""The team registry's private CA (REGISTRY_CA) where Docker looks for it:
/etc/docker/certs.d/<registry host[:port]>/ca.crt, 0644 root. Docker reads that directory on each
request, so no engine restart. Only this one file is ever written; nothing else in certs.d is touched.
"""

from __future__ import annotations

from ops.provision.commands import write_file
from ops.provision.facts import HostFacts
from ops.provision.step import Change, Context, Step, StepSkipped


class RegistryCaStep(Step):
    name, key = "registry ca", "registry-ca"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        s = ctx.settings
        if not s.registry_ca:
            raise StepSkipped("no private CA to trust (REGISTRY_CA is empty)")
        path = s.registry_ca_path
        if facts.file(path) == s.registry_ca:
            return []
        verb = "replace" if facts.file(path) is not None else "install"
        return [
            Change(
                f"{verb} REGISTRY_CA as {path} (trusted for {s.registry_host})",
                (write_file(path, s.registry_ca, mode="0644", owner="root:root"),),
            )
        ]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{ctx.settings.registry_ca_path} holds REGISTRY_CA"
