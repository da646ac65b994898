"""The FlowRun model: manifest, reference language, validation, states and status.

Pure data and rules, no I/O: everything else in daskflow builds on this layer.
"""
