"""Runs TFX's search, records every trial (failed ones too), and stops when all trials failed.

TFX's own executor writes the best hyperparameters of "the best trials", which KerasTuner pads
with failed trials when too few completed: with every trial failed, it would hand the Trainer a
failed trial's values. This executor refuses that in one line, and marks the best
hyperparameters artifact with the search's fingerprint, objective, score and values, so that
ML Metadata shows them and a later run can reuse them (`tuning.reuse: latest`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tfx import types
from tfx.components.tuner import executor as tfx_tuner
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils

from skewless.transforms.tuning import TuningPlan, trial_records

TRIALS_FILE = "trials.json"
# Custom properties of the best hyperparameters artifact (read by pipeline/results.py).
FINGERPRINT_PROPERTY = "search_fingerprint"
VALUES_PROPERTY = "best_values"
OBJECTIVE_PROPERTY = "objective"
SCORE_PROPERTY = "best_score"
TRIALS_PROPERTY = "trials"
FAILED_PROPERTY = "failed_trials"


class AllTrialsFailed(RuntimeError):
    """No trial of the search completed."""


class Executor(tfx_tuner.Executor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        tuner = tfx_tuner.search(input_dict, exec_properties, self._get_tmp_dir())
        records = trial_records(tuner)
        results_dir = artifact_utils.get_single_uri(
            output_dict[standard_component_specs.TUNER_RESULTS_KEY])
        io_utils.write_string_file(os.path.join(results_dir, TRIALS_FILE),
                                   json.dumps([dataclasses.asdict(r) for r in records]))
        completed = [r for r in records if r.status == "completed" and r.score is not None]
        if not completed:
            first = records[0].error if records else "no trial ran"
            raise AllTrialsFailed(f"every trial of the hyperparameter search failed "
                                  f"({len(records)} of {len(records)}); the first: {first}")
        tfx_tuner.write_best_hyperparameters(tuner, output_dict)
        best_trial = tuner.oracle.get_best_trials(1)[0]
        custom_config = json_utils.loads(exec_properties.get("custom_config") or "null")
        [best] = output_dict[standard_component_specs.BEST_HYPERPARAMETERS_KEY]
        best.set_string_custom_property(
            FINGERPRINT_PROPERTY, TuningPlan.from_custom_config(custom_config).fingerprint())
        best.set_string_custom_property(
            VALUES_PROPERTY, json.dumps(best_trial.hyperparameters.values, sort_keys=True))
        best.set_string_custom_property(OBJECTIVE_PROPERTY, tuner.oracle.objective.name)
        best.set_float_custom_property(SCORE_PROPERTY, float(best_trial.score))
        best.set_int_custom_property(TRIALS_PROPERTY, len(records))
        best.set_int_custom_property(FAILED_PROPERTY, len(records) - len(completed))
