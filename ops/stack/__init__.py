"""A compose stack as opskit sees it: its files, services and rendered .env (compose.py), and the
toolbox that runs real Compose and config checkers in a container (toolbox.py)."""

from ops.stack.compose import Service, Stack, load_stack, render_env, stack_dir

__all__ = ["Service", "Stack", "load_stack", "render_env", "stack_dir"]
