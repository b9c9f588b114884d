"""The field types of images.yaml, as pydantic checks them: strict (no conversions).

Imported only to validate a file (pydantic costs a tenth of a second to import); the
dataclasses in `config` name these types in their annotations. It imports nothing of
buildlib: `config` imports it (lazily), not the other way round.
"""

import re
from typing import Annotated

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

__all__ = ["ImportPath", "NonNegativeInt", "Platforms", "PositiveInt", "PositiveSeconds",
           "Scalar", "StrictBool", "StrictStr"]

# `os/arch[/variant]`, as `buildah bud --platform` takes it: linux/amd64, linux/arm/v7
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
# `module:attr`, e.g. `kolla.template.filters:customizable`
IMPORT_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveSeconds = Annotated[StrictInt | StrictFloat, Field(gt=0)]
ImportPath = Annotated[StrictStr, Field(pattern=IMPORT_PATH_RE.pattern)]
Platforms = Annotated[list[Annotated[StrictStr, Field(pattern=PLATFORM_RE.pattern)]],
                      Field(min_length=1)]
