"""The composition root: the `dispatch-bridge` command line.

The only package that knows both services: it reads the settings of both (one check of the
whole configuration file), starts embedded PostgreSQL for development, and serves
dispatch-api, the bridge, or both in one process. `bridge` and `dispatch_api` never import
each other; everything that wires them together lives here.
"""
