"""Prometheus metrics of the edge (SPEC §9), one registry summed over all processes.

On the floor of the import graph, beside `config`: the web, origin and ISP layers all
report here, and nothing here imports them back. The package's `__init__` imports nothing
on purpose: `prometheus_client` chooses, when it is first imported, whether values live in
process memory or in the multiprocess folder, so `edge.metrics.folder.use_folder` must run
before anything imports `edge.metrics.families` (see that module).
"""
