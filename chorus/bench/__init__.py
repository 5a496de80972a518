"""`chorus bench`: one workload through several serving paths, side by side in one run.

Numbers only compare within one run on one machine, so every record carries the machine it
ran on and every path is measured in the same process with the same client code.
"""
