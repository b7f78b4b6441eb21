"""``bpnet demo``: TAO BodyPoseNet's whole workflow in one command, ending in one report
(:mod:`bpnet.demo.run`)."""

from bpnet.demo.run import DEFAULT_BUDGET_MINUTES, DIFFICULTY, DemoSettings, demo_command, run_demo

__all__ = ["DEFAULT_BUDGET_MINUTES", "DIFFICULTY", "DemoSettings", "demo_command", "run_demo"]
