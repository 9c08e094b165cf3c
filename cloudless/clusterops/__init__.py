"""cloudless.clusterops — operations on the cluster's control plane itself.

===================  ===========================================================================
module               owns
===================  ===========================================================================
``status``           ``ca_status`` (pure): roots and their roles in a rotation, expiries
``quorum``           ``removal_refusal``, ``restart_refusal`` (pure): may this etcd member go
                     (or restart) without losing quorum?
``rotation_plan``    ``next_step`` (pure): when a root rotation moves to its next phase;
                     ``abort_refusal``/``aborting``: taking one back to the old root
``etcd_tls``         ``etcd_tls_plan`` (pure) and ``EtcdTlsFollower``: the embedded etcd
                     member's certificates and trusted-CA file follow the CA, one member
                     restarted at a time
``rotation_runner``  ``RootRotation`` (start, follow, lead; the coordinator's own renewal) and
                     ``AgentTrust`` (the bundle / renew advice in agents' heartbeat acks)
``api``              ``install(app, api)``: ``GET /v1/ca/status``, ``POST /v1/ca/rotate``,
                     ``POST /v1/ca/rotate/abort``,
                     ``GET /v1/ca/endorsements``, ``POST /v1/users/renew``,
                     ``DELETE /v1/cluster/coordinators/{name}`` on the user API
===================  ===========================================================================
"""
