"""LAVA: the farm as a client of a LAVA lab. One cell is one LAVA job.

jobdef   job definitions generated from a cell's data (pure)
client   LAVA's REST API: submit, follow, logs, cancel
results  a LAVA job log into the console text, the test's stdout and the farm's outcome
"""
