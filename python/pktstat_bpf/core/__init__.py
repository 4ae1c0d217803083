"""The library: errors and exit codes, flow keys, formatting of flows
(text, JSON, DataFrame columns), Snapshot and Interval, the Collector and its
capture modes, and replay of capture files. Imports nothing above it."""
