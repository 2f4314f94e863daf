"""The erasure service: an HTTP API that records erasure requests in a ledger (a database) before it
acknowledges them, the ledger itself (erasures, suppression list, model versions, API tokens) and the
operations a worker uses to apply erasures and publish model versions. See docs/service.md.

Nothing here is imported by the rest of the package; importing this package imports no web or database
library (the modules that need them import them)."""
