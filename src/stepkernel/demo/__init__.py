"""The ``stepkernel demo`` deployment workflow: registry, actors, renderer and driver."""

from stepkernel.demo.render import Style, render_tree
from stepkernel.demo.run import run_demo
from stepkernel.demo.workflow import DemoWorld, Timings, build_registry

__all__ = ["DemoWorld", "Style", "Timings", "build_registry", "render_tree", "run_demo"]
