"""Task decomposition: a pipeline is a DAG of stages, each a task on one capability.

A pipeline lets one request ask several capabilities at once and feed one stage's answer to
another, without the application orchestrating the calls. It is declared in YAML:

```yaml
name: digits-describe          # pipeline name
inputs: [image, caption]       # the task input names the pipeline takes
stages:
  - name: digit                # unique stage name
    capability: classify/digits
    fusion_policy: soft_vote   # optional: the fuser's strategy for this stage
    conflict: {name: quorum, quorum: 2}   # optional: a ConflictPolicy, passed through as a dict
    inputs: {input: image}     # stage input name -> task input name, or "<stage>.<output>"
  - name: parity
    capability: classify/parity
    inputs: {input: digit.probabilities}  # the `probabilities` output of stage `digit`
outputs: {digit: digit.label, parity: parity.label}   # pipeline output -> "<stage>.<output>"
```

Names of task inputs and stages are letters, digits, `_` and `-` (no `.`, which separates a
stage from its output). A source with a `.` is always a stage output; one without is always a
task input. Every declared task input must be used by some stage, so a misspelt one cannot go
unnoticed. Stages may be listed in any order; the graph they form must have no cycle.

This package is pure: it parses (`spec`, `load`), validates and orders the graph (`stage`,
`graph`) and runs it (`run`). Running a stage (fanning out to the capability's members and
fusing) is the router's `RunStage`, injected into `run_pipeline`.
"""

from chorus.router.pipeline.graph import Pipeline
from chorus.router.pipeline.load import load_pipeline, load_pipelines
from chorus.router.pipeline.run import PipelineResult, RunStage, run_pipeline
from chorus.router.pipeline.stage import Source, Stage

__all__ = [
    "Pipeline",
    "PipelineResult",
    "RunStage",
    "Source",
    "Stage",
    "load_pipeline",
    "load_pipelines",
    "run_pipeline",
]
