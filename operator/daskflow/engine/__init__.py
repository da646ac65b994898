"""The engine: executes a FlowRun's graph on any ``distributed`` cluster it is handed.

The same engine serves ``daskflow run`` (an embedded LocalCluster), the runner pod and the
operator's in-process mode. It reports status through a coalescing callback and never
talks to Kubernetes itself.
"""
