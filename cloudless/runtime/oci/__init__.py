"""OCI plumbing with no containerd in it: image references, the distribution (registry) HTTP
API with its auth flows, manifest/index handling and the OCI runtime-spec builder."""
