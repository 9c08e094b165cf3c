"""cloudless.clusterops — operations on the cluster's control plane itself.

==========  ====================================================================================
module      owns
==========  ====================================================================================
``status``  ``ca_status`` (pure): roots and their roles in a rotation, certificate expiries
``quorum``  ``removal_refusal`` (pure): may this etcd member go without losing quorum?
``api``     ``install(app, api)``: ``GET /v1/ca/status``,
            ``DELETE /v1/cluster/coordinators/{name}`` on the user API
==========  ====================================================================================
"""
