"""The running edge: the twistd plugin's service tree, worker processes, reloads, sweeps.

`tap` builds the services from the config (listeners, copier, stores, state watchers),
`workers` starts and supervises extra processes sharing the listening socket, `reload`
applies SIGHUP, `sweeper` clears what crashed copies and uploads leave behind, and `cli` is
the `cosedge` command (`check-config`).
"""
