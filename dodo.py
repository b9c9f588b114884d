"""imagebake: `doit build`, `doit build:<image>`; see README.md and images.yaml."""

from buildlib import tasks

PROJECT = tasks.load_project(__file__)
DOIT_CONFIG = tasks.doit_config(PROJECT)


def task_build():
    """build every image that is out of date"""
    yield from tasks.build_tasks(PROJECT)


def task_push():
    """build what is stale, then push what the registry lacks"""
    yield from tasks.push_tasks(PROJECT)
