"""opskit: provision Docker hosts, deploy compose stacks as releases, swap, back up, roll back."""

__version__ = "0.1.0"
