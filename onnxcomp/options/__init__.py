"""Every option of onnxcomp, typed once and validated once.

The dataclasses are the single source: the API takes them (or their fields as keywords),
the command line builds its options from their fields (``cli/_options.py``: choices from
the ``Literal`` types, defaults, help and metavar from ``field`` metadata), and recipes
take their keys and value types from them (``recipe.py``). Adding an option is adding
one field (compress.py, commands.py) and using it where it acts. fields.py holds the
types and the field helper, common.py what several commands share.
"""

from onnxcomp.options.commands import (
    AutoOptions,
    CheckOptions,
)
from onnxcomp.options.common import (
    LayerOptions,
    TaskOptions,
    check_chain,
    recover_methods,
    validate_confidence,
    validate_prune,
)
from onnxcomp.options.compress import (
    CompressOptions,
)
from onnxcomp.options.fields import (
    ACTIVATION_TYPES,
    BLOCK_SIZES,
    CALIB_METHODS,
    CLOSED_FORM,
    DISTILL_LOSSES,
    METRICS,
    OBJECTIVES,
    PRECISIONS,
    QUANTIZE_MODES,
    RECOVER_METHODS,
    TASKS,
    TRAINED,
    ActivationType,
    CalibMethod,
    Engine,
    MeasureMode,
    Metric,
    Objective,
    Precision,
    Quantize,
    RecoverMethod,
    Task,
    WeightRange,
    choices_of,
    option,
    option_fields,
    required,
)

__all__ = [
    "ACTIVATION_TYPES",
    "BLOCK_SIZES",
    "CALIB_METHODS",
    "CLOSED_FORM",
    "DISTILL_LOSSES",
    "METRICS",
    "OBJECTIVES",
    "PRECISIONS",
    "QUANTIZE_MODES",
    "RECOVER_METHODS",
    "TASKS",
    "TRAINED",
    "ActivationType",
    "AutoOptions",
    "CalibMethod",
    "CheckOptions",
    "CompressOptions",
    "Engine",
    "LayerOptions",
    "MeasureMode",
    "Metric",
    "Objective",
    "Precision",
    "Quantize",
    "RecoverMethod",
    "Task",
    "TaskOptions",
    "WeightRange",
    "check_chain",
    "choices_of",
    "option",
    "option_fields",
    "recover_methods",
    "required",
    "validate_confidence",
    "validate_prune",
]
