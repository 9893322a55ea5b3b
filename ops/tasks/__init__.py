"""The invoke namespace of opskit: one collection per capability, env-named tasks from env/.

Imports here stay light (invoke only) so that `inv --list` answers fast; each task imports
the library it needs when it runs.
"""

from __future__ import annotations

from invoke.collection import Collection


def namespace() -> Collection:
    from ops.tasks import backup, deploy, hosts, images, lab, ops, provision, runbook, swarm

    root = Collection()
    for module in (lab, hosts, ops, swarm, runbook, backup, images):
        root.add_collection(module.collection())
    for collection in [*provision.collections(), *deploy.collections()]:
        root.add_collection(collection)
    root.configure({"ops": {"env": None}})
    return root
