"""imagebake: `doit build`, `doit push`, `doit status`; see README.md and images.yaml."""

from buildlib import run, tasks

RUN = run.load_run(__file__)
DOIT_CONFIG = tasks.doit_config(RUN)


def task_build():
    """build every image that is out of date"""
    yield from tasks.build_tasks(RUN)


def task_push():
    """build what is stale, then push what the registry lacks"""
    yield from tasks.push_tasks(RUN)


def task_status():
    """list images with their parents and what a build would do (a dry run)"""
    return tasks.status_task(RUN)


def task_resolve():
    """write build/images.lock.json: each image's digest, key and ID in the registry"""
    return tasks.resolve_task(RUN)


def task_graph():
    """draw the image graph as DOT and SVG, coloured by each image's last status"""
    return tasks.graph_task(RUN)
