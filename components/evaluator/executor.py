"""TFX's Evaluator, fed by BaselineModel: compares with the pushed model when there is one, and
records on the evaluation which model that was (path and version), so lineage shows it."""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.types import artifact_utils, standard_component_specs

from skewless.components.baseline_model.executor import PATH, VERSION, has_baseline

BASELINE = standard_component_specs.BASELINE_MODEL_KEY
EVALUATION = standard_component_specs.EVALUATION_KEY
# The value recorded when the candidate had nothing to be compared with.
NO_BASELINE = ""


class Executor(tfx_evaluator.Executor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        inputs = dict(input_dict)
        baselines = [a for a in inputs.pop(BASELINE, []) if has_baseline(a)]
        if baselines:
            inputs[BASELINE] = baselines
        super().Do(inputs, output_dict, exec_properties)
        evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION])
        baseline = baselines[0] if baselines else None
        for key in (PATH, VERSION):
            value = baseline.get_string_custom_property(key) if baseline else NO_BASELINE
            evaluation.set_string_custom_property(key, value)
