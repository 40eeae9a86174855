"""Where everything is kept: engine and sessions, the typed models, PHI encryption at rest, schema migrations, the
leases a process renews while it lives, and a database failure told to the operator in one line (`failures`).

PHI encryption (`phi`) lives here, not in `trust/`, because it is how a column is written: every model with an
encrypted column needs it. Imports only `config/`.
"""
