"""Labels opskit reads on containers and volumes: Compose's own, and opskit's settings in a
stack's compose file (`opskit.*`)."""

from __future__ import annotations

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
VOLUME_LABEL = "com.docker.compose.volume"
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
# A swarm's: `docker stack deploy` labels services, tasks and volumes with their stack.
STACK_LABEL = "com.docker.stack.namespace"
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"  # on a task's container: <stack>_<service>
# On a swarm node (set by provisioning): the host as HOSTS names it. A deploy that cannot reach a
# host finds its node by it, to leave out a worker the swarm reports down.
NODE_HOST_LABEL = "opskit.host"

# opskit's own, set in a stack's compose file.
SWAP_LABEL = "opskit.swap"  # this service is swapped blue-green on deploy
BACKUP_PRE_LABEL = "opskit.backup.pre"  # command run in the container before its volumes are archived
BACKUP_POST_LABEL = "opskit.backup.post"  # ... and after
BACKUP_STOP_LABEL = "opskit.backup.stop"  # stop the container while its volumes are archived
BACKUP_RECIPE_LABEL = "opskit.backup.recipe"  # the recipe to use, overriding detection
ROLE_LABEL = "opskit.role"  # what a service is to the runbooks (redis, postgres, ...), overriding detection


def task_service(stack: str, swarm_service: str) -> str:
    """The stack service a swarm task's container belongs to, from its two labels (a swarm names
    services <stack>_<service>); "" for a container that is no task (docker inspect's template
    prints "<no value>" for a label the container lacks)."""
    if not stack or not swarm_service or "<no value>" in (stack, swarm_service):
        return ""
    return swarm_service.removeprefix(f"{stack}_")
