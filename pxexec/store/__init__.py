"""The store side: Store and the state that outlives one call.

``store`` (Store: put/get/proxy over a connector), ``registry`` (one store per config
per process), ``factory`` (what a proxy pickles to), ``leases`` (the one owner of
lease holds), ``ownership`` (OwnedProxy and borrows), ``evictions`` (failed frees
retried), ``reachable`` (the proxies an object references), ``usage`` (what a store
holds).
"""
