"""Container networking: address plan, service VIPs and endpoints, nftables rules, DNS answers
and the Nebula overlay. Pure deciders live in ``addressing``, ``services``, ``nft``, ``dns`` and
``nebula_config``; the edges that act on the machine (``cni``, ``nft_apply``, ``dns_server``,
``nebula``) each ship a fake with a shared contract suite. See README.md.
"""
