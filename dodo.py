"""imagebake in this repository: `doit build`, `doit push`, `doit status`, ... over the
images.yaml beside this file (or `config=`); the `imagebake` command loads the same
tasks. See README.md; the design the code keeps is docs/design.md."""

from pathlib import Path

from buildlib import run, tasks

RUN = run.load_run(Path(__file__).parent)
globals().update(tasks.namespace(RUN))
