"""The allocation planner: how many replicas of each model on each device, solved as a
mixed-integer program over measured numbers, and written out as KEDA bounds.

A runtime package of its own: the router never imports it; `chorus plan` and the live planner
do."""
