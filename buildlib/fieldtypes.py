"""The field types of images.yaml, as pydantic checks them: strict (no conversions).

Imported only to validate a file (pydantic costs a tenth of a second to import); the
dataclasses in `config` name these types in their annotations.
"""

from typing import Annotated

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from buildlib.config import IMPORT_PATH_RE, PLATFORM_RE

__all__ = ["ImportPath", "NonNegativeInt", "Platforms", "PositiveInt", "PositiveSeconds",
           "Scalar", "StrictBool", "StrictStr"]

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveSeconds = Annotated[StrictInt | StrictFloat, Field(gt=0)]
ImportPath = Annotated[StrictStr, Field(pattern=IMPORT_PATH_RE.pattern)]
Platforms = Annotated[list[Annotated[StrictStr, Field(pattern=PLATFORM_RE.pattern)]],
                      Field(min_length=1)]
